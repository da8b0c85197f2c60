//! Reading and copying record headers. Kafka does not check that a header
//! key is UTF-8, and rdkafka's `Headers::iter` and `Headers::get` panic on
//! one that is not, so headers are read as bytes ([`raw_headers`]); a key
//! that is not UTF-8 is copied with each invalid sequence replaced by
//! U+FFFD, as Kafka's Java client reads it.

use rdkafka::bindings::{rd_kafka_header_get_all, rd_kafka_headers_t, rd_kafka_resp_err_t};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use std::borrow::Cow;
use std::ffi::CStr;

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

/// Bytes as JSON: the text when they are UTF-8, else `{"base64": "..."}`.
pub fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::from(text),
        Err(_) => serde_json::json!({ "base64": base64(bytes) }),
    }
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Adds a header whose key is any bytes, as a consumed record may carry
/// (Kafka does not check that header keys are UTF-8; `OwnedHeaders::insert`
/// only takes text).
#[cfg(test)]
pub(crate) fn add_raw_header(headers: &OwnedHeaders, key: &[u8], value: Option<&[u8]>) {
    let list = (headers.as_borrowed() as *const BorrowedHeaders)
        .cast_mut()
        .cast::<rd_kafka_headers_t>();
    let (value, size) = match value {
        Some(value) => (value.as_ptr().cast(), value.len() as isize),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: a `&BorrowedHeaders` is the address of the list librdkafka
    // allocated for `headers`, which nothing else uses while this runs;
    // librdkafka copies the key and value.
    let status = unsafe {
        rdkafka::bindings::rd_kafka_header_add(
            list,
            key.as_ptr().cast(),
            key.len() as isize,
            value,
            size,
        )
    };
    assert_eq!(status, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
}

#[cfg(test)]
mod tests {
    use super::*;

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
