//! The `parse` stage handler: checks the tutorial's request and normalises it.
//!
//! `{"operation": "sum", "operator_1": "5", "operator_2": "2"}` becomes
//! `{"operation": "add", "operator_1": "5", "operator_2": "2", "x": 5, "y": 2}`:
//!
//! - `operation` is made canonical: `sum` or `add` → `add`, `sub` or
//!   `subtract` → `subtract`;
//! - the operands are found and parsed by `calc`'s rules (`operator_1` and
//!   `operator_2` if either is present, else `x` and `y`; JSON numbers or
//!   numeric strings) and written to `x` and `y` as JSON numbers;
//! - every other field is kept as it came.
//!
//! Anything else (not a JSON object, a missing or unknown operation, a missing
//! or non-numeric operand) is `invalid-input` with a reason naming the field.

use calc::Number;
use stagehost_guest::{HandlerError, Value};

/// The operations a request may name, as the error reasons list them.
const OPERATIONS: &str = "\"sum\", \"add\", \"sub\" or \"subtract\"";

/// Checks a request and returns it normalised (see the module docs).
pub fn normalise(input: Value) -> Result<Value, HandlerError> {
    let Value::Object(mut object) = input else {
        return Err(HandlerError::invalid_input(format!(
            "expected a JSON object with \"operation\" and two operands, got {}",
            describe(&input)
        )));
    };
    let operation = canonical_operation(object.get("operation"))?;
    let (x, y) = calc::operands(&object)?;
    object.insert("operation".to_owned(), Value::from(operation));
    object.insert("x".to_owned(), number(x));
    object.insert("y".to_owned(), number(y));
    Ok(Value::Object(object))
}

/// The canonical name (`add` or `subtract`) of a request's `operation` value.
pub fn canonical_operation(value: Option<&Value>) -> Result<&'static str, HandlerError> {
    match value {
        Some(Value::String(name)) => match name.as_str() {
            "sum" | "add" => Ok("add"),
            "sub" | "subtract" => Ok("subtract"),
            _ => Err(HandlerError::invalid_input(format!(
                "unknown operation {}: expected {OPERATIONS}",
                Value::from(name.as_str())
            ))),
        },
        Some(other) => Err(HandlerError::invalid_input(format!(
            "\"operation\" must be a string ({OPERATIONS}), got {}",
            describe(other)
        ))),
        None => Err(HandlerError::invalid_input(format!(
            "missing \"operation\": expected {OPERATIONS}"
        ))),
    }
}

/// An operand as a JSON number; `calc` only returns finite ones.
fn number(operand: Number) -> Value {
    match operand {
        Number::Int(n) => Value::from(n),
        Number::Float(x) => Value::from(x),
    }
}

/// Names a JSON value for error reasons: its type, or the scalar itself.
fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        scalar => scalar.to_string(),
    }
}

stagehost_guest::json_handler!(normalise);

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_guest::json;

    fn reason(input: Value) -> String {
        match normalise(input) {
            Err(HandlerError::InvalidInput(reason)) => reason,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn tutorial_message_is_normalised_and_keeps_its_fields() {
        let input = json!({"operation": "sum", "operator_1": "5", "operator_2": "2"});
        assert_eq!(
            normalise(input).unwrap(),
            json!({"operation": "add", "operator_1": "5", "operator_2": "2", "x": 5, "y": 2})
        );
        let input = json!({"operation": "sub", "operator_1": 5, "operator_2": "2", "id": "a"});
        assert_eq!(
            normalise(input).unwrap(),
            json!({"operation": "subtract", "operator_1": 5, "operator_2": "2", "id": "a", "x": 5, "y": 2})
        );
    }

    #[test]
    fn every_operation_name_is_made_canonical() {
        for (given, canonical) in [
            ("sum", "add"),
            ("add", "add"),
            ("sub", "subtract"),
            ("subtract", "subtract"),
        ] {
            let out = normalise(json!({"operation": given, "x": 1, "y": 2})).unwrap();
            assert_eq!(out["operation"], json!(canonical), "{given}");
        }
    }

    #[test]
    fn short_form_operands_become_numbers() {
        let out = normalise(json!({"operation": "add", "x": " 1.5 ", "y": "-2"})).unwrap();
        assert_eq!(out, json!({"operation": "add", "x": 1.5, "y": -2}));
        assert!(out["y"].is_i64());
        let out = normalise(json!({"operation": "add", "x": 2.0, "y": 1})).unwrap();
        assert!(out["x"].is_f64());
    }

    #[test]
    fn the_long_form_wins_and_sets_x_and_y() {
        let input =
            json!({"operation": "sum", "operator_1": "5", "operator_2": 2, "x": 100, "y": 200});
        let out = normalise(input).unwrap();
        assert_eq!((&out["x"], &out["y"]), (&json!(5), &json!(2)));
    }

    #[test]
    fn unknown_operations_are_named() {
        assert_eq!(
            reason(json!({"operation": "mul", "x": 1, "y": 2})),
            "unknown operation \"mul\": expected \"sum\", \"add\", \"sub\" or \"subtract\""
        );
        assert_eq!(
            reason(json!({"operation": "Sum", "x": 1, "y": 2})),
            "unknown operation \"Sum\": expected \"sum\", \"add\", \"sub\" or \"subtract\""
        );
        assert_eq!(
            reason(json!({"operation": 7, "x": 1, "y": 2})),
            "\"operation\" must be a string (\"sum\", \"add\", \"sub\" or \"subtract\"), got 7"
        );
        assert_eq!(
            reason(json!({"x": 1, "y": 2})),
            "missing \"operation\": expected \"sum\", \"add\", \"sub\" or \"subtract\""
        );
    }

    #[test]
    fn the_operation_is_checked_before_the_operands() {
        let r = reason(json!({"operation": "mul", "operator_1": "five"}));
        assert!(r.starts_with("unknown operation"), "{r}");
    }

    #[test]
    fn bad_operands_are_named() {
        assert_eq!(
            reason(json!({"operation": "sum", "operator_1": "five", "operator_2": "2"})),
            "operand \"operator_1\" is not a number: \"five\""
        );
        assert_eq!(
            reason(json!({"operation": "sub", "operator_1": "5"})),
            "missing operand \"operator_2\""
        );
        assert_eq!(
            reason(json!({"operation": "add", "x": [1], "y": 2})),
            "operand \"x\" must be a number or a numeric string, got an array"
        );
        assert_eq!(
            reason(json!({"operation": "add"})),
            "missing operands: expected \"operator_1\" and \"operator_2\" (or \"x\" and \"y\")"
        );
    }

    #[test]
    fn non_objects_are_invalid_input() {
        let prefix = "expected a JSON object with \"operation\" and two operands, got ";
        for (input, got) in [
            (json!([1, 2]), "an array"),
            (json!("sum"), "\"sum\""),
            (json!(7), "7"),
            (json!(null), "null"),
        ] {
            assert_eq!(reason(input), format!("{prefix}{got}"));
        }
    }
}
