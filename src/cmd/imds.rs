//! `hotplug-hook imds get PATH`: one metadata path through the same
//! cached, counted client the worker uses.

use anyhow::Result;

use crate::config::Config;
use crate::error::ExitCode;
use crate::imds::{Client, Fetched};
use crate::log;

pub(crate) fn get(cfg: &Config, path: &str) -> Result<ExitCode> {
    let path = crate::imds::metadata_path(path)?;
    let state = cfg.state();
    let mut client = Client::new(cfg.imds_settings(), Some(state.clone()));
    let result = if path == crate::imds::MACS_PATH {
        client
            .macs()
            .map(|macs| Fetched::Found(macs.iter().map(|m| format!("{m}/\n")).collect::<String>()))
    } else {
        client.get(&path)
    };
    crate::metrics::add_imds(&state, cfg.metrics_file.as_deref(), &client.counters);
    for r in &client.log {
        log::debug(&format!(
            "{} {} {}",
            r.method,
            r.path,
            if r.cached {
                "cached".to_string()
            } else {
                r.status
                    .map_or_else(|| r.error.clone().unwrap_or_default(), |s| s.to_string())
            }
        ));
    }
    match result? {
        Fetched::Found(body) => {
            print!("{body}");
            if !body.ends_with('\n') {
                println!();
            }
            Ok(ExitCode::Ok)
        }
        Fetched::Absent => anyhow::bail!("{}{path}: not found (404)", cfg.imds_endpoint),
    }
}
