//! Handlers written in Python (`multiply`, built with componentize-py) and
//! JavaScript (`divide`, built with componentize-js) run in one stage next to
//! the Rust `add`, on the real broker: exact outputs, shaped exactly like the
//! Rust handler's, and every dead letter with its kind and reason. Two more
//! stages hand raw bytes to each of them (no routing, so nothing parses the
//! value first) to show that bad bytes are `invalid-input`, not traps.
//!
//! `scripts/build-foreign-plugins.sh` (run by `make plugins`) builds the two
//! components. Each is a whole language runtime (12 to 18 MB), which the host
//! compiles on one thread when it loads it: about 20 s of CPU each, so the
//! host here takes most of a minute to start consuming.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Generous: the host first compiles two large components.
const WAIT: Duration = Duration::from_secs(420);
const SETTLE: Duration = Duration::from_secs(2);
/// 200 nested arrays: serde_json (and so the host's router) refuses 128.
const DEEP: &[u8] = [[b'['; 200], [b']'; 200]].as_flattened();

/// The test's topics: the calculator and one raw stage per foreign handler.
struct Pipeline {
    calc: Topics,
    raw_multiply: Topics,
    raw_divide: Topics,
}

impl Pipeline {
    fn new() -> Self {
        Self {
            calc: Topics::new(),
            raw_multiply: Topics::new(),
            raw_divide: Topics::new(),
        }
    }

    fn yaml(&self) -> String {
        for name in ["add", "multiply", "divide"] {
            plugin("wasm32-wasip2", name);
        }
        let stage = |name: &str, topics: &Topics, target: &str| {
            format!(
                "  - name: {name}\n    input: {}\n    output: {}\n    dead_letter: {}\n{target}",
                topics.input, topics.output, topics.dead_letter
            )
        };
        let route = "    route:\n      field: operation\n      to:\n        sum: add\n        mul: multiply\n        multiply: multiply\n        div: divide\n        divide: divide\n";
        format!(
            r#"
kafka:
  brokers: {brokers}
  group: {group}
  topics:
    partitions: 1
admin:
  listen: 127.0.0.1:0
handlers:
  add:
    path: target/wasm32-wasip2/release/add.wasm
  multiply:
    path: target/wasm32-wasip2/release/multiply.wasm
  divide:
    path: target/wasm32-wasip2/release/divide.wasm
stages:
{calc}{raw_multiply}{raw_divide}"#,
            brokers = brokers(),
            group = self.calc.group,
            calc = stage("calculator", &self.calc, route),
            raw_multiply = stage(
                "raw-multiply",
                &self.raw_multiply,
                "    handler: multiply\n"
            ),
            raw_divide = stage("raw-divide", &self.raw_divide, "    handler: divide\n"),
        )
    }
}

fn text(record: &Received) -> String {
    String::from_utf8(record.value.clone().unwrap_or_default()).expect("UTF-8 value")
}

