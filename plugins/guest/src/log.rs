//! Logging through the host (the world's `log` import).
//!
//! The host tags every line with the handler's name and writes it to its own
//! log at the given level:
//!
//! ```
//! # let reason = "no key";
//! stagehost_guest::log::info("starting");
//! stagehost_guest::log::warn(&format!("skipping record: {reason}"));
//! ```
//!
//! Outside WebAssembly (native unit tests) there is no host, so lines go to
//! stderr instead.

/// Severity of a log line: `Trace`, `Debug`, `Info`, `Warn` or `Error`.
pub use crate::bindings::stagehost::handler::log::Level;

/// Writes one log line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::stagehost::handler::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{}] {message}", level_name(level));
}

#[cfg(not(target_arch = "wasm32"))]
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// Writes one log line at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes one log line at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes one log line at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes one log line at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes one log line at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_logging_does_not_need_a_host() {
        trace("t");
        debug("d");
        info("i");
        warn("w");
        error("e");
        log(Level::Info, "direct");
    }
}
