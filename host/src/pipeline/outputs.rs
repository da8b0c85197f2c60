//! What a handler's outputs become: records for the producer, checked
//! against the stage's [`OutputRules`] (where its handlers may write) and
//! the handler's limits (how much one message may make) before any record
//! is made.

use super::dead_letter;
use crate::config::{HeaderPropagation, Limits, StagePlan, is_internal_topic};
use crate::handlers::ErrorKind;
use crate::handlers::bindings::{Header as WitHeader, Output};
use crate::kafka::headers::{RawHeader, raw_headers};
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
    /// Which input headers the outputs carry.
    pub(crate) propagate_headers: HeaderPropagation,
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
            propagate_headers: stage.propagate_headers.clone(),
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

/// What librdkafka counts of one header against `message.max.bytes`, at
/// most: its key and value with their length prefixes.
fn header_size(key: &[u8], value: &[u8]) -> u64 {
    const HEADER_OVERHEAD: u64 = 10;
    HEADER_OVERHEAD + key.len() as u64 + value.len() as u64
}

/// What librdkafka counts of a record against `message.max.bytes`, at most:
/// its key, value, headers and the input headers it inherits, plus the
/// record overhead.
fn record_size(
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[WitHeader],
    inherited: &[RawHeader<'_>],
) -> u64 {
    const RECORD_OVERHEAD: u64 = 64;
    let headers: u64 = headers
        .iter()
        .map(|h| header_size(h.key.as_bytes(), &h.value))
        .chain(
            inherited
                .iter()
                .map(|h| header_size(h.key, h.value.unwrap_or_default())),
        )
        .sum();
    RECORD_OVERHEAD + key.map_or(0, <[u8]>::len) as u64 + value.len() as u64 + headers
}

/// The input headers an output carries: those the stage passes on (and
/// always `stagehost-redrive-of`, so a result can be traced to the dead
/// letter it came from), in order, less the ones the host sets and those
/// the output sets itself. Keys are read as bytes ([`raw_headers`]): any
/// producer may send one that is not UTF-8, and it is passed on as
/// [`crate::kafka::headers::copy_headers`] copies it.
fn inherited_headers<'a>(
    input_headers: Option<&'a OwnedHeaders>,
    rules: &OutputRules,
    output: &Output,
) -> Vec<RawHeader<'a>> {
    let Some(input_headers) = input_headers else {
        return Vec::new();
    };
    raw_headers(input_headers)
        .into_iter()
        .filter(|header| {
            let key = header.key_text();
            (rules.propagate_headers.passes(&key) || key == dead_letter::REDRIVE_OF)
                && !HOST_OUTPUT_HEADERS.contains(&&*key)
                && !output.headers.iter().any(|own| own.key == key)
        })
        .collect()
}

