//! The headers that mark outputs and dead-letter records.
//!
//! A dead-letter record carries the original key, value and headers unchanged,
//! plus headers saying what happened and where the message came from.

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Error kind: `invalid-json`, `missing-route`, `unknown-route`,
/// `invalid-input`, `transient`, `trap`, `timeout`, `memory-limit`,
/// `fuel-exhausted`, `instantiate-failed`, `invalid-output`, `produce-failed`.
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
    /// Machine-readable kind (see [`ERROR_KIND`]).
    pub kind: &'static str,
    /// Human-readable reason.
    pub reason: String,
    /// The handler name and version, when a handler was chosen.
    pub handler: Option<(String, String)>,
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
    original: Option<&impl Headers>,
    letter: &DeadLetter,
    source: Source<'_>,
) -> OwnedHeaders {
    let mut headers = copy_headers(original);
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    for (key, value) in [
        (ERROR_KIND, letter.kind),
        (ERROR_REASON, letter.reason.as_str()),
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

/// A copy of a message's headers, keeping order and duplicates.
pub fn copy_headers(original: Option<&impl Headers>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = original {
        for header in original.iter() {
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    headers
}
