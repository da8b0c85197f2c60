//! Arithmetic shared by the `add` and `subtract` stage handlers.
//!
//! Both handlers take a JSON object with two operands, either in the
//! tutorial's form
//!
//! ```json
//! {"operation": "sum", "operator_1": "5", "operator_2": "2"}
//! ```
//!
//! or the short form `{"x": 5, "y": 2}`. If `operator_1` or `operator_2` is
//! present the long form is used (and both must be there); otherwise `x` and
//! `y` are. Operands are JSON numbers or strings holding a number (surrounding
//! whitespace is ignored).
//!
//! When both operands are integers (JSON integers, or strings that parse as an
//! `i64`) the arithmetic is exact `i64` arithmetic and overflow is an error.
//! Otherwise it is `f64` arithmetic and a result that is not finite is an
//! error. The output is the input object with `"result"` added (a JSON
//! integer or a JSON float respectively); every other field, including
//! `operation`, is kept.
//!
//! Every problem with the input is a [`HandlerError::InvalidInput`] whose
//! reason names the field involved. Nothing here panics.

#![warn(missing_docs)]

use serde_json::{Map, Value};
pub use stagehost_guest::HandlerError;

/// The arithmetic operation a handler applies to its two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `first + second`.
    Add,
    /// `first - second`.
    Subtract,
}

impl Op {
    /// The operator's symbol, as used in error messages.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Subtract => "-",
        }
    }
}

/// A parsed operand: exact integer or floating point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A JSON integer or a string that parses as an `i64`.
    Int(i64),
    /// Any other finite number.
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(n) => n as f64,
            Number::Float(x) => x,
        }
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(n) => write!(f, "{n}"),
            // `Debug` keeps a decimal point and uses exponents for huge values.
            Number::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// The `add` handler: the input object plus `"result": first + second`.
pub fn add(input: Value) -> Result<Value, HandlerError> {
    apply(Op::Add, input)
}

/// The `subtract` handler: the input object plus `"result": first - second`.
pub fn subtract(input: Value) -> Result<Value, HandlerError> {
    apply(Op::Subtract, input)
}

/// Applies `op` to the operands of `input` and returns `input` with a
/// `"result"` field added (replacing any existing one).
pub fn apply(op: Op, input: Value) -> Result<Value, HandlerError> {
    let mut object = match input {
        Value::Object(object) => object,
        other => {
            return Err(HandlerError::invalid_input(format!(
                "expected a JSON object with \"operator_1\" and \"operator_2\" (or \"x\" and \"y\"), got {}",
                describe(&other)
            )));
        }
    };
    let (first, second) = operands(&object)?;
    let result = compute(op, first, second)?;
    object.insert("result".to_owned(), result);
    Ok(Value::Object(object))
}

/// Finds and parses the two operands of `object`.
pub fn operands(object: &Map<String, Value>) -> Result<(Number, Number), HandlerError> {
    let (first, second) = if object.contains_key("operator_1") || object.contains_key("operator_2")
    {
        ("operator_1", "operator_2")
    } else if object.contains_key("x") || object.contains_key("y") {
        ("x", "y")
    } else {
        return Err(HandlerError::invalid_input(
            "missing operands: expected \"operator_1\" and \"operator_2\" (or \"x\" and \"y\")",
        ));
    };
    Ok((operand(object, first)?, operand(object, second)?))
}

fn operand(object: &Map<String, Value>, field: &str) -> Result<Number, HandlerError> {
    let value = object
        .get(field)
        .ok_or_else(|| HandlerError::invalid_input(format!("missing operand \"{field}\"")))?;
    parse_operand(field, value)
}

/// Parses one operand: a JSON number or a string holding a finite number.
/// `field` names the operand in error reasons.
pub fn parse_operand(field: &str, value: &Value) -> Result<Number, HandlerError> {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Number::Int(i)),
            (None, Some(x)) if x.is_finite() => Ok(Number::Float(x)),
            _ => Err(HandlerError::invalid_input(format!(
                "operand \"{field}\" is out of range: {n}"
            ))),
        },
        Value::String(s) => parse_numeric_str(s).map_err(|problem| {
            HandlerError::invalid_input(format!("operand \"{field}\" {problem}: {value}"))
        }),
        other => Err(HandlerError::invalid_input(format!(
            "operand \"{field}\" must be a number or a numeric string, got {}",
            describe(other)
        ))),
    }
}

