//! The tutorial's calculator end to end on the real broker: results, keys,
//! every dead-letter kind (an output the broker refuses too, in both
//! delivery modes), and per-key order across partitions.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
const SETTLE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_messages_give_seven_and_three_with_keys_kept() {
    let topics = Topics::new();
    let host = RunningHost::start(config_from(calculator_yaml(&topics, 1)));
    let producer = producer();
    let sum = br#"{"operator_1": "5", "operator_2": "2", "operation": "sum"}"#;
    let sub = br#"{"operator_1": "5", "operator_2": "2", "operation": "sub"}"#;
    send(&producer, &topics.input, Some("first"), sum, &[]).await;
    send(&producer, &topics.input, Some("second"), sub, &[]).await;
    send(
        &producer,
        &topics.input,
        None,
        br#"{"operation": "add", "x": 1.5, "y": 2}"#,
        &[],
    )
    .await;

    let results = read(&topics.output, 3, WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");

    assert_eq!(
        results.len(),
        3,
        "exactly one result per message: {results:?}"
    );
    let by_key: BTreeMap<_, _> = results.iter().map(|r| (r.key.clone(), r)).collect();
    let first = by_key[&Some("first".to_string())];
    assert_eq!(
        first.json(),
        json!({"operator_1": "5", "operator_2": "2", "operation": "sum", "result": 7})
    );
    assert_eq!(first.header("stagehost-handler"), "add");
    assert_eq!(first.header("stagehost-handler-version").len(), 12);
    let second = by_key[&Some("second".to_string())];
    assert_eq!(second.json()["result"], json!(3));
    assert_eq!(second.header("stagehost-handler"), "subtract");
    let unkeyed = by_key[&None];
    assert_eq!(unkeyed.json()["result"], json!(3.5));

    let dead = read(&topics.dead_letter, 0, WAIT, Duration::from_millis(500)).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_message_is_dead_lettered_with_its_reason() {
    let topics = Topics::new();
    let host = RunningHost::start(config_from(calculator_yaml(&topics, 1)));
    let producer = producer();
    let cases: Vec<(&str, &[u8], &str, &str)> = vec![
        ("json", b"{not json", "invalid-json", "not valid JSON"),
        ("empty", b"", "invalid-json", "not valid JSON"),
        (
            "missing",
            br#"{"operator_1": 1, "operator_2": 2}"#,
            "missing-route",
            "no `operation` field",
        ),
        ("array", b"[1, 2]", "missing-route", "not an object"),
        (
            "unknown",
            br#"{"operation": "mul", "x": 1, "y": 2}"#,
            "unknown-route",
            "no handler for operation `mul`",
        ),
        (
            "wrong-type",
            br#"{"operation": 7, "x": 1, "y": 2}"#,
            "unknown-route",
            "must be a string",
        ),
        (
            "operand",
            br#"{"operation": "sum", "operator_1": "five", "operator_2": "2"}"#,
            "invalid-input",
            "operator_1",
        ),
        (
            "no-operand",
            br#"{"operation": "sub", "operator_1": "5"}"#,
            "invalid-input",
            "operator_2",
        ),
        (
            "overflow",
            br#"{"operation": "sum", "x": 9223372036854775807, "y": 1}"#,
            "invalid-input",
            "overflow",
        ),
    ];
    for (key, value, _, _) in &cases {
        send(
            &producer,
            &topics.input,
            Some(key),
            value,
            &[("trace-id", key)],
        )
        .await;
    }
    // A good message after all of them: the partition moved on.
    send(
        &producer,
        &topics.input,
        Some("good"),
        br#"{"operation": "sum", "x": 40, "y": 2}"#,
        &[],
    )
    .await;

    let dead = read(&topics.dead_letter, cases.len(), WAIT, SETTLE).await;
    let results = read(&topics.output, 1, WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");

    assert_eq!(
        results.len(),
        1,
        "only the good message has a result: {results:?}"
    );
    assert_eq!(results[0].json()["result"], json!(42));
    assert_eq!(
        dead.len(),
        cases.len(),
        "one dead letter per bad message: {dead:?}"
    );
    let by_key: BTreeMap<_, _> = dead.iter().map(|r| (r.key.clone().unwrap(), r)).collect();
    for (key, value, kind, reason) in &cases {
        let letter = by_key
            .get(*key)
            .unwrap_or_else(|| panic!("no dead letter for {key}"));
        assert_eq!(
            letter.value.as_deref().unwrap_or_default(),
            *value,
            "{key}: original value kept"
        );
        assert_eq!(
            letter.header("trace-id"),
            *key,
            "{key}: original headers kept"
        );
        assert_eq!(letter.header("stagehost-error-kind"), *kind, "{key}");
        let said = letter.header("stagehost-error-reason");
        assert!(
            said.contains(reason),
            "{key}: reason `{said}` should mention `{reason}`"
        );
        assert_eq!(letter.header("stagehost-source-topic"), topics.input);
        assert_eq!(letter.header("stagehost-source-partition"), "0");
        assert!(
            letter
                .header("stagehost-source-offset")
                .parse::<i64>()
                .is_ok()
        );
        assert_eq!(letter.header("stagehost-stage"), "calculator");
    }
    assert_eq!(by_key["operand"].header("stagehost-handler"), "add");
    assert_eq!(by_key["no-operand"].header("stagehost-handler"), "subtract");
    assert!(!by_key["json"].headers.contains_key("stagehost-handler"));
    // A null value is dead-lettered as null, not as an empty string.
    assert!(
        by_key["empty"].value.is_none() || by_key["empty"].value.as_deref() == Some(b"".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_is_kept_across_partitions() {
    const KEYS: usize = 24;
    const PER_KEY: usize = 125;
    let topics = Topics::new();
    create_topic(&topics.input, 4).await;
    create_topic(&topics.output, 3).await;
    let producer = producer();
    // Half before the host starts (a new group reads from the earliest offset), half while it runs.
    let mut sent = 0;
    let send_batch = |from: usize, to: usize| {
        let producer = producer.clone();
        let input = topics.input.clone();
        async move {
            let mut deliveries = Vec::new();
            for seq in from..to {
                for key in 0..KEYS {
                    let value =
                        json!({"operation": "sum", "x": seq, "y": key, "seq": seq}).to_string();
                    let key = format!("key-{key}");
                    let record = rdkafka::producer::FutureRecord::to(&input)
                        .key(&key)
                        .payload(&value);
                    deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
                }
            }
            for delivery in deliveries {
                delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    };
    send_batch(0, PER_KEY / 2).await;
    sent += PER_KEY / 2;
    let host = RunningHost::start(config_from(calculator_yaml(&topics, 4)));
    send_batch(sent, PER_KEY).await;

    let total = KEYS * PER_KEY;
    let results = read(&topics.output, total, WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");

    assert_eq!(results.len(), total, "every message exactly once");
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_output_partition: BTreeMap<(i32, i64), &Received> = BTreeMap::new();
    for result in &results {
        by_output_partition.insert((result.partition, result.offset), result);
    }
    for result in by_output_partition.values() {
        let key = result.key.clone().expect("key kept");
        let value = result.json();
        let seq = value["seq"].as_u64().unwrap();
        let expected = next.entry(key.clone()).or_insert(0);
        assert_eq!(seq, *expected, "{key}: out of order");
        *expected += 1;
        let key_number: u64 = key.trim_start_matches("key-").parse().unwrap();
        assert_eq!(value["result"], json!(seq + key_number));
    }
    assert_eq!(next.len(), KEYS);
    assert!(next.values().all(|&n| n == PER_KEY as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_commits_so_a_restart_repeats_nothing() {
    let topics = Topics::new();
    let producer = producer();
    for seq in 0..50 {
        let value = json!({"operation": "sum", "x": seq, "y": 1}).to_string();
        send(
            &producer,
            &topics.input,
            Some(&format!("k{seq}")),
            value.as_bytes(),
            &[],
        )
        .await;
    }
    let host = RunningHost::start(config_from(calculator_yaml(&topics, 2)));
    read(&topics.output, 50, WAIT, Duration::from_millis(200)).await;
    host.stop().await.expect("host stops cleanly");

    let host = RunningHost::start(config_from(calculator_yaml(&topics, 2)));
    let value = json!({"operation": "sum", "x": 100, "y": 1}).to_string();
    send(
        &producer,
        &topics.input,
        Some("after"),
        value.as_bytes(),
        &[],
    )
    .await;
    let results = read(&topics.output, 51, WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");
    assert_eq!(
        results.len(),
        51,
        "the restart processed only the new message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_headers_travel_to_outputs_as_each_stage_says() {
    let topics = Topics::new();
    let (none_output, names_output) = (unique("results-none"), unique("results-names"));
    // Three stages on one input: the default (all), none, and a list.
    let extra = |name: &str, output: &str, rule: &str| {
        format!(
            "  - name: {name}\n    input: {input}\n    output: {output}\n    dead_letter: {dead_letter}\n    \
             propagate_headers: {rule}\n    handler: add\n",
            input = topics.input,
            dead_letter = topics.dead_letter,
        )
    };
    let yaml = calculator_yaml(&topics, 1)
        + &extra("no-headers", &none_output, "none")
        + &extra("some-headers", &names_output, "[correlation-id]");
    let host = RunningHost::start(config_from(yaml));
    let producer = producer();
    let sum = br#"{"operator_1": "5", "operator_2": "2", "operation": "sum"}"#;
    send(
        &producer,
        &topics.input,
        Some("traced"),
        sum,
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("correlation-id", "order-17"),
            // An upstream stage's header: the host's own replaces it.
            ("stagehost-handler", "upstream"),
        ],
    )
    .await;
    send(&producer, &topics.input, Some("plain"), sum, &[]).await;

    let all = read(&topics.output, 2, WAIT, SETTLE).await;
    let none = read(&none_output, 2, WAIT, SETTLE).await;
    let names = read(&names_output, 2, WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");

    let traced = |records: &[Received]| {
        let by_key: BTreeMap<_, _> = records.iter().map(|r| (r.key.clone(), r.clone())).collect();
        assert_eq!(by_key.len(), 2, "one output per input: {records:?}");
        let plain = &by_key[&Some("plain".to_string())];
        let host_headers = ["stagehost-handler", "stagehost-handler-version"];
        assert_eq!(
            plain.headers.keys().map(String::as_str).collect::<Vec<_>>(),
            host_headers,
            "an input without headers gives only the host's"
        );
        let traced = by_key[&Some("traced".to_string())].clone();
        assert_eq!(traced.json()["result"], json!(7));
        assert_eq!(traced.header("stagehost-handler"), "add");
        traced
    };
    let from_all = traced(&all);
    assert_eq!(
        from_all.header("traceparent"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(from_all.header("correlation-id"), "order-17");
    assert_eq!(from_all.headers.len(), 4, "{:?}", from_all.headers);
    let from_none = traced(&none);
    assert_eq!(from_none.headers.len(), 2, "{:?}", from_none.headers);
    let from_names = traced(&names);
    assert_eq!(from_names.header("correlation-id"), "order-17");
    assert!(!from_names.headers.contains_key("traceparent"));
    assert_eq!(from_names.headers.len(), 3, "{:?}", from_names.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_is_dead_lettered_at_least_once() {
    an_output_the_broker_refuses_is_dead_lettered("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_is_dead_lettered_exactly_once() {
    an_output_the_broker_refuses_is_dead_lettered("exactly-once").await;
}

/// The output topic takes records of at most 2,000 bytes. A request whose
/// result is larger is refused by the broker for good: it becomes one
/// `produce-failed` dead letter, its result is nowhere to be read (in
/// exactly-once mode the transaction holding it is aborted and the request
/// taken again), and the requests before and after it give one result each.
async fn an_output_the_broker_refuses_is_dead_lettered(delivery: &str) {
    let topics = Topics::new();
    create_topic_with(&topics.output, 1, &[("max.message.bytes", "2000")]).await;
    let group = format!("  group: {}\n", topics.group);
    let yaml = calculator_yaml(&topics, 1).replace(
        &group,
        &format!(
            "{group}  delivery: {delivery}\n  transactions:\n    id: {}\n    commit_interval_ms: 100\n",
            unique("refused-txn")
        ),
    );
    assert!(yaml.contains(delivery), "{yaml}");
    let host = RunningHost::start(config_from(yaml));
    let producer = producer();
    let request = |x: u64, pad: usize| {
        json!({"operation": "sum", "x": x, "y": 1, "pad": "p".repeat(pad)}).to_string()
    };
    // One at a time, so no produce batch holds both a refused record and a
    // good one (the broker refuses a too-large batch as a whole).
    send(
        &producer,
        &topics.input,
        Some("before"),
        request(1, 0).as_bytes(),
        &[],
    )
    .await;
    read(&topics.output, 1, WAIT, Duration::ZERO).await;
    send(
        &producer,
        &topics.input,
        Some("big"),
        request(2, 3_000).as_bytes(),
        &[],
    )
    .await;
    let letters = read(&topics.dead_letter, 1, WAIT, Duration::ZERO).await;
    send(
        &producer,
        &topics.input,
        Some("after"),
        request(3, 0).as_bytes(),
        &[],
    )
    .await;
    let results = read(&topics.output, 2, WAIT, SETTLE).await;
    let letters_then = read(&topics.dead_letter, 1, WAIT, SETTLE).await;
    host.stop().await.expect("host stops cleanly");

    let keys: Vec<_> = results.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [Some("before"), Some("after")], "{results:?}");
    assert_eq!(results[1].json()["result"], json!(4));
    assert_eq!(letters_then.len(), 1, "one letter only: {letters_then:?}");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some("big"));
    assert_eq!(letter.header("stagehost-error-kind"), "produce-failed");
    assert!(
        letter
            .header("stagehost-error-reason")
            .contains("producing an output failed"),
        "{:?}",
        letter.headers
    );
    assert_eq!(letter.json()["pad"].as_str().map(str::len), Some(3_000));
}
