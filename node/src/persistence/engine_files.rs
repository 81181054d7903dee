//! Which file of a data dir the storage engine was reading when it failed.
//!
//! fjall and lsm-tree say which file they recover in their debug log, not
//! in their errors, so a damaged table would be reported without its name.
//! The binary installs [`EngineFileLayer`], which keeps the last path those
//! two crates logged; [`last_engine_file`] reads it when an open fails.

use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::layer::{Context, Layer};

static LAST_ENGINE_FILE: Mutex<Option<String>> = Mutex::new(None);

/// The last data dir path fjall or lsm-tree logged, if the layer runs.
pub fn last_engine_file() -> Option<String> {
    LAST_ENGINE_FILE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Keeps the last path the storage engine logged.
pub struct EngineFileLayer;

impl EngineFileLayer {
    /// Only the storage engine's events, debug and above.
    pub fn filter() -> FilterFn {
        filter_fn(|meta| {
            let target = meta.target();
            (target.starts_with("lsm_tree") || target.starts_with("fjall"))
                && *meta.level() <= tracing::Level::DEBUG
        })
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for EngineFileLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let path = message.0.split_whitespace().rev().find(|w| w.starts_with('/') && w.contains("fjall"));
        if let Some(path) = path {
            *LAST_ENGINE_FILE.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(path.trim_end_matches([',', ':', ')']).to_string());
        }
    }
}