/// The records a handler's outputs become: to the stage's output, or to the
/// output's topic (a branch name is replaced by its topic), keyed by the
/// output's key or the input's, carrying the input's headers as the stage's
/// `propagate_headers` says, then the output's own, then the handler and
/// version headers (a header the output sets replaces the input's of that
/// name; the host's replace both). The handler's limits and the stage's
/// rules are checked for all outputs before any record is made: one refused
/// output refuses them all.
pub(crate) fn output_records(
    outputs: Vec<Output>,
    rules: &OutputRules,
    limits: &Limits,
    input_key: Option<&[u8]>,
    input_headers: Option<&OwnedHeaders>,
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
    let mut inherited = Vec::with_capacity(outputs.len());
    for (index, output) in outputs.iter().enumerate() {
        topics.push(rules.topic(output.topic.clone())?);
        let key = output.key.as_deref().or(input_key);
        inherited.push(inherited_headers(input_headers, rules, output));
        let size = record_size(key, &output.value, &output.headers, &inherited[index]);
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
        .zip(inherited)
        .map(|((output, topic), inherited)| {
            let mut headers =
                OwnedHeaders::new_with_capacity(inherited.len() + output.headers.len() + 2);
            for header in inherited {
                headers = headers.insert(Header {
                    key: &header.key_text(),
                    value: header.value,
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(propagate_headers: HeaderPropagation) -> OutputRules {
        OutputRules {
            default_topic: "out".to_string(),
            branches: BTreeMap::new(),
            writable: ["out".to_string()].into_iter().collect(),
            max_record_bytes: 1 << 20,
            propagate_headers,
        }
    }

    fn output(headers: &[(&str, &str)]) -> Output {
        Output {
            value: b"{}".to_vec(),
            key: None,
            headers: headers
                .iter()
                .map(|(key, value)| WitHeader {
                    key: key.to_string(),
                    value: value.as_bytes().to_vec(),
                })
                .collect(),
            topic: None,
        }
    }

    /// The record's headers, in order.
    fn headers_of(propagate: HeaderPropagation, own: &[(&str, &str)]) -> Vec<(String, String)> {
        let input = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc-01"),
            })
            .insert(Header {
                key: "correlation-id",
                value: Some("input"),
            })
            .insert(Header {
                key: dead_letter::HANDLER,
                value: Some("upstream"),
            });
        header_pairs(&records_of(&rules(propagate), &input, own).unwrap()[0])
    }

    /// The records of one output with headers `own`, for an input with
    /// headers `input`, made by handler `add` version `v1`.
    fn records_of(
        rules: &OutputRules,
        input: &OwnedHeaders,
        own: &[(&str, &str)],
    ) -> Result<Vec<Record>, OutputError> {
        output_records(
            vec![output(own)],
            rules,
            &Limits::default(),
            None,
            Some(input),
            "add",
            "v1",
        )
    }

    /// A record's headers as text, in order.
    fn header_pairs(record: &Record) -> Vec<(String, String)> {
        raw_headers(&record.headers)
            .iter()
            .map(|header| {
                let value = String::from_utf8(header.value.unwrap().to_vec()).unwrap();
                (header.key_text().into_owned(), value)
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn outputs_carry_the_input_headers_under_their_own_and_the_hosts() {
        assert_eq!(
            headers_of(HeaderPropagation::All, &[("correlation-id", "handler")]),
            pairs(&[
                ("traceparent", "00-abc-01"),
                ("correlation-id", "handler"),
                (dead_letter::HANDLER, "add"),
                (dead_letter::HANDLER_VERSION, "v1"),
            ])
        );
        assert_eq!(
            headers_of(HeaderPropagation::None, &[]),
            pairs(&[
                (dead_letter::HANDLER, "add"),
                (dead_letter::HANDLER_VERSION, "v1")
            ])
        );
        let only = HeaderPropagation::Only(["correlation-id".to_string()].into_iter().collect());
        assert_eq!(
            headers_of(only, &[]),
            pairs(&[
                ("correlation-id", "input"),
                (dead_letter::HANDLER, "add"),
                (dead_letter::HANDLER_VERSION, "v1"),
            ])
        );
    }

    #[test]
    fn inherited_headers_count_against_the_record_size() {
        let big = "x".repeat(2000);
        let input = OwnedHeaders::new().insert(Header {
            key: "blob",
            value: Some(big.as_str()),
        });
        let mut rules = rules(HeaderPropagation::All);
        rules.max_record_bytes = 1000;
        let refused = records_of(&rules, &input, &[]);
        assert!(matches!(refused, Err(OutputError::Invalid(_))));
        rules.propagate_headers = HeaderPropagation::None;
        let passed = records_of(&rules, &input, &[]);
        assert!(passed.is_ok());
    }

    #[test]
    fn an_input_header_key_that_is_not_utf8_is_passed_on_not_a_panic() {
        let input = OwnedHeaders::new();
        crate::kafka::headers::add_raw_header(&input, b"trace\xffid", Some(b"t-1"));
        let records = records_of(&rules(HeaderPropagation::All), &input, &[]).unwrap();
        assert_eq!(
            header_pairs(&records[0]),
            pairs(&[
                ("trace\u{fffd}id", "t-1"),
                (dead_letter::HANDLER, "add"),
                (dead_letter::HANDLER_VERSION, "v1"),
            ])
        );
    }
}
