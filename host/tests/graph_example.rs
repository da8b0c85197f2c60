//! `examples/graph.yml` end to end on the real broker: the tutorial's
//! 1 → 2 → 3 → {4, 5} graph on fresh topics, with every message sent
//! accounted for on the leaves (audit, notifications, alerts, dead letters).

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);
const HANDLERS: [&str; 6] = ["parse", "enrich", "add", "subtract", "audit", "notify"];

/// The text of `examples/graph.yml` with `graph-` topics renamed to
/// `<prefix>-`, its own group, the test broker, absolute plugin paths and a
/// free admin port. Each replaced text must be there, so that a change to
/// the example cannot leave the test on shared names.
fn graph_yaml(prefix: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/graph.yml"))
        .expect("examples/graph.yml is readable");
    assert!(
        text.contains("graph-requests"),
        "the example's topics moved"
    );
    let mut yaml = text.replace("graph-", &format!("{prefix}-"));
    let mut replace_once = |from: &str, to: &str| {
        assert_eq!(
            yaml.matches(from).count(),
            1,
            "examples/graph.yml should contain `{from}` once"
        );
        yaml = yaml.replace(from, to);
    };
    replace_once(
        "brokers: 127.0.0.1:9092",
        &format!("brokers: {}", brokers()),
    );
    replace_once("group: stagehost-graph", &format!("group: {prefix}"));
    replace_once("listen: 127.0.0.1:9645", "listen: 127.0.0.1:0");
    for name in HANDLERS {
        replace_once(
            &format!("path: ../target/wasm32-wasip2/release/{name}.wasm"),
            &format!("path: {}", plugin("wasm32-wasip2", name).display()),
        );
    }
    assert!(!yaml.contains("../target"), "every plugin path replaced");
    yaml
}

/// A message that makes it through to a result.
struct Good {
    key: &'static str,
    sent: Value,
    /// What `parse` makes of it.
    parsed: Value,
    /// `add` or `subtract`.
    handler: &'static str,
    result: Value,
    audit: &'static str,
    notice: &'static str,
    large: bool,
}

/// A message that ends as a dead letter.
struct Bad {
    key: &'static str,
    sent: Vec<u8>,
    stage: &'static str,
    handler: &'static str,
    reason: String,
}

fn good_messages() -> Vec<Good> {
    vec![
        Good {
            key: "tutorial-sum",
            sent: json!({"operation": "sum", "operator_1": "5", "operator_2": "2"}),
            parsed: json!({"operation": "add", "operator_1": "5", "operator_2": "2", "x": 5, "y": 2}),
            handler: "add",
            result: json!(7),
            audit: "5 add 2 = 7",
            notice: "7 = 5 add 2",
            large: false,
        },
        Good {
            key: "tutorial-sub",
            sent: json!({"operation": "sub", "operator_1": "5", "operator_2": "2"}),
            parsed: json!({"operation": "subtract", "operator_1": "5", "operator_2": "2", "x": 5, "y": 2}),
            handler: "subtract",
            result: json!(3),
            audit: "5 subtract 2 = 3",
            notice: "3 = 5 subtract 2",
            large: false,
        },
        Good {
            key: "short-form",
            sent: json!({"operation": "add", "x": 1.5, "y": "2"}),
            parsed: json!({"operation": "add", "x": 1.5, "y": 2}),
            handler: "add",
            result: json!(3.5),
            audit: "1.5 add 2 = 3.5",
            notice: "3.5 = 1.5 add 2",
            large: false,
        },
        Good {
            key: "just-below",
            sent: json!({"operation": "subtract", "x": "-49.5", "y": 50}),
            parsed: json!({"operation": "subtract", "x": -49.5, "y": 50}),
            handler: "subtract",
            result: json!(-99.5),
            audit: "-49.5 subtract 50 = -99.5",
            notice: "-99.5 = -49.5 subtract 50",
            large: false,
        },
        Good {
            key: "at-threshold",
            sent: json!({"operation": "sum", "operator_1": 40, "operator_2": "60"}),
            parsed: json!({"operation": "add", "operator_1": 40, "operator_2": "60", "x": 40, "y": 60}),
            handler: "add",
            result: json!(100),
            audit: "40 add 60 = 100",
            notice: "100 = 40 add 60",
            large: true,
        },
        Good {
            key: "large",
            sent: json!({"operation": "sum", "operator_1": "1200", "operator_2": "34"}),
            parsed: json!({"operation": "add", "operator_1": "1200", "operator_2": "34", "x": 1200, "y": 34}),
            handler: "add",
            result: json!(1234),
            audit: "1200 add 34 = 1234",
            notice: "1234 = 1200 add 34",
            large: true,
        },
        Good {
            key: "negative-large",
            sent: json!({"operation": "sub", "operator_1": "5", "operator_2": "250"}),
            parsed: json!({"operation": "subtract", "operator_1": "5", "operator_2": "250", "x": 5, "y": 250}),
            handler: "subtract",
            result: json!(-245),
            audit: "5 subtract 250 = -245",
            notice: "-245 = 5 subtract 250",
            large: true,
        },
    ]
}

