//! The `notify` stage handler: a notice per result, large ones on a branch.
//!
//! For each computed result (`operation`, numeric `x`, `y` and `result`) it
//! emits one record
//!
//! ```json
//! {"notice": "7 = 5 add 2", "result": 7, "source": "graph-parsed/0/3"}
//! ```
//!
//! to the stage's output topic, or, when `|result| >= threshold`, to the
//! branch named `large` (the output's topic is `large`; the stage's
//! `branches` map says which topic that is). `threshold` is a setting,
//! default `100`. It sets an output's topic, so it implements [`Guest`]
//! itself rather than using `json_handler!`.

use stagehost_guest::serde_json::Map;
use stagehost_guest::{
    Guest, HandlerError, Message, Output, Settings, Value, export_handler, json, setting,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// The branch large results go to.
pub const LARGE: &str = "large";

/// The threshold used when the config sets none.
pub const DEFAULT_THRESHOLD: f64 = 100.0;

/// This instance's threshold (the bits of an `f64`), set by `init`.
static THRESHOLD: AtomicU64 = AtomicU64::new(DEFAULT_THRESHOLD.to_bits());

/// Reads the settings: `threshold`, a non-negative number, is the only one.
pub fn threshold(settings: &Settings) -> Result<f64, String> {
    if let Some((name, _)) = settings.iter().find(|(name, _)| name != "threshold") {
        return Err(format!(
            "unknown setting `{name}`: notify takes `threshold`"
        ));
    }
    let Some(text) = setting(settings, "threshold") else {
        return Ok(DEFAULT_THRESHOLD);
    };
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!(
            "setting `threshold` must be a non-negative number, got {text:?}"
        )),
    }
}

/// The notice for one result, sent to the [`LARGE`] branch when
/// `|result| >= threshold`.
pub fn notify(input: Value, threshold: f64) -> Result<Output, HandlerError> {
    let Value::Object(object) = input else {
        return Err(HandlerError::invalid_input(
            "expected a JSON object with \"operation\", \"x\", \"y\" and \"result\"",
        ));
    };
    let result = number(&object, "result")?;
    let notice = format!(
        "{result} = {} {} {}",
        number(&object, "x")?,
        operation(&object)?,
        number(&object, "y")?,
    );
    let size = result.as_f64().map_or(f64::INFINITY, f64::abs);
    let output = Output::json(&json!({
        "notice": notice,
        "result": result,
        "source": object.get("source").cloned().unwrap_or(Value::Null),
    }));
    Ok(if size >= threshold {
        output.with_topic(LARGE)
    } else {
        output
    })
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

fn number<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a stagehost_guest::serde_json::Number, HandlerError> {
    match object.get(field) {
        Some(Value::Number(n)) => Ok(n),
        Some(_) => Err(HandlerError::invalid_input(format!(
            "\"{field}\" must be a number"
        ))),
        None => Err(HandlerError::invalid_input(format!("missing \"{field}\""))),
    }
}

struct Notify;

impl Guest for Notify {
    fn init(settings: Settings) -> Result<(), String> {
        THRESHOLD.store(threshold(&settings)?.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {
        let threshold = f64::from_bits(THRESHOLD.load(Ordering::Relaxed));
        Ok(vec![notify(msg.json()?, threshold)?])
    }
}

export_handler!(Notify);

#[cfg(test)]
mod tests {
    use super::*;

    fn result(x: Value, y: Value, result: Value) -> Value {
        json!({"operation": "add", "x": x, "y": y, "result": result, "source": "s/0/1", "label": "l"})
    }

    #[test]
    fn small_results_go_to_the_output_topic() {
        let out = notify(result(json!(5), json!(2), json!(7)), 100.0).unwrap();
        assert_eq!(out.topic, None);
        assert_eq!(out.key, None);
        assert_eq!(
            String::from_utf8(out.value).unwrap(),
            r#"{"notice":"7 = 5 add 2","result":7,"source":"s/0/1"}"#
        );
    }

    #[test]
    fn large_results_either_way_go_to_the_large_branch() {
        for (value, large) in [
            (json!(99), false),
            (json!(99.5), false),
            (json!(100), true),
            (json!(-100), true),
            (json!(-99), false),
            (json!(250.25), true),
            (json!(i64::MIN), true),
        ] {
            let out = notify(result(json!(0), json!(0), value.clone()), 100.0).unwrap();
            let expected = large.then(|| LARGE.to_owned());
            assert_eq!(out.topic, expected, "result {value}");
        }
    }

    #[test]
    fn the_threshold_comes_from_the_settings() {
        assert_eq!(threshold(&Vec::new()), Ok(100.0));
        let set = |value: &str| vec![("threshold".to_owned(), value.to_owned())];
        assert_eq!(threshold(&set("5")), Ok(5.0));
        assert_eq!(threshold(&set(" 2.5 ")), Ok(2.5));
        for bad in ["", "ten", "-1", "inf", "NaN"] {
            assert_eq!(
                threshold(&set(bad)),
                Err(format!(
                    "setting `threshold` must be a non-negative number, got {bad:?}"
                ))
            );
        }
        let typo = vec![("treshold".to_owned(), "5".to_owned())];
        assert_eq!(
            threshold(&typo),
            Err("unknown setting `treshold`: notify takes `threshold`".to_owned())
        );
        let out = notify(result(json!(5), json!(2), json!(7)), 5.0).unwrap();
        assert_eq!(out.topic.as_deref(), Some(LARGE));
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let reason = |input| notify(input, 100.0).unwrap_err().reason().to_owned();
        let full = result(json!(5), json!(2), json!(7));
        for field in ["operation", "x", "y", "result"] {
            let mut input = full.clone();
            input.as_object_mut().unwrap().remove(field);
            assert_eq!(reason(input), format!("missing \"{field}\""));
        }
        let mut input = full;
        input["result"] = json!(null);
        assert_eq!(reason(input), "\"result\" must be a number");
        assert_eq!(
            reason(json!("7")),
            "expected a JSON object with \"operation\", \"x\", \"y\" and \"result\""
        );
    }
}
