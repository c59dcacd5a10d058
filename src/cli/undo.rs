//! `undo`: asks for an undo and, when the tenant's mode makes it ready at once,
//! executes it.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;

use super::open_store;
use super::runs::print_exec;
use crate::approval::Origin;
use crate::config::Config;
use crate::domain::ActionState;
use crate::service::undo::request_undo;

/// `undo ID --by NAME`: records the undo, executes it when it is ready.
pub(super) async fn undo(config: &Path, id: i64, by: &str) -> Result<i32> {
    let cfg = Config::load(config)?;
    let store = open_store(&cfg, true, false).await?;
    let (undo_id, state) =
        request_undo(&cfg, store.as_ref(), id, by, &Origin::cli(), Utc::now()).await?;
    println!("undo of action {id} recorded as action {undo_id}: {state}");
    if state != ActionState::Ready {
        return Ok(0);
    }
    let a = store
        .action(undo_id)
        .await?
        .context("undo action vanished")?;
    let tenant = cfg.tenant(&a.tenant).context("tenant not configured")?;
    let ex = crate::execute::Executor::new(&cfg, tenant, store.as_ref(), by)?;
    let report = ex.execute(&[undo_id]).await?;
    print_exec(&a.tenant, &report);
    Ok(if report.count(ActionState::Failed) > 0 {
        1
    } else {
        0
    })
}
