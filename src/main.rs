//! The `entra-remediator` binary: parse arguments, set up logging, hand over to the library.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;

use clap::Parser;
use entra_remediator::cli::{Cli, init_logging, run};
use entra_remediator::text::printable;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Bad arguments exit 1 like every other error (2 means "scan refused");
        // --help and --version print to stdout and exit 0.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    init_logging(&cli);
    match run(cli).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // Errors may quote scan or rule text: keep control characters off the terminal.
            let text = format!("{e:#}");
            let lines: Vec<_> = text.lines().map(printable).collect();
            eprintln!("error: {}", lines.join("\n"));
            ExitCode::from(1)
        }
    }
}