fn by_key(records: &[Received]) -> BTreeMap<String, &Received> {
    let map: BTreeMap<_, _> = records
        .iter()
        .map(|r| (r.key.clone().expect("every test record has a key"), r))
        .collect();
    assert_eq!(map.len(), records.len(), "one record per key: {records:?}");
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_handlers_answer_next_to_rust_ones() {
    let pipeline = Pipeline::new();
    let started = Instant::now();
    let ready_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let ready = ready_at.clone();
    let host = RunningHost::start_with(config_from(pipeline.yaml()), move |_| {
        *ready.lock().unwrap() = Some(started.elapsed());
    });
    let producer = producer();

    // (key, message, exact output, handler)
    let good: &[(&str, &str, &str, &str)] = &[
        (
            "sum",
            r#"{"operator_1": "5", "operator_2": "2", "operation": "sum"}"#,
            r#"{"operation":"sum","operator_1":"5","operator_2":"2","result":7}"#,
            "add",
        ),
        (
            "mul",
            r#"{"operator_1": "5", "operator_2": "2", "operation": "mul"}"#,
            r#"{"operation":"mul","operator_1":"5","operator_2":"2","result":10}"#,
            "multiply",
        ),
        (
            "div",
            r#"{"operator_1": "6", "operator_2": "3", "operation": "div"}"#,
            r#"{"operation":"div","operator_1":"6","operator_2":"3","result":2}"#,
            "divide",
        ),
        (
            "mul-float",
            r#"{"operation": "multiply", "x": 1.5, "y": "4"}"#,
            r#"{"operation":"multiply","result":6.0,"x":1.5,"y":"4"}"#,
            "multiply",
        ),
        (
            "div-float",
            r#"{"operation": "divide", "x": 7, "y": 2}"#,
            r#"{"operation":"divide","result":3.5,"x":7,"y":2}"#,
            "divide",
        ),
        (
            // Beyond 2^53: exact only as a 64-bit integer.
            "mul-exact",
            r#"{"operation": "mul", "x": 3037000499, "y": "3037000499", "note": "é"}"#,
            r#"{"note":"é","operation":"mul","result":9223372030926249001,"x":3037000499,"y":"3037000499"}"#,
            "multiply",
        ),
        (
            "div-exact",
            r#"{"operation": "div", "x": "-9223372036854775808", "y": -2}"#,
            r#"{"operation":"div","result":4611686018427387904,"x":"-9223372036854775808","y":-2}"#,
            "divide",
        ),
        (
            "div-tiny",
            r#"{"operation": "div", "x": 1, "y": 1e20}"#,
            r#"{"operation":"div","result":1e-20,"x":1,"y":1e+20}"#,
            "divide",
        ),
    ];
    // (key, message, exact reason, handler): all `invalid-input`.
    let bad: &[(&str, &str, &str, &str)] = &[
        (
            "div-zero",
            r#"{"operation": "div", "operator_1": "5", "operator_2": "0"}"#,
            "division by zero: 5 / 0",
            "divide",
        ),
        (
            "div-zero-float",
            r#"{"operation": "div", "x": 1.5, "y": 0.0}"#,
            "division by zero: 1.5 / 0.0",
            "divide",
        ),
        (
            "div-overflow",
            r#"{"operation": "div", "x": "-9223372036854775808", "y": -1}"#,
            "integer overflow: -9223372036854775808 / -1",
            "divide",
        ),
        (
            "div-array",
            r#"{"operation": "div", "x": 1, "y": [2]}"#,
            r#"operand "y" must be a number or a numeric string, got an array"#,
            "divide",
        ),
        (
            "mul-five",
            r#"{"operation": "mul", "operator_1": "five", "operator_2": "2"}"#,
            r#"operand "operator_1" is not a number: "five""#,
            "multiply",
        ),
        (
            "mul-overflow",
            r#"{"operation": "mul", "x": 9223372036854775807, "y": 2}"#,
            "integer overflow: 9223372036854775807 * 2",
            "multiply",
        ),
        (
            "mul-infinite",
            r#"{"operation": "mul", "x": 1e308, "y": 10}"#,
            "result is not a finite number: 1e308 * 10",
            "multiply",
        ),
        (
            "mul-missing",
            r#"{"operation": "mul", "operator_1": "5"}"#,
            r#"missing operand "operator_2""#,
            "multiply",
        ),
    ];
    for (key, value, ..) in good.iter().chain(bad) {
        send(
            &producer,
            &pipeline.calc.input,
            Some(key),
            value.as_bytes(),
            &[("trace-id", key)],
        )
        .await;
    }
    // After every bad message, a good one: the partition moved on and each
    // instance still answers after its invalid inputs.
    let after = [
        (
            "after-mul",
            r#"{"operation":"mul","x":6,"y":7}"#,
            r#"{"operation":"mul","result":42,"x":6,"y":7}"#,
        ),
        (
            "after-div",
            r#"{"operation":"div","x":42,"y":7}"#,
            r#"{"operation":"div","result":6,"x":42,"y":7}"#,
        ),
    ];
    for (key, value, _) in after {
        send(
            &producer,
            &pipeline.calc.input,
            Some(key),
            value.as_bytes(),
            &[],
        )
        .await;
    }

    // Raw bytes straight to each handler: (key, value, exact reason from
    // multiply, exact reason from divide).
    let raw: &[(&str, &[u8], &str, &str)] = &[
        (
            "not-json",
            b"{not json",
            "message value is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            "message value is not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            "empty",
            b"",
            "message value is empty; expected a JSON document",
            "message value is empty; expected a JSON document",
        ),
        (
            "not-utf8",
            b"{\"x\": \"\xff\", \"y\": 1}",
            "message value is not valid JSON: 'utf-8' codec can't decode byte 0xff in position 7: invalid start byte",
            "message value is not valid JSON: invalid UTF-8",
        ),
        (
            "lone-surrogate",
            br#"{"x": "\udc00", "y": 1}"#,
            "message value is not valid JSON: lone surrogate in a string",
            "message value is not valid JSON: lone leading surrogate in hex escape at line 1 column 13",
        ),
        (
            "nan",
            br#"{"x": NaN, "y": 1}"#,
            "message value is not valid JSON: expected value, got NaN",
            "message value is not valid JSON: expected value at line 1 column 7",
        ),
        (
            "too-deep",
            DEEP,
            "message value is not valid JSON: recursion limit exceeded at line 1 column 128",
            "message value is not valid JSON: recursion limit exceeded at line 1 column 128",
        ),
        (
            "not-object",
            b"[6, 3]",
            r#"expected a JSON object with "operator_1" and "operator_2" (or "x" and "y"), got an array"#,
            r#"expected a JSON object with "operator_1" and "operator_2" (or "x" and "y"), got an array"#,
        ),
    ];
    for topics in [&pipeline.raw_multiply, &pipeline.raw_divide] {
        for (key, value, ..) in raw {
            send(&producer, &topics.input, Some(key), value, &[]).await;
        }
        send(
            &producer,
            &topics.input,
            Some("good"),
            br#"{"x": 6, "y": 3}"#,
            &[],
        )
        .await;
    }

    let results = read(
        &pipeline.calc.output,
        good.len() + after.len(),
        WAIT,
        SETTLE,
    )
    .await;
    let dead = read(&pipeline.calc.dead_letter, bad.len(), WAIT, SETTLE).await;
    let raw_results = [
        read(&pipeline.raw_multiply.output, 1, WAIT, SETTLE).await,
        read(&pipeline.raw_divide.output, 1, WAIT, SETTLE).await,
    ];
    let raw_dead = [
        read(&pipeline.raw_multiply.dead_letter, raw.len(), WAIT, SETTLE).await,
        read(&pipeline.raw_divide.dead_letter, raw.len(), WAIT, SETTLE).await,
    ];
    host.stop().await.expect("host stops cleanly");
    eprintln!(
        "host with add, multiply and divide ready after {:.1?}",
        ready_at.lock().unwrap().expect("the host reported ready")
    );

    let results = by_key(&results);
    assert_eq!(results.len(), good.len() + after.len(), "{results:?}");
    for (key, _, output, handler) in good {
        let record = results[*key];
        assert_eq!(text(record), *output, "{key}");
        assert_eq!(record.header("stagehost-handler"), *handler, "{key}");
        assert_eq!(record.header("stagehost-handler-version").len(), 12);
    }
    for (key, _, output) in after {
        assert_eq!(text(results[key]), output, "{key}");
    }

    let dead = by_key(&dead);
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    for (key, value, reason, handler) in bad {
        let letter = dead[*key];
        assert_eq!(text(letter), *value, "{key}: original value kept");
        assert_eq!(
            letter.header("stagehost-error-kind"),
            "invalid-input",
            "{key}"
        );
        assert_eq!(letter.header("stagehost-error-reason"), *reason, "{key}");
        assert_eq!(letter.header("stagehost-handler"), *handler, "{key}");
        assert_eq!(letter.header("trace-id"), *key, "{key}");
        assert_eq!(letter.header("stagehost-stage"), "calculator");
        assert_eq!(letter.header("stagehost-source-topic"), pipeline.calc.input);
    }

    let expected_good = [
        r#"{"result":18,"x":6,"y":3}"#,
        r#"{"result":2,"x":6,"y":3}"#,
    ];
    for (n, name) in ["multiply", "divide"].iter().enumerate() {
        assert_eq!(raw_results[n].len(), 1, "{name}: {:?}", raw_results[n]);
        assert_eq!(text(&raw_results[n][0]), expected_good[n], "{name}");
        let letters = by_key(&raw_dead[n]);
        assert_eq!(letters.len(), raw.len(), "{name}: {letters:?}");
        for (key, value, multiply_reason, divide_reason) in raw {
            let letter = letters[*key];
            let reason = if n == 0 {
                multiply_reason
            } else {
                divide_reason
            };
            assert_eq!(
                letter.value.as_deref().unwrap_or_default(),
                *value,
                "{name} {key}"
            );
            assert_eq!(
                letter.header("stagehost-error-kind"),
                "invalid-input",
                "{name} {key}: {}",
                letter.header("stagehost-error-reason")
            );
            assert_eq!(
                letter.header("stagehost-error-reason"),
                *reason,
                "{name} {key}"
            );
            assert_eq!(letter.header("stagehost-handler"), *name, "{name} {key}");
        }
    }
}
