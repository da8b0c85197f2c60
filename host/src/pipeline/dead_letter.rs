//! The headers that mark outputs and dead-letter records.
//!
//! A dead-letter record carries the original key, value and headers
//! unchanged, plus headers saying what happened and where the message came
//! from.

use crate::handlers::ErrorKind;
use crate::kafka::headers::{RecordHeaders, copy_headers};
use rdkafka::message::{Header, OwnedHeaders};

/// Error kind: one of [`ErrorKind`], as [`ErrorKind::as_str`] writes it.
pub const ERROR_KIND: &str = "stagehost-error-kind";
/// Human-readable reason.
pub const ERROR_REASON: &str = "stagehost-error-reason";
/// Topic the message was consumed from.
pub const SOURCE_TOPIC: &str = "stagehost-source-topic";
/// Partition the message was consumed from (decimal).
pub const SOURCE_PARTITION: &str = "stagehost-source-partition";
/// Offset of the message (decimal).
pub const SOURCE_OFFSET: &str = "stagehost-source-offset";
/// Stage that handled the message.
pub const STAGE: &str = "stagehost-stage";
/// Handler that produced the output or failed (absent when routing failed).
pub const HANDLER: &str = "stagehost-handler";
/// Version (content hash) of that handler.
pub const HANDLER_VERSION: &str = "stagehost-handler-version";

/// Why a message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable reason.
    pub reason: String,
    /// The handler name and version, when a handler was chosen.
    pub handler: Option<(String, String)>,
}

/// The longest reason a dead letter carries, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// On a message `host dlq redrive` sent back, and on every output made of
/// it: `TOPIC/PARTITION/OFFSET` of the dead letter it came from.
pub const REDRIVE_OF: &str = "stagehost-redrive-of";
/// On a redriven message: how many times its letter was redriven.
pub const REDRIVE_COUNT: &str = "stagehost-redrive-count";
/// The headers the host puts on a dead letter; a redrive takes them off.
pub const DEAD_LETTER_HEADERS: [&str; 8] = [
    ERROR_KIND,
    ERROR_REASON,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    STAGE,
    HANDLER,
    HANDLER_VERSION,
];

impl DeadLetter {
    /// The reason as one line for people: whitespace runs (newlines
    /// included) become one space, other control characters are dropped,
    /// and a reason longer than [`MAX_REASON_CHARS`] is cut with `…`.
    pub fn reason_line(&self) -> String {
        one_line(&self.reason, MAX_REASON_CHARS)
    }
}

/// `text` as one line of at most `max` characters (see
/// [`DeadLetter::reason_line`]).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 4));
    let mut count = 0;
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        if count >= max {
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Stage name.
    pub stage: &'a str,
    /// Input topic.
    pub topic: &'a str,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
}

/// The original headers followed by the dead-letter headers.
pub fn dead_letter_headers(
    original: Option<&impl RecordHeaders>,
    letter: &DeadLetter,
    source: Source<'_>,
) -> OwnedHeaders {
    let mut headers = copy_headers(original);
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    let reason = letter.reason_line();
    for (key, value) in [
        (ERROR_KIND, letter.kind.as_str()),
        (ERROR_REASON, reason.as_str()),
        (SOURCE_TOPIC, source.topic),
        (SOURCE_PARTITION, partition.as_str()),
        (SOURCE_OFFSET, offset.as_str()),
        (STAGE, source.stage),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    if let Some((name, version)) = &letter.handler {
        headers = headers
            .insert(Header {
                key: HANDLER,
                value: Some(name),
            })
            .insert(Header {
                key: HANDLER_VERSION,
                value: Some(version),
            });
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(one_line("  a\n  b\r\n\tc \u{1b}[0m ", 100), "a b c [0m");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("abc", 3), "abc");
        let long = "x".repeat(5000);
        assert_eq!(
            one_line(&long, MAX_REASON_CHARS).chars().count(),
            MAX_REASON_CHARS + 1
        );
    }
}
