//! Conveniences on the generated message types and the JSON request/response
//! plumbing behind `json_handler!`.

use crate::{HandlerError, Header, Message, Output, Value};

impl Message {
    /// The value of the first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|header| header.key == name)
            .map(|header| header.value.as_slice())
    }

    /// Parses the message value as one JSON document.
    ///
    /// An empty value (a Kafka null) or invalid JSON is an `invalid-input`
    /// error whose reason says which.
    pub fn json(&self) -> Result<Value, HandlerError> {
        if self.value.is_empty() {
            return Err(HandlerError::invalid_input(
                "message value is empty; expected a JSON document",
            ));
        }
        serde_json::from_slice(&self.value).map_err(|err| {
            HandlerError::invalid_input(format!("message value is not valid JSON: {err}"))
        })
    }
}

impl Header {
    /// A header with the given name and value.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Output {
    /// A record with this value for the stage's output topic, keeping the
    /// input message's key, with no extra headers.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Output {
            value: value.into(),
            key: None,
            headers: Vec::new(),
            topic: None,
        }
    }

    /// Like [`Output::new`], with `value` serialised as compact JSON.
    pub fn json(value: &Value) -> Self {
        Output::new(json_bytes(value, 128))
    }

    /// Sets the record key instead of carrying the input key over.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends the record to `topic` instead of the stage's output topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Appends a header (Kafka allows duplicate names; order is kept).
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
}

/// Runs a JSON function on a message: parses `msg.value` with
/// [`Message::json`], calls `handler`, and returns its result as a single
/// [`Output::json`] record. This is the body of the `handle` that
/// `json_handler!` generates; call it from your own [`Guest`](crate::Guest)
/// implementation to reuse it.
pub fn handle_json<F>(msg: &Message, handler: F) -> Result<Vec<Output>, HandlerError>
where
    F: FnOnce(Value) -> Result<Value, HandlerError>,
{
    let input = msg.json()?;
    let output = handler(input)?;
    // Sized for an output about as long as the input, as a JSON handler's
    // usually is, so that it is written without growing.
    Ok(vec![Output::new(json_bytes(&output, msg.value.len() + 64))])
}

/// `value` as compact JSON, written into a buffer of `capacity` bytes to
/// begin with.
fn json_bytes(value: &Value, capacity: usize) -> Vec<u8> {
    // Straight into bytes: `Display` would go through a formatter, about a
    // fifth of a small handler's time in wasm. A `Value` (string keys only)
    // always serialises; `Display` is the same text if it did not.
    let mut bytes = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => bytes,
        Err(_) => value.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn message(value: &[u8]) -> Message {
        Message {
            topic: "in".into(),
            partition: 0,
            offset: 42,
            key: Some(b"k".to_vec()),
            value: value.to_vec(),
            headers: vec![Header::new("a", "1"), Header::new("a", "2")],
            timestamp: None,
        }
    }

    fn echo(input: Value) -> Result<Value, HandlerError> {
        Ok(json!({ "got": input }))
    }

    #[test]
    fn json_round_trip_gives_one_plain_output() {
        let outputs = handle_json(&message(br#"{"x": 1}"#), echo).unwrap();
        assert_eq!(outputs, vec![Output::new(r#"{"got":{"x":1}}"#)]);
        let out = &outputs[0];
        assert_eq!(out.key, None);
        assert_eq!(out.topic, None);
        assert!(out.headers.is_empty());
    }

    #[test]
    fn bad_json_is_invalid_input() {
        let err = handle_json(&message(b"{not json"), echo).unwrap_err();
        assert!(!err.is_transient());
        assert!(
            err.reason()
                .starts_with("message value is not valid JSON: "),
            "{err:?}"
        );
    }

    #[test]
    fn empty_value_is_invalid_input() {
        let err = handle_json(&message(b""), echo).unwrap_err();
        assert_eq!(
            err,
            HandlerError::invalid_input("message value is empty; expected a JSON document")
        );
    }

    #[test]
    fn non_utf8_is_invalid_input() {
        let err = handle_json(&message(b"\"\xff\""), echo).unwrap_err();
        assert!(matches!(err, HandlerError::InvalidInput(_)), "{err:?}");
    }

    #[test]
    fn handler_errors_pass_through() {
        let err =
            handle_json(&message(b"1"), |_| Err(HandlerError::transient("later"))).unwrap_err();
        assert_eq!(err, HandlerError::transient("later"));
    }

    #[test]
    fn header_lookup_takes_the_first_match() {
        let msg = message(b"");
        assert_eq!(msg.header("a"), Some(&b"1"[..]));
        assert_eq!(msg.header("b"), None);
    }

    #[test]
    fn output_builders_set_fields() {
        let out = Output::new("v")
            .with_key("k")
            .with_topic("other")
            .with_header("h", "1")
            .with_header("h", "2");
        assert_eq!(out.value, b"v");
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.topic.as_deref(), Some("other"));
        assert_eq!(
            out.headers,
            vec![Header::new("h", "1"), Header::new("h", "2")]
        );
    }
}