/// Parses a numeric string; the error is what is wrong with it.
fn parse_numeric_str(s: &str) -> Result<Number, &'static str> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(Number::Int(n));
    }
    // Rust's float syntax also accepts "inf", "infinity" and "nan"; allow only
    // decimal digits, signs, a point and an exponent.
    let decimal = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    match s.parse::<f64>() {
        Ok(x) if decimal && x.is_finite() => Ok(Number::Float(x)),
        Ok(_) if decimal => Err("is out of range"),
        _ => Err("is not a number"),
    }
}

/// Computes `first op second`: checked `i64` if both are integers, otherwise
/// `f64` with a finite result.
pub fn compute(op: Op, first: Number, second: Number) -> Result<Value, HandlerError> {
    if let (Number::Int(a), Number::Int(b)) = (first, second) {
        let result = match op {
            Op::Add => a.checked_add(b),
            Op::Subtract => a.checked_sub(b),
        };
        return result.map(Value::from).ok_or_else(|| {
            HandlerError::invalid_input(format!("integer overflow: {a} {} {b}", op.symbol()))
        });
    }
    let (a, b) = (first.as_f64(), second.as_f64());
    let result = match op {
        Op::Add => a + b,
        Op::Subtract => a - b,
    };
    match serde_json::Number::from_f64(result) {
        Some(n) if result.is_finite() => Ok(Value::Number(n)),
        _ => Err(HandlerError::invalid_input(format!(
            "result is not a finite number: {first} {} {second}",
            op.symbol()
        ))),
    }
}

