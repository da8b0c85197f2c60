//! The `dedup` stage handler: passes a JSON message on unless its `id` was
//! seen within the time to live, so an input written at least once (with
//! retries that repeat messages) becomes an output with each id once.
//!
//! The id (a string or a number) is kept in the stage's state with the
//! setting `ttl_ms` (default 3,600,000: one hour) as its time to live,
//! measured against the messages' timestamps. The stage needs `state:`, and
//! its input keyed by the id, so that every copy of a message lands in the
//! same partition. A message without an id is `invalid-input`.

use stagehost_guest::{
    Guest, HandlerError, Message, Output, Settings, Value, export_handler, setting, state,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// The time to live of a seen id, in ms.
static TTL_MS: AtomicU64 = AtomicU64::new(3_600_000);

/// The state key of a message's id.
pub fn id_key(input: &Value) -> Result<Vec<u8>, HandlerError> {
    match &input["id"] {
        Value::String(id) => Ok(format!("id:{id}").into_bytes()),
        Value::Number(id) => Ok(format!("id:{id}").into_bytes()),
        _ => Err(HandlerError::invalid_input(
            "\"id\" must be a string or a number",
        )),
    }
}

/// Whether the message is the first with its id within the time to live;
/// notes it as seen.
pub fn first_sighting(key: &[u8], ttl_ms: u64) -> bool {
    if state::get(key).is_some() {
        return false;
    }
    state::set_with_ttl(key, b"1", Some(ttl_ms));
    true
}

struct Dedup;

impl Guest for Dedup {
    fn init(settings: Settings) -> Result<(), String> {
        if let Some(ttl) = setting(&settings, "ttl_ms") {
            let ttl: u64 = ttl
                .parse()
                .map_err(|_| format!("ttl_ms `{ttl}` is not a number of milliseconds"))?;
            TTL_MS.store(ttl.max(1), Ordering::Relaxed);
        }
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {
        let key = id_key(&msg.json()?)?;
        if first_sighting(&key, TTL_MS.load(Ordering::Relaxed)) {
            Ok(vec![Output::new(msg.value)])
        } else {
            Ok(Vec::new())
        }
    }
}

export_handler!(Dedup);

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_guest::json;

    #[test]
    fn an_id_passes_once() {
        let key = id_key(&json!({"id": "a-1", "x": 1})).unwrap();
        assert!(first_sighting(&key, 1000));
        assert!(!first_sighting(&key, 1000));
        assert!(first_sighting(&id_key(&json!({"id": 7})).unwrap(), 1000));
    }

    #[test]
    fn a_message_without_an_id_is_invalid() {
        assert!(id_key(&json!({"x": 1})).is_err());
    }
}
