//! UTF-8 text -> `Config::parse`: never panics. When a config is accepted, the
//! cron schedules it names must also be usable the way the daemon uses them
//! (parse, then find the next occurrence) without panicking or hanging.
#![no_main]

use std::path::Path;

use chrono::{TimeZone, Utc};
use entra_remediator::config::{self, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("/etc/entra-remediator/config.toml")) {
        Ok(cfg) => {
            let _ = cfg.exceptions_path();
            let mut schedules = vec![cfg.daemon.schedule.clone()];
            for t in &cfg.tenants {
                assert!(cfg.tenant(&t.name).is_some());
                assert!(entra_remediator::text::is_guid(&t.tenant_id));
                schedules.extend(t.schedule.clone());
                if let Some(g) = &t.graph {
                    let _ = (g.authority(), g.graph_url());
                }
            }
            let from = Utc
                .with_ymd_and_hms(2026, 11, 20, 6, 0, 0)
                .single()
                .expect("a valid time");
            for s in schedules {
                let cron = config::parse_schedule(&s).expect("validated schedule must parse");
                // The daemon's catch-up check does exactly this at start.
                let _ = cron.find_next_occurrence(&from, false);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
