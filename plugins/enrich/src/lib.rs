//! The `enrich` stage handler: stamps a JSON object with where it came from.
//!
//! It adds three fields and keeps every other one:
//!
//! - `source`: `"<topic>/<partition>/<offset>"` of the message as consumed;
//! - `received_at_ms`: the record's timestamp in milliseconds since the Unix
//!   epoch, or `null` when the record has none;
//! - `label`: the handler's `label` setting (default `"tutorial"`).
//!
//! It needs the raw message, not only its JSON value, so it implements
//! [`Guest`] itself rather than using `json_handler!`.

use stagehost_guest::{
    Guest, HandlerError, Message, Output, Settings, Value, export_handler, setting,
};
use std::sync::{Mutex, PoisonError};

/// The label used when the config sets none.
pub const DEFAULT_LABEL: &str = "tutorial";

/// This instance's label, set by `init`.
static LABEL: Mutex<Option<String>> = Mutex::new(None);

/// Reads the settings: `label` is the only one.
pub fn label(settings: &Settings) -> Result<String, String> {
    if let Some((name, _)) = settings.iter().find(|(name, _)| name != "label") {
        return Err(format!("unknown setting `{name}`: enrich takes `label`"));
    }
    Ok(setting(settings, "label")
        .unwrap_or(DEFAULT_LABEL)
        .to_owned())
}

/// The message's JSON object with `source`, `received_at_ms` and `label` set.
pub fn enrich(msg: &Message, label: &str) -> Result<Value, HandlerError> {
    let Value::Object(mut object) = msg.json()? else {
        return Err(HandlerError::invalid_input("expected a JSON object"));
    };
    let source = format!("{}/{}/{}", msg.topic, msg.partition, msg.offset);
    object.insert("source".to_owned(), Value::from(source));
    let received = msg.timestamp.map_or(Value::Null, Value::from);
    object.insert("received_at_ms".to_owned(), received);
    object.insert("label".to_owned(), Value::from(label));
    Ok(Value::Object(object))
}

struct Enrich;

impl Guest for Enrich {
    fn init(settings: Settings) -> Result<(), String> {
        let label = label(&settings)?;
        *LABEL.lock().unwrap_or_else(PoisonError::into_inner) = Some(label);
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {
        let label = LABEL.lock().unwrap_or_else(PoisonError::into_inner);
        let value = enrich(&msg, label.as_deref().unwrap_or(DEFAULT_LABEL))?;
        Ok(vec![Output::json(&value)])
    }
}

export_handler!(Enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_guest::json;

    fn message(value: &str, timestamp: Option<i64>) -> Message {
        Message {
            topic: "graph-parsed".into(),
            partition: 2,
            offset: 41,
            key: None,
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
            timestamp,
        }
    }

    #[test]
    fn adds_source_timestamp_and_label() {
        let msg = message(
            r#"{"operation": "add", "x": 5, "y": 2}"#,
            Some(1_700_000_000_123),
        );
        assert_eq!(
            enrich(&msg, "night-shift").unwrap(),
            json!({
                "operation": "add", "x": 5, "y": 2,
                "source": "graph-parsed/2/41",
                "received_at_ms": 1_700_000_000_123_i64,
                "label": "night-shift",
            })
        );
    }

    #[test]
    fn no_timestamp_is_null() {
        let out = enrich(&message(r#"{"x": 1}"#, None), "tutorial").unwrap();
        assert_eq!(out["received_at_ms"], Value::Null);
    }

    #[test]
    fn existing_fields_are_replaced() {
        let msg = message(r#"{"source": "me", "label": "old"}"#, Some(5));
        let out = enrich(&msg, "new").unwrap();
        assert_eq!(out["source"], json!("graph-parsed/2/41"));
        assert_eq!(out["label"], json!("new"));
    }

    #[test]
    fn bad_values_are_invalid_input() {
        for (value, reason) in [
            ("[1, 2]", "expected a JSON object"),
            ("", "message value is empty; expected a JSON document"),
        ] {
            let err = enrich(&message(value, None), "tutorial").unwrap_err();
            assert_eq!(err, HandlerError::invalid_input(reason));
        }
        let err = enrich(&message("{oops", None), "tutorial").unwrap_err();
        assert!(err.reason().starts_with("message value is not valid JSON"));
    }

    #[test]
    fn label_setting_defaults_and_typos_are_refused() {
        assert_eq!(label(&Vec::new()).unwrap(), "tutorial");
        let settings = vec![("label".to_owned(), "batch-7".to_owned())];
        assert_eq!(label(&settings).unwrap(), "batch-7");
        let settings = vec![("lable".to_owned(), "batch-7".to_owned())];
        assert_eq!(
            label(&settings).unwrap_err(),
            "unknown setting `lable`: enrich takes `label`"
        );
    }
}