/// Names the JSON type of a value for error messages ("an array", "null", …).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(s.clone())),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(result: Result<Value, HandlerError>) -> String {
        match result {
            Err(HandlerError::InvalidInput(reason)) => reason,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn tutorial_sum_and_sub() {
        let input = json!({"operation": "sum", "operator_1": "5", "operator_2": "2"});
        assert_eq!(
            add(input.clone()).unwrap(),
            json!({"operation": "sum", "operator_1": "5", "operator_2": "2", "result": 7})
        );
        let input = json!({"operation": "sub", "operator_1": "5", "operator_2": "2"});
        assert_eq!(
            subtract(input).unwrap(),
            json!({"operation": "sub", "operator_1": "5", "operator_2": "2", "result": 3})
        );
    }

    #[test]
    fn tutorial_output_serialises_with_an_integer_result() {
        let out = add(json!({"operation": "sum", "operator_1": "5", "operator_2": "2"})).unwrap();
        assert_eq!(
            out.to_string(),
            r#"{"operation":"sum","operator_1":"5","operator_2":"2","result":7}"#
        );
    }

    #[test]
    fn short_form() {
        assert_eq!(
            add(json!({"x": 5, "y": 2})).unwrap(),
            json!({"x": 5, "y": 2, "result": 7})
        );
        assert_eq!(
            subtract(json!({"x": 5, "y": 2})).unwrap(),
            json!({"x": 5, "y": 2, "result": 3})
        );
        assert_eq!(
            subtract(json!({"x": 2, "y": 5})).unwrap()["result"],
            json!(-3)
        );
    }

    #[test]
    fn long_form_wins_over_short_form() {
        let out = add(json!({"operator_1": 1, "operator_2": 2, "x": 100, "y": 200})).unwrap();
        assert_eq!(out["result"], json!(3));
        assert_eq!(out["x"], json!(100));
    }

    #[test]
    fn mixed_forms_use_the_long_form_and_name_the_missing_field() {
        let r = reason(add(json!({"operator_1": 1, "y": 2})));
        assert_eq!(r, "missing operand \"operator_2\"");
        let r = reason(add(json!({"x": 1, "operator_2": 2})));
        assert_eq!(r, "missing operand \"operator_1\"");
    }

    #[test]
    fn whitespace_in_strings_is_tolerated() {
        let out = add(json!({"operator_1": "  5\n", "operator_2": "\t2 "})).unwrap();
        assert_eq!(out["result"], json!(7));
        let out = add(json!({"x": " 1.5 ", "y": "+2"})).unwrap();
        assert_eq!(out["result"], json!(3.5));
    }

    #[test]
    fn integers_stay_integers_and_floats_stay_floats() {
        let out = add(json!({"x": 5, "y": 2})).unwrap();
        assert!(out["result"].is_i64());
        let out = add(json!({"x": 5.0, "y": 2})).unwrap();
        assert!(out["result"].is_f64());
        assert_eq!(out.to_string(), r#"{"result":7.0,"x":5.0,"y":2}"#);
        let out = subtract(json!({"x": "0.5", "y": "0.25"})).unwrap();
        assert_eq!(out["result"], json!(0.25));
        let out = add(json!({"x": "1e3", "y": 1})).unwrap();
        assert_eq!(out["result"], json!(1001.0));
    }

    #[test]
    fn integer_arithmetic_is_exact() {
        // Would lose precision in f64.
        let out = add(json!({"x": 9007199254740993_i64, "y": 1})).unwrap();
        assert_eq!(out["result"], json!(9007199254740994_i64));
        let out = subtract(json!({"x": "-9223372036854775807", "y": "1"})).unwrap();
        assert_eq!(out["result"], json!(i64::MIN));
    }

    #[test]
    fn integer_overflow_is_invalid_input() {
        assert_eq!(
            reason(add(json!({"x": i64::MAX, "y": 1}))),
            "integer overflow: 9223372036854775807 + 1"
        );
        assert_eq!(
            reason(subtract(
                json!({"operator_1": "-9223372036854775808", "operator_2": "1"})
            )),
            "integer overflow: -9223372036854775808 - 1"
        );
    }

    #[test]
    fn integers_beyond_i64_fall_back_to_floats() {
        let out = add(json!({"x": u64::MAX, "y": 1})).unwrap();
        assert!(out["result"].is_f64());
        let out = add(json!({"x": "99999999999999999999", "y": 1})).unwrap();
        assert_eq!(out["result"], json!(1e20));
    }

    #[test]
    fn non_finite_results_are_invalid_input() {
        assert_eq!(
            reason(add(json!({"operator_1": "1e308", "operator_2": "1e308"}))),
            "result is not a finite number: 1e308 + 1e308"
        );
        assert_eq!(
            reason(subtract(json!({"x": -1e308, "y": 1e308}))),
            "result is not a finite number: -1e308 - 1e308"
        );
    }

    #[test]
    fn nan_and_infinity_strings_are_not_numbers() {
        for s in ["NaN", "nan", "inf", "-inf", "Infinity", "+infinity"] {
            let r = reason(add(json!({"x": s, "y": 1})));
            assert_eq!(r, format!("operand \"x\" is not a number: \"{s}\""));
        }
    }

    #[test]
    fn out_of_range_strings_are_rejected() {
        assert_eq!(
            reason(add(json!({"x": 1, "y": "1e400"}))),
            "operand \"y\" is out of range: \"1e400\""
        );
    }

    #[test]
    fn non_numeric_operands_name_the_field() {
        let cases = [
            (
                json!("five"),
                "operand \"operator_2\" is not a number: \"five\"",
            ),
            (json!(""), "operand \"operator_2\" is not a number: \"\""),
            (
                json!("  "),
                "operand \"operator_2\" is not a number: \"  \"",
            ),
            (
                json!("1_000"),
                "operand \"operator_2\" is not a number: \"1_000\"",
            ),
            (
                json!("0x10"),
                "operand \"operator_2\" is not a number: \"0x10\"",
            ),
            (
                json!("1e"),
                "operand \"operator_2\" is not a number: \"1e\"",
            ),
            (
                json!(true),
                "operand \"operator_2\" must be a number or a numeric string, got true",
            ),
            (
                json!(null),
                "operand \"operator_2\" must be a number or a numeric string, got null",
            ),
            (
                json!({"v": 1}),
                "operand \"operator_2\" must be a number or a numeric string, got an object",
            ),
            (
                json!([1]),
                "operand \"operator_2\" must be a number or a numeric string, got an array",
            ),
        ];
        for (value, expected) in cases {
            let input = json!({"operation": "sum", "operator_1": "5", "operator_2": value});
            assert_eq!(reason(add(input)), expected);
        }
    }

    #[test]
    fn missing_operands_are_named() {
        assert_eq!(
            reason(add(json!({"operation": "sum"}))),
            "missing operands: expected \"operator_1\" and \"operator_2\" (or \"x\" and \"y\")"
        );
        assert_eq!(reason(add(json!({"x": 1}))), "missing operand \"y\"");
        assert_eq!(reason(add(json!({"y": 1}))), "missing operand \"x\"");
        assert_eq!(
            reason(subtract(json!({"operator_1": 1}))),
            "missing operand \"operator_2\""
        );
    }

    #[test]
    fn non_objects_are_invalid_input() {
        let prefix = "expected a JSON object with \"operator_1\" and \"operator_2\" (or \"x\" and \"y\"), got ";
        for (input, got) in [
            (json!([1, 2]), "an array"),
            (json!("hi"), "the string \"hi\""),
            (json!(42), "the number 42"),
            (json!(null), "null"),
            (json!(false), "false"),
        ] {
            assert_eq!(reason(add(input)), format!("{prefix}{got}"));
        }
    }

    #[test]
    fn existing_result_is_replaced() {
        let out = add(json!({"x": 1, "y": 2, "result": "old"})).unwrap();
        assert_eq!(out, json!({"x": 1, "y": 2, "result": 3}));
    }
}
