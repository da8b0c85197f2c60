//! The `audit` stage handler: turns a computed result into an audit record.
//!
//! It reads what `add` or `subtract` produced from a parsed, enriched request
//! (`operation`, numeric `x` and `y`, `result`, `source`, `label`) and writes
//!
//! ```json
//! {"audit": "5 add 2 = 7", "source": "graph-parsed/0/3", "label": "tutorial"}
//! ```
//!
//! Numbers are written as JSON writes them (`7`, `3.5`, `7.0`). `source` and
//! `label` are copied, `null` when absent. A missing or mistyped `operation`,
//! `x`, `y` or `result` is `invalid-input` naming the field.

use stagehost_guest::serde_json::Map;
use stagehost_guest::{HandlerError, Value, json};

/// The audit record of one result (see the module docs).
pub fn audit(input: Value) -> Result<Value, HandlerError> {
    let Value::Object(object) = input else {
        return Err(HandlerError::invalid_input(
            "expected a JSON object with \"operation\", \"x\", \"y\" and \"result\"",
        ));
    };
    let line = format!(
        "{} {} {} = {}",
        number(&object, "x")?,
        operation(&object)?,
        number(&object, "y")?,
        number(&object, "result")?,
    );
    Ok(json!({
        "audit": line,
        "source": object.get("source").cloned().unwrap_or(Value::Null),
        "label": object.get("label").cloned().unwrap_or(Value::Null),
    }))
}

fn operation(object: &Map<String, Value>) -> Result<&str, HandlerError> {
    match object.get("operation") {
        Some(Value::String(name)) => Ok(name),
        Some(_) => Err(HandlerError::invalid_input(
            "\"operation\" must be a string",
        )),
        None => Err(HandlerError::invalid_input("missing \"operation\"")),
    }
}

fn number<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a Value, HandlerError> {
    match object.get(field) {
        Some(value @ Value::Number(_)) => Ok(value),
        Some(_) => Err(HandlerError::invalid_input(format!(
            "\"{field}\" must be a number"
        ))),
        None => Err(HandlerError::invalid_input(format!("missing \"{field}\""))),
    }
}

stagehost_guest::json_handler!(audit);

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: Value) -> String {
        match audit(input) {
            Err(HandlerError::InvalidInput(reason)) => reason,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn tutorial_result_becomes_one_line() {
        let input = json!({
            "operation": "add", "operator_1": "5", "operator_2": "2", "x": 5, "y": 2,
            "source": "graph-parsed/0/3", "received_at_ms": 1, "label": "tutorial", "result": 7,
        });
        assert_eq!(
            audit(input).unwrap(),
            json!({"audit": "5 add 2 = 7", "source": "graph-parsed/0/3", "label": "tutorial"})
        );
    }

    #[test]
    fn numbers_are_written_as_json_writes_them() {
        let input = json!({"operation": "subtract", "x": 1.5, "y": -2, "result": 3.5});
        assert_eq!(
            audit(input).unwrap(),
            json!({"audit": "1.5 subtract -2 = 3.5", "source": null, "label": null})
        );
        let input = json!({"operation": "add", "x": 5.0, "y": 2, "result": 7.0});
        assert_eq!(audit(input).unwrap()["audit"], json!("5.0 add 2 = 7.0"));
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let full = json!({"operation": "add", "x": 5, "y": 2, "result": 7});
        for field in ["operation", "x", "y", "result"] {
            let mut input = full.clone();
            input.as_object_mut().unwrap().remove(field);
            assert_eq!(reason(input), format!("missing \"{field}\""));
        }
        for field in ["x", "y", "result"] {
            let mut input = full.clone();
            input[field] = json!("5");
            assert_eq!(reason(input), format!("\"{field}\" must be a number"));
        }
        let mut input = full;
        input["operation"] = json!(1);
        assert_eq!(reason(input), "\"operation\" must be a string");
        assert_eq!(
            reason(json!([7])),
            "expected a JSON object with \"operation\", \"x\", \"y\" and \"result\""
        );
    }
}
