//! Shadow swaps: a new version of a handler runs on a copy of every message
//! the serving version handles; its outputs are never produced, only
//! compared with the serving version's (topic, key, value and the
//! handler's own headers; for a dead letter, its kind). Agreements and
//! differences are counted, and the last differences are kept for
//! `GET /handlers/NAME/shadow`. A shadow of a stateful handler reads the
//! serving state and writes into an overlay that is thrown away.

use super::HandlerComponent;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// How many differences a shadow keeps, newest first.
pub const KEPT_DIFFERENCES: usize = 20;

/// One message on which the shadow and the serving version differed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    /// The input's partition.
    pub partition: i32,
    /// The input's offset.
    pub offset: i64,
    /// What the serving version made: `{"outputs": [...]}` or
    /// `{"dead_letter": {"kind": ...}}`.
    pub serving: serde_json::Value,
    /// What the shadow made, in the same form.
    pub shadow: serde_json::Value,
}

/// A shadow: the version on trial and its comparison so far.
pub struct Shadow {
    component: Arc<HandlerComponent>,
    serving_version: String,
    started_at: SystemTime,
    agreements: AtomicU64,
    differences: AtomicU64,
    recent: Mutex<VecDeque<Difference>>,
}

impl Shadow {
    /// A shadow of `component` beside the version `serving_version`.
    pub fn new(component: Arc<HandlerComponent>, serving_version: String) -> Self {
        Self {
            component,
            serving_version,
            started_at: SystemTime::now(),
            agreements: AtomicU64::new(0),
            differences: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(KEPT_DIFFERENCES)),
        }
    }

    /// The version on trial.
    pub fn component(&self) -> &Arc<HandlerComponent> {
        &self.component
    }

    /// Counts a message on which both versions agreed.
    pub fn agreed(&self) {
        self.agreements.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message on which they differed, and keeps it.
    pub fn differed(&self, difference: Difference) {
        self.differences.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == KEPT_DIFFERENCES {
            recent.pop_back();
        }
        recent.push_front(difference);
    }

    /// The shadow as the API shows it.
    pub fn report(&self) -> ShadowReport {
        ShadowReport {
            version: self.component.version().to_string(),
            serving_version: self.serving_version.clone(),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            agreements: self.agreements.load(Ordering::Relaxed),
            differences: self.differences.load(Ordering::Relaxed),
            recent_differences: self
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
            outcome: None,
        }
    }
}

/// A shadow as `GET /handlers/NAME/shadow` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShadowReport {
    /// The version on trial.
    pub version: String,
    /// The serving version it is compared with.
    pub serving_version: String,
    /// When it started, RFC 3339 UTC.
    pub started_at: String,
    /// Messages on which both made the same.
    pub agreements: u64,
    /// Messages on which they differed.
    pub differences: u64,
    /// The last differences, newest first.
    pub recent_differences: Vec<Difference>,
    /// How it ended, for the last shadow: `promoted` or `discarded`, and why.
    pub outcome: Option<String>,
}
