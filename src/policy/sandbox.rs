//! The Rhai engine rules run in: no files, network, modules or `eval`; limits on
//! operations, depth, sizes and wall-clock time.

use std::cell::Cell;
use std::time::{Duration, Instant};

use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage, CorePackage,
    LogicPackage, MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, OptimizationLevel};

use crate::config::RuleLimits;

thread_local! {
    /// The deadline of the evaluation running on this thread, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Marker value returned by `on_progress` when the deadline passes.
pub(crate) const TIMEOUT_TOKEN: &str = "entra-remediator: wall-clock limit";

/// Runs `f` with a wall-clock deadline enforced by the engine's progress callback.
pub(crate) fn with_deadline<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    DEADLINE.with(|d| d.set(Some(Instant::now() + limit)));
    let out = f();
    DEADLINE.with(|d| d.set(None));
    out
}

/// Stack of a rule thread before any rule function is called (the engine, the
/// evaluation loop and the deepest expression Rhai accepts).
const BASE_STACK: usize = 8 * 1024 * 1024;
/// Stack per nested rule function call: an unoptimised build was measured at up
/// to about 120 KiB per level (a call inside ten nested expressions); twice that.
const STACK_PER_CALL: usize = 256 * 1024;

/// The stack a rule thread needs for `max_call_depth` nested calls.
pub(crate) fn stack_size(max_call_depth: usize) -> usize {
    BASE_STACK.saturating_add(max_call_depth.saturating_mul(STACK_PER_CALL))
}

/// Runs `f` on a thread with a stack of `stack` bytes and waits for it: rules
/// never run on a runtime thread, whose stack (2 MiB) a deep recursion overflows.
pub(crate) fn on_rule_thread<T: Send>(
    stack: usize,
    f: impl FnOnce() -> T + Send,
) -> Result<T, String> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("rules".into())
            .stack_size(stack)
            .spawn_scoped(s, f)
            .map_err(|e| format!("cannot start a rule thread ({stack} bytes of stack): {e}"))?;
        handle
            .join()
            .map_err(|_| "the rule thread stopped unexpectedly".to_string())
    })
}

/// Builds the sandboxed engine; helpers are registered by `api::register`.
pub(crate) fn engine(limits: &RuleLimits) -> Engine {
    // new_raw: no file module resolver, no stdout printing.
    let mut engine = Engine::new_raw();
    engine.register_global_module(CorePackage::new().as_shared_module());
    engine.register_global_module(LogicPackage::new().as_shared_module());
    engine.register_global_module(BitFieldPackage::new().as_shared_module());
    engine.register_global_module(BasicMathPackage::new().as_shared_module());
    engine.register_global_module(BasicArrayPackage::new().as_shared_module());
    engine.register_global_module(BasicMapPackage::new().as_shared_module());
    engine.register_global_module(MoreStringPackage::new().as_shared_module());
    // The core package's `sleep` blocks the thread without counting operations,
    // which would defeat the wall-clock limit: shadow it with an error.
    engine.register_fn("sleep", |_: rhai::INT| -> Result<(), Box<EvalAltResult>> {
        Err("sleep is not available in rules".into())
    });
    engine.register_fn(
        "sleep",
        |_: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> {
            Err("sleep is not available in rules".into())
        },
    );
    engine.disable_symbol("eval");
    engine.on_print(|s| tracing::info!(target: "rules", "{s}"));
    engine.on_debug(
        |s, src, pos| tracing::debug!(target: "rules", source = src, position = %pos, "{s}"),
    );
    engine.set_optimization_level(OptimizationLevel::Simple);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_variables(1_000);
    engine.set_max_functions(256);
    engine.set_strict_variables(true);
    engine.on_progress(|ops| {
        if ops % 512 != 0 {
            return None;
        }
        let expired = DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() >= t));
        expired.then(|| Dynamic::from(TIMEOUT_TOKEN))
    });
    engine
}
