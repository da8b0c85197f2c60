//! What a handler's outputs become: records for the producer, checked
//! against the stage's [`OutputRules`] (where its handlers may write) and
//! the handler's limits (how much one message may make) before any record
//! is made.

use super::dead_letter;
use crate::config::{Limits, StagePlan, is_internal_topic};
use crate::handlers::ErrorKind;
use crate::handlers::bindings::{Header as WitHeader, Output};
use rdkafka::message::{Header, OwnedHeaders};
use std::collections::{BTreeMap, BTreeSet};

/// A record to produce.
pub(crate) struct Record {
    pub(crate) topic: String,
    /// The partition, when the record must go to one (a changelog record
    /// goes to its input's); `None` lets the partitioner choose.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: OwnedHeaders,
}

/// Where a stage's handlers may write, and how much one message may make.
#[derive(Debug, Clone)]
pub(crate) struct OutputRules {
    /// The stage's `output`: where an output without a topic goes.
    pub(crate) default_topic: String,
    /// Branch name -> topic.
    pub(crate) branches: BTreeMap<String, String>,
    /// Every topic a handler may name: the output, the branches' topics and
    /// the stage's `allowed_topics`.
    pub(crate) writable: BTreeSet<String>,
    /// The producer's `message.max.bytes`: a larger record is refused here
    /// rather than sent to fail.
    pub(crate) max_record_bytes: u64,
}

impl OutputRules {
    /// The rules of `stage`, for a producer whose `message.max.bytes` is
    /// `max_record_bytes`.
    pub(crate) fn of(stage: &StagePlan, max_record_bytes: u64) -> Self {
        let mut writable: BTreeSet<String> = stage.allowed_topics.clone();
        writable.insert(stage.output.clone());
        writable.extend(stage.branches.values().cloned());
        Self {
            default_topic: stage.output.clone(),
            branches: stage.branches.clone(),
            writable,
            max_record_bytes,
        }
    }

    /// The topic an output goes to, or why it may not go anywhere.
    fn topic(&self, named: Option<String>) -> Result<String, OutputError> {
        let Some(named) = named else {
            return Ok(self.default_topic.clone());
        };
        if let Some(branch) = self.branches.get(&named) {
            return Ok(branch.clone());
        }
        if is_internal_topic(&named) {
            return Err(OutputError::ForbiddenTopic(format!(
                "the handler named the internal Kafka topic `{}`",
                printable_name(&named)
            )));
        }
        if self.writable.contains(&named) {
            return Ok(named);
        }
        Err(OutputError::ForbiddenTopic(format!(
            "the handler named topic `{}`, which this stage may not write to (it may write to: {}; \
             list more in the stage's `allowed_topics`)",
            printable_name(&named),
            self.writable.iter().cloned().collect::<Vec<_>>().join(", ")
        )))
    }
}

/// A topic name a handler chose, cut and made printable for a reason.
fn printable_name(name: &str) -> String {
    let mut shown: String = name
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().count() > 100 {
        shown.push('…');
    }
    shown
}

/// Why a handler's outputs were refused; the whole message is dead-lettered
/// and none of its outputs is produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OutputError {
    /// An output named a topic the stage may not write to.
    #[error("{0}")]
    ForbiddenTopic(String),
    /// Too many outputs, too many bytes, or a record too large for Kafka.
    #[error("{0}")]
    Invalid(String),
}

impl OutputError {
    /// The dead-letter kind.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            OutputError::ForbiddenTopic(_) => ErrorKind::ForbiddenTopic,
            OutputError::Invalid(_) => ErrorKind::InvalidOutput,
        }
    }
}

/// Headers the host sets on every output; a handler's own of these names
/// are replaced.
const HOST_OUTPUT_HEADERS: [&str; 2] = [dead_letter::HANDLER, dead_letter::HANDLER_VERSION];

/// What librdkafka counts of a record against `message.max.bytes`, at most:
/// its key, value and headers with their length prefixes, plus the record
/// overhead.
fn record_size(key: Option<&[u8]>, value: &[u8], headers: &[WitHeader]) -> u64 {
    const RECORD_OVERHEAD: u64 = 64;
    const HEADER_OVERHEAD: u64 = 10;
    let headers: u64 = headers
        .iter()
        .map(|h| HEADER_OVERHEAD + h.key.len() as u64 + h.value.len() as u64)
        .sum();
    RECORD_OVERHEAD + key.map_or(0, <[u8]>::len) as u64 + value.len() as u64 + headers
}

/// The records a handler's outputs become: to the stage's output, or to the
/// output's topic (a branch name is replaced by its topic), keyed by the
/// output's key or the input's, with the handler and version headers
/// added. The handler's limits and the stage's rules are checked for all
/// outputs before any record is made: one refused output refuses them all.
pub(crate) fn output_records(
    outputs: Vec<Output>,
    rules: &OutputRules,
    limits: &Limits,
    input_key: Option<&[u8]>,
    handler: &str,
    version: &str,
) -> Result<Vec<Record>, OutputError> {
    if outputs.len() as u64 > u64::from(limits.max_outputs) {
        return Err(OutputError::Invalid(format!(
            "the handler returned {} outputs for one message, more than its limits.max_outputs ({})",
            outputs.len(),
            limits.max_outputs
        )));
    }
    let mut total: u64 = 0;
    let mut topics = Vec::with_capacity(outputs.len());
    for (index, output) in outputs.iter().enumerate() {
        topics.push(rules.topic(output.topic.clone())?);
        let key = output.key.as_deref().or(input_key);
        let size = record_size(key, &output.value, &output.headers);
        if size > rules.max_record_bytes {
            return Err(OutputError::Invalid(format!(
                "output {} is about {size} bytes, more than the producer's message.max.bytes ({})",
                index + 1,
                rules.max_record_bytes
            )));
        }
        total += size;
        if total > limits.max_output_bytes {
            return Err(OutputError::Invalid(format!(
                "the handler's outputs for one message add up to more than its limits.max_output_bytes ({} bytes)",
                limits.max_output_bytes
            )));
        }
    }
    Ok(outputs
        .into_iter()
        .zip(topics)
        .map(|(output, topic)| {
            let mut headers = OwnedHeaders::new_with_capacity(output.headers.len() + 2);
            for header in &output.headers {
                if HOST_OUTPUT_HEADERS.contains(&header.key.as_str()) {
                    continue;
                }
                headers = headers.insert(Header {
                    key: &header.key,
                    value: Some(&header.value),
                });
            }
            headers = headers
                .insert(Header {
                    key: dead_letter::HANDLER,
                    value: Some(handler),
                })
                .insert(Header {
                    key: dead_letter::HANDLER_VERSION,
                    value: Some(version),
                });
            Record {
                topic,
                partition: None,
                key: output.key.or_else(|| input_key.map(<[u8]>::to_vec)),
                value: Some(output.value),
                headers,
            }
        })
        .collect())
}
