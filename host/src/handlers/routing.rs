//! Chooses the handler for a message by the stage's [`Routing`]: its only
//! handler, or the one named by a field of the JSON message (`operation` by
//! default). A top-level field is found without parsing the rest of the
//! document into values.

use super::failure::ErrorKind;
use crate::config::Routing;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Why no handler could be chosen. Each case is a dead-letter kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The value is not JSON.
    #[error("message value is not valid JSON: {0}")]
    InvalidJson(String),
    /// The routing field is absent (or the value is not a JSON object).
    #[error("{0}")]
    MissingField(String),
    /// The routing field holds no known value.
    #[error("{0}")]
    UnknownValue(String),
}

impl RouteError {
    /// The dead-letter kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RouteError::InvalidJson(_) => ErrorKind::InvalidJson,
            RouteError::MissingField(_) => ErrorKind::MissingRoute,
            RouteError::UnknownValue(_) => ErrorKind::UnknownRoute,
        }
    }
}

impl Routing {
    /// The handler for a message value.
    pub fn resolve(&self, value: &[u8]) -> Result<&str, RouteError> {
        let (field, to) = match self {
            Routing::Single(handler) => return Ok(handler),
            Routing::ByField { field, to } => (field, to),
        };
        let found = if field.starts_with('/') {
            let document: Value = serde_json::from_slice(value)
                .map_err(|err| RouteError::InvalidJson(err.to_string()))?;
            document.pointer(field).cloned().map(Some).ok_or_else(|| {
                RouteError::MissingField(format!("message has no `{field}` field"))
            })?
        } else {
            let mut deserializer = serde_json::Deserializer::from_slice(value);
            let found = FieldProbe { field }
                .deserialize(&mut deserializer)
                .and_then(|found| deserializer.end().map(|()| found))
                .map_err(|err| RouteError::InvalidJson(err.to_string()))?;
            match found {
                Probe::NotObject(what) => {
                    return Err(RouteError::MissingField(format!(
                        "message is a JSON {what}, not an object with a `{field}` field"
                    )));
                }
                Probe::Found(found) => found,
            }
        };
        match found {
            None => Err(RouteError::MissingField(format!(
                "message has no `{field}` field"
            ))),
            Some(Value::String(name)) => to.get(&name).map(String::as_str).ok_or_else(|| {
                let known: Vec<&str> = to.keys().map(String::as_str).collect();
                RouteError::UnknownValue(format!(
                    "no handler for {field} `{name}` (known: {})",
                    known.join(", ")
                ))
            }),
            Some(other) => Err(RouteError::UnknownValue(format!(
                "`{field}` must be a string, found {other}"
            ))),
        }
    }
}

enum Probe {
    NotObject(&'static str),
    Found(Option<Value>),
}

/// Reads a JSON document, keeping only one top-level field.
struct FieldProbe<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for FieldProbe<'_> {
    type Value = Probe;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Probe, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldProbe<'_> {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            // A repeated field counts with its last value, as it does in a
            // parsed document: the handler sees the value the route used.
            if key == self.field {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Probe::Found(found))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Probe::NotObject("array"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Probe, E> {
        Ok(Probe::NotObject("string"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Probe, E> {
        Ok(Probe::NotObject("boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Probe, E> {
        Ok(Probe::NotObject("number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Probe, E> {
        Ok(Probe::NotObject("number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Probe, E> {
        Ok(Probe::NotObject("number"))
    }

    fn visit_unit<E>(self) -> Result<Probe, E> {
        Ok(Probe::NotObject("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calculator() -> Routing {
        Routing::ByField {
            field: "operation".into(),
            to: [("sum", "add"), ("sub", "subtract")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn routes_on_the_field() {
        let table = calculator();
        let message = br#"{"operator_1": "5", "operator_2": "2", "operation": "sum"}"#;
        assert_eq!(table.resolve(message), Ok("add"));
        assert_eq!(
            table.resolve(br#"{"operation":"sub","x":{"deep":[1,2]}}"#),
            Ok("subtract")
        );
    }

    #[test]
    fn names_every_failure() {
        let table = calculator();
        let kind = |value: &[u8]| table.resolve(value).unwrap_err().kind().as_str();
        assert_eq!(kind(b"not json"), "invalid-json");
        assert_eq!(kind(b"{\"operation\": \"sum\""), "invalid-json");
        assert_eq!(kind(b"{\"operation\": \"sum\"} trailing"), "invalid-json");
        assert_eq!(kind(b""), "invalid-json");
        assert_eq!(kind(br#"{"x": 1}"#), "missing-route");
        assert_eq!(kind(b"[1, 2]"), "missing-route");
        assert_eq!(kind(b"null"), "missing-route");
        assert_eq!(kind(br#"{"operation": "mul"}"#), "unknown-route");
        assert_eq!(kind(br#"{"operation": 5}"#), "unknown-route");
        let reason = table
            .resolve(br#"{"operation": "mul"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(reason, "no handler for operation `mul` (known: sub, sum)");
    }

    #[test]
    fn a_repeated_field_counts_with_its_last_value() {
        let table = calculator();
        assert_eq!(
            table.resolve(br#"{"operation": "mul", "operation": "sum"}"#),
            Ok("add")
        );
        assert_eq!(
            table
                .resolve(br#"{"operation": "sum", "operation": 5}"#)
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownRoute
        );
        let pointer = Routing::ByField {
            field: "/operation".into(),
            to: [("sum".to_string(), "add".to_string())]
                .into_iter()
                .collect(),
        };
        assert_eq!(
            pointer.resolve(br#"{"operation": "mul", "operation": "sum"}"#),
            Ok("add")
        );
    }

    #[test]
    fn follows_json_pointers() {
        let table = Routing::ByField {
            field: "/meta/op".into(),
            to: [("a".to_string(), "add".to_string())].into_iter().collect(),
        };
        assert_eq!(table.resolve(br#"{"meta": {"op": "a"}}"#), Ok("add"));
        assert_eq!(
            table.resolve(br#"{"meta": {}}"#).unwrap_err().kind(),
            ErrorKind::MissingRoute
        );
    }

    #[test]
    fn single_handler_ignores_content() {
        let table = Routing::Single("add".into());
        assert_eq!(table.resolve(b"anything at all"), Ok("add"));
    }
}
