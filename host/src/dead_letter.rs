//! The headers that mark outputs and dead-letter records.
//!
//! A dead-letter record carries the original key, value and headers unchanged,
//! plus headers saying what happened and where the message came from. Kafka
//! does not check that a header key is UTF-8, so headers are read as bytes
//! ([`raw_headers`]); a key that is not UTF-8 is copied with each invalid
//! sequence replaced by U+FFFD, as Kafka's Java client reads it.

use rdkafka::bindings::{rd_kafka_header_get_all, rd_kafka_headers_t, rd_kafka_resp_err_t};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use std::borrow::Cow;
use std::ffi::CStr;

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

/// The longest reason a dead letter carries, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

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
        (ERROR_KIND, letter.kind),
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

/// A copy of a message's headers, keeping order and duplicates.
pub fn copy_headers(original: Option<&impl RecordHeaders>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for header in original.map(raw_headers).unwrap_or_default() {
        headers = headers.insert(Header {
            key: &header.key_text(),
            value: header.value,
        });
    }
    headers
}

/// A record's header list, as consumed ([`BorrowedHeaders`]) or detached
/// ([`OwnedHeaders`]).
pub trait RecordHeaders {
    /// The list, borrowed.
    fn borrowed(&self) -> &BorrowedHeaders;
}

impl RecordHeaders for BorrowedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self
    }
}

impl RecordHeaders for OwnedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// One header of a record, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader<'a> {
    /// The key's bytes, up to the first NUL byte (librdkafka hands keys
    /// over as C strings). Not necessarily UTF-8.
    pub key: &'a [u8],
    /// The value; `None` for a null value.
    pub value: Option<&'a [u8]>,
}

impl<'a> RawHeader<'a> {
    /// The key as text, each invalid UTF-8 sequence replaced by U+FFFD;
    /// borrowed from the record when the key is valid UTF-8.
    pub fn key_text(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.key)
    }
}

/// Every header of a record, in order, duplicates kept.
///
/// rdkafka's `Headers::iter` and `Headers::get` panic on a key that is not
/// UTF-8, and any producer can send one; this reads every key as bytes.
pub fn raw_headers(headers: &impl RecordHeaders) -> Vec<RawHeader<'_>> {
    let borrowed = headers.borrowed();
    // A `&BorrowedHeaders` is the address of librdkafka's header list: that
    // is how rdkafka itself hands the list out (`OwnedHeaders::as_borrowed`)
    // and reads it back (`Headers::count` for `BorrowedHeaders`).
    let list: *const rd_kafka_headers_t = (borrowed as *const BorrowedHeaders).cast();
    (0..borrowed.count())
        .map_while(|index| {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            // SAFETY: `list` is a live header list for as long as `headers`
            // is borrowed, and librdkafka only reads it and writes the three
            // out-parameters.
            let status =
                unsafe { rd_kafka_header_get_all(list, index, &mut name, &mut value, &mut size) };
            if status != rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: on success librdkafka points `name` at the header's
            // NUL-terminated name and `value` at `size` bytes (or null for a
            // null value), both owned by the list and unchanged while it is
            // borrowed.
            let key = unsafe { CStr::from_ptr(name) }.to_bytes();
            let value = (!value.is_null())
                .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
            Some(RawHeader { key, value })
        })
        .collect()
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

    #[test]
    fn raw_headers_read_what_rdkafka_reads() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "a",
                value: Some("1"),
            })
            .insert(Header::<&[u8]> {
                key: "b",
                value: None,
            })
            .insert(Header {
                key: "a",
                value: Some(""),
            });
        let raw = raw_headers(&headers);
        let expected: Vec<RawHeader<'_>> = headers
            .iter()
            .map(|header| RawHeader {
                key: header.key.as_bytes(),
                value: header.value,
            })
            .collect();
        assert_eq!(raw, expected);
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[1].value, None);
        assert_eq!(raw_headers(&OwnedHeaders::new()), Vec::new());
    }
}