fn bad_messages() -> Vec<Bad> {
    let invalid_json = br#"{"operation": "sum", "operator_1": "5","#;
    let json_error = serde_json::from_slice::<Value>(invalid_json).unwrap_err();
    vec![
        Bad {
            key: "bad-operand",
            sent: br#"{"operation": "sum", "operator_1": "five", "operator_2": "2"}"#.to_vec(),
            stage: "parse",
            handler: "parse",
            reason: r#"operand "operator_1" is not a number: "five""#.to_string(),
        },
        Bad {
            key: "unknown-operation",
            sent: br#"{"operation": "mul", "operator_1": "5", "operator_2": "2"}"#.to_vec(),
            stage: "parse",
            handler: "parse",
            reason: r#"unknown operation "mul": expected "sum", "add", "sub" or "subtract""#
                .to_string(),
        },
        Bad {
            key: "invalid-json",
            sent: invalid_json.to_vec(),
            stage: "parse",
            handler: "parse",
            reason: format!("message value is not valid JSON: {json_error}"),
        },
        // Passes `parse` and `enrich`; `add` refuses it.
        Bad {
            key: "overflow",
            sent: br#"{"operation": "sum", "x": 9223372036854775807, "y": 1}"#.to_vec(),
            stage: "compute",
            handler: "add",
            reason: "integer overflow: 9223372036854775807 + 1".to_string(),
        },
    ]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Records by key; each key must appear once.
fn by_key(records: &[Received], topic: &str) -> BTreeMap<String, Received> {
    let mut keyed = BTreeMap::new();
    for record in records {
        let key = record.key.clone().expect("the input key is kept");
        let before = keyed.insert(key.clone(), record.clone());
        assert!(
            before.is_none(),
            "{topic}: `{key}` arrived twice: {records:?}"
        );
    }
    keyed
}

fn keys<T>(map: &BTreeMap<String, T>) -> BTreeSet<&str> {
    map.keys().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tutorial_message_ends_on_a_leaf() {
    let prefix = unique("graph");
    let topic = |name: &str| format!("{prefix}-{name}");
    let started_ms = now_ms();
    let host = RunningHost::start(config_from(graph_yaml(&prefix)));

    let good = good_messages();
    let bad = bad_messages();
    let producer = producer();
    for message in &good {
        let value = message.sent.to_string();
        send(
            &producer,
            &topic("requests"),
            Some(message.key),
            value.as_bytes(),
            &[],
        )
        .await;
    }
    for message in &bad {
        send(
            &producer,
            &topic("requests"),
            Some(message.key),
            &message.sent,
            &[("trace-id", message.key)],
        )
        .await;
    }
    let small = good.iter().filter(|m| !m.large).count();

    let parsed = read(&topic("parsed"), good.len() + 1, WAIT, SETTLE).await;
    let results = read(&topic("results"), good.len(), WAIT, SETTLE).await;
    let audit = read(&topic("audit"), good.len(), WAIT, SETTLE).await;
    let notifications = read(&topic("notifications"), small, WAIT, SETTLE).await;
    let alerts = read(&topic("alerts"), good.len() - small, WAIT, SETTLE).await;
    let dead = read(&topic("dlq"), bad.len(), WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");
    let finished_ms = now_ms();

    // Every message sent is on exactly one of audit and the dead letters, and
    // every audited one on exactly one of notifications and alerts.
    let parsed_at: BTreeMap<String, Received> = parsed
        .iter()
        .map(|r| {
            (
                format!("{}/{}/{}", topic("parsed"), r.partition, r.offset),
                r.clone(),
            )
        })
        .collect();
    let results = by_key(&results, "results");
    let audit = by_key(&audit, "audit");
    let notifications = by_key(&notifications, "notifications");
    let alerts = by_key(&alerts, "alerts");
    let dead = by_key(&dead, "dlq");
    let good_keys: BTreeSet<&str> = good.iter().map(|m| m.key).collect();
    let small_keys: BTreeSet<&str> = good.iter().filter(|m| !m.large).map(|m| m.key).collect();
    let large_keys: BTreeSet<&str> = good.iter().filter(|m| m.large).map(|m| m.key).collect();
    let bad_keys: BTreeSet<&str> = bad.iter().map(|m| m.key).collect();
    assert_eq!(keys(&audit), good_keys, "one audit record per good message");
    assert_eq!(keys(&results), good_keys, "one result per good message");
    assert_eq!(
        keys(&notifications),
        small_keys,
        "notifications: below the threshold"
    );
    assert_eq!(
        keys(&alerts),
        large_keys,
        "alerts: at or above the threshold"
    );
    assert_eq!(keys(&dead), bad_keys, "one dead letter per bad message");
    assert_eq!(
        parsed.len(),
        good.len() + 1,
        "parse passes the good ones and the overflow"
    );

    for message in &good {
        let key = message.key;
        // 1 -> 2: parse normalised it; enrich says which parsed record it read.
        let result = &results[key];
        let value = result.json();
        let source = value["source"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: source: {value}"));
        let read_from = parsed_at
            .get(source)
            .unwrap_or_else(|| panic!("{key}: source `{source}` is not a parsed record"));
        assert_eq!(
            read_from.key.as_deref(),
            Some(key),
            "{key}: source names its own record"
        );
        assert_eq!(read_from.json(), message.parsed, "{key}: parsed");
        assert_eq!(read_from.header("stagehost-handler"), "parse");
        let received_at = value["received_at_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("{key}: received_at_ms: {value}"));
        assert!(
            (started_ms - 1000..=finished_ms).contains(&received_at),
            "{key}: received_at_ms {received_at} outside the test's run {started_ms}..{finished_ms}"
        );

        // 3: compute routed it by the canonical operation.
        let mut expected = message.parsed.clone();
        expected["source"] = json!(source);
        expected["received_at_ms"] = json!(received_at);
        expected["label"] = json!("tutorial");
        expected["result"] = message.result.clone();
        assert_eq!(value, expected, "{key}: result");
        assert_eq!(result.header("stagehost-handler"), message.handler, "{key}");

        // 4: audit.
        let record = &audit[key];
        assert_eq!(
            record.json(),
            json!({"audit": message.audit, "source": source, "label": "tutorial"}),
            "{key}: audit"
        );
        assert_eq!(record.header("stagehost-handler"), "audit");

        // 5: notify, split by the threshold.
        let record = if message.large {
            &alerts[key]
        } else {
            &notifications[key]
        };
        assert_eq!(
            record.json(),
            json!({"notice": message.notice, "result": message.result, "source": source}),
            "{key}: notice"
        );
        assert_eq!(record.header("stagehost-handler"), "notify");
    }

    for message in &bad {
        let key = message.key;
        let letter = &dead[key];
        assert_eq!(
            letter.header("stagehost-error-kind"),
            "invalid-input",
            "{key}"
        );
        assert_eq!(
            letter.header("stagehost-error-reason"),
            message.reason,
            "{key}"
        );
        assert_eq!(letter.header("stagehost-stage"), message.stage, "{key}");
        assert_eq!(letter.header("stagehost-handler"), message.handler, "{key}");
        assert_eq!(
            letter.header("stagehost-handler-version").len(),
            12,
            "{key}"
        );
        assert!(
            letter
                .header("stagehost-source-offset")
                .parse::<i64>()
                .is_ok(),
            "{key}: source offset"
        );
        if message.stage == "parse" {
            assert_eq!(
                letter.header("stagehost-source-topic"),
                topic("requests"),
                "{key}"
            );
            assert_eq!(
                letter.value.as_deref(),
                Some(message.sent.as_slice()),
                "{key}: value kept"
            );
            assert_eq!(letter.header("trace-id"), key, "{key}: headers kept");
        } else {
            // Dead-lettered further down: the record as that stage read it.
            assert_eq!(
                letter.header("stagehost-source-topic"),
                topic("enriched"),
                "{key}"
            );
            let value = letter.json();
            let source = value["source"]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: {value}"));
            assert_eq!(parsed_at[source].key.as_deref(), Some(key), "{key}: source");
            let mut expected: Value = serde_json::from_slice(&message.sent).unwrap();
            expected["operation"] = json!("add");
            expected["source"] = json!(source);
            expected["received_at_ms"] = value["received_at_ms"].clone();
            expected["label"] = json!("tutorial");
            assert_eq!(value, expected, "{key}: the enriched record");
            assert!(value["received_at_ms"].is_i64(), "{key}: {value}");
        }
    }
}
