//! What the admin API and the reloader share: a handler's version as the
//! API shows it ([`HandlerInfo`]), why a swap did not happen
//! ([`SwapError`]), and what the API asks of the host ([`HandlerControl`]).

use crate::handlers::canary::{CanaryReport, CanaryRules};
use crate::handlers::sandbox::RecentLine;
use crate::handlers::shadow::ShadowReport;
use std::time::SystemTime;

/// Why a swap did not happen. The admin API answers 404, 422 and 409.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    /// No handler of that name is configured.
    #[error("unknown handler `{0}`")]
    UnknownHandler(String),
    /// The candidate failed validation; the old version keeps serving.
    #[error("{0}")]
    Rejected(String),
    /// There is no earlier version to go back to.
    #[error("handler `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    /// The handler cannot be removed: these stages route to it.
    #[error("handler `{0}` is in use by stage(s) {1}; change their routes first")]
    InUse(String, String),
    /// The request asks for something that cannot be (a percent out of
    /// range, say). The admin API answers 400.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with what runs now (a second canary, say). The
    /// admin API answers 409.
    #[error("{0}")]
    Conflict(String),
    /// What was asked for does not exist (a handler that never had a
    /// shadow, say). The admin API answers 404.
    #[error("{0}")]
    NotFound(String),
}

/// What the admin server needs from the host to manage handlers.
///
/// Implemented by the host's reloader. Uploads and rollbacks run on tokio's
/// blocking pool, so they may compile; the other methods are called on the
/// async runtime and must return quickly. The implementation records its
/// swaps ([`Metrics::handler_swapped`], [`Metrics::set_handler_version`]);
/// the server does not.
pub trait HandlerControl: Send + Sync + 'static {
    /// Every handler's current version.
    fn handlers(&self) -> Vec<HandlerInfo>;
    /// Validates the component off the hot path and swaps it in; Err =
    /// rejected, old version keeps serving.
    fn upload(&self, handler: &str, bytes: Vec<u8>) -> Result<HandlerInfo, SwapError>;
    /// Brings back the version the current one replaced, one step further
    /// back at each call.
    fn rollback(&self, handler: &str) -> Result<HandlerInfo, SwapError>;
    /// Serves a kept version (the serving one for `None`) and pins it.
    fn pin(&self, handler: &str, version: Option<&str>) -> Result<HandlerInfo, SwapError> {
        let _ = version;
        Err(SwapError::Rejected(format!(
            "handler `{handler}`: pinning is not available here"
        )))
    }
    /// Validates a component off the hot path and starts it as a canary on
    /// `percent` of the handler's keys, judged by `rules`.
    fn canary(
        &self,
        handler: &str,
        bytes: Vec<u8>,
        percent: i64,
        rules: CanaryRules,
    ) -> Result<HandlerInfo, SwapError> {
        let _ = (bytes, percent, rules);
        Err(SwapError::Rejected(format!(
            "handler `{handler}`: canaries are not available here"
        )))
    }
    /// Makes the running canary or shadow the serving version.
    fn promote(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
        Err(SwapError::Rejected(format!(
            "handler `{handler}`: canaries are not available here"
        )))
    }
    /// Validates a component off the hot path and starts it as a shadow.
    fn shadow(&self, handler: &str, bytes: Vec<u8>) -> Result<HandlerInfo, SwapError> {
        let _ = bytes;
        Err(SwapError::Rejected(format!(
            "handler `{handler}`: shadows are not available here"
        )))
    }
    /// The running shadow's comparison (or the last shadow's).
    fn shadow_report(&self, handler: &str) -> Result<ShadowReport, SwapError> {
        Err(SwapError::UnknownHandler(handler.to_string()))
    }
    /// Ends the running shadow; the serving version goes on alone.
    fn discard_shadow(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
        Err(SwapError::UnknownHandler(handler.to_string()))
    }
    /// Takes a handler no route uses out of service.
    fn delete(&self, handler: &str) -> Result<(), SwapError> {
        Err(SwapError::Rejected(format!(
            "handler `{handler}`: removing is not available here"
        )))
    }
    /// The handler's recent guest output after line `after`.
    fn logs(&self, handler: &str, after: u64) -> Result<Vec<RecentLine>, SwapError> {
        let _ = after;
        Err(SwapError::UnknownHandler(handler.to_string()))
    }
    /// The canaries and shadows running now, by handler (from memory: this
    /// is read on every `/metrics` scrape).
    fn trials(&self) -> Vec<HandlerTrials> {
        Vec::new()
    }
    /// Where each stage's input stands.
    fn topics(&self) -> Result<Vec<TopicInfo>, String> {
        Err("not available".into())
    }
    /// The config in force, for the console's graph (`GET /graph`).
    fn config_in_force(&self) -> Option<crate::config::LoadedConfig> {
        None
    }
    /// Whether the host is healthy (all stages running).
    fn healthy(&self) -> bool;
}

/// One handler's current version, as the handler API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct HandlerInfo {
    /// Handler name from the config.
    pub name: String,
    /// Content hash of the component.
    pub version: String,
    /// Where the component came from (a file path, or an upload).
    pub source: String,
    /// When this version was loaded, RFC 3339 UTC (see [`rfc3339`]).
    pub loaded_at: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// The version a rollback would go back to, if any.
    pub previous_version: Option<String>,
    /// The version an operator chose, which re-reads and restarts keep.
    #[serde(default)]
    pub pinned: Option<String>,
    /// The version the handler's file holds, as last read.
    #[serde(default)]
    pub file_version: Option<String>,
    /// Every time a version started serving: `version`, `source`, `at`, `how`.
    #[serde(default)]
    pub history: Vec<serde_json::Value>,
    /// The canary running now, with both versions' counts.
    #[serde(default)]
    pub canary: Option<CanaryReport>,
    /// The last canary that ended, with its counts and how it ended.
    #[serde(default)]
    pub last_canary: Option<CanaryReport>,
    /// The shadow running now: its agreements and differences (the
    /// differences themselves are at `GET /handlers/NAME/shadow`).
    #[serde(default)]
    pub shadow: Option<ShadowReport>,
}

/// A handler's running canary and shadow, for the trial metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerTrials {
    /// The handler.
    pub name: String,
    /// Its running canary.
    pub canary: Option<CanaryReport>,
    /// Its running shadow.
    pub shadow: Option<ShadowReport>,
}

/// One partition of a stage's input, for `GET /topics`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TopicInfo {
    /// The stage.
    pub stage: String,
    /// Its input topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset still in the partition.
    pub low: i64,
    /// The offset the next record will get.
    pub high: i64,
    /// The stage's committed offset, if it has one.
    pub committed: Option<i64>,
    /// Records the stage has not committed yet.
    pub lag: i64,
}

/// `t` in RFC 3339, UTC, to the second: `2024-05-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
