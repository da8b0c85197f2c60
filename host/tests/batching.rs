//! Batches across the sandbox boundary (`handle-batch`), on the real broker:
//! the same input stream gives byte-identical outputs and dead letters
//! whether a stage calls `handle` per message (`max_batch: 1`) or hands its
//! handlers what it has already fetched, in at-least-once and exactly-once
//! mode, with poison messages, traps, timeouts, memory limits and transient
//! errors inside batches; a hot swap in the middle of a batched stream
//! switches each partition from one version to the other once, losing
//! nothing. Without Kafka: `handle-batch` answers per message, and a batch
//! that traps fails as a whole.

mod common;

use common::{Received, Topics, config_from, create_topic, http, producer, read, send, unique};
use serde_json::{Value, json};
use stagehost::config::Limits;
use stagehost::handlers::bindings::{MessageRef, Output};
use stagehost::handlers::{HandlerFailure, HandlerSpec, Sandbox, run_guest};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTITIONS: i32 = 2;
/// Messages in the compared stream.
const MESSAGES: u64 = 1000;

/// The `i`th message of the compared stream: mostly echoes for two handlers
/// (`a` and `b`, both the hostile test component), with a trap, a transient
/// error, a memory limit, a timeout, an unknown route and invalid JSON mixed
/// in.
fn stream_value(i: u64) -> String {
    let via = if i.is_multiple_of(3) { "b" } else { "a" };
    match i % 100 {
        7 => json!({"via": "a", "do": "panic", "i": i}).to_string(),
        23 => json!({"via": via, "do": "transient", "i": i}).to_string(),
        59 => json!({"via": "b", "do": "allocate", "i": i}).to_string(),
        77 => json!({"via": "zzz", "i": i}).to_string(),
        91 => format!("{{\"via\": \"a\", \"i\": {i}"),
        _ if i % 250 == 41 => json!({"via": "a", "do": "sleep", "ms": 5000, "i": i}).to_string(),
        _ => json!({"via": via, "i": i, "pad": "x".repeat((i % 40) as usize)}).to_string(),
    }
}

fn yaml(topics: &Topics, delivery: &str, max_batch: Option<usize>) -> String {
    let hostile = common::plugin("wasm32-wasip2", "hostile");
    let max_batch = max_batch
        .map(|n| format!("    max_batch: {n}\n"))
        .unwrap_or_default();
    format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
  delivery: {delivery}
  transactions:
    id: {txn}
  topics:
    partitions: {PARTITIONS}
admin:
  listen: 127.0.0.1:0
handlers:
  a:
    path: {hostile}
    limits: {{ timeout_ms: 300, memory_mib: 32 }}
  b:
    path: {hostile}
    limits: {{ timeout_ms: 300, memory_mib: 32 }}
stages:
  - name: mixed
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
{max_batch}    retry: {{ max_attempts: 2, initial_backoff_ms: 1, max_backoff_ms: 1 }}
    route:
      field: via
      to: {{ a: a, b: b }}
"#,
        brokers = common::brokers(),
        group = topics.group,
        txn = unique("txn"),
        hostile = hostile.display(),
        input = topics.input,
        output = topics.output,
        dead_letter = topics.dead_letter,
    )
}

/// A record as compared across runs: where it went, its key, value and
/// every header (its offset and timestamp left out).
type Shape = (
    i32,
    Option<String>,
    Option<Vec<u8>>,
    BTreeMap<String, String>,
);

fn shapes(mut records: Vec<Received>) -> Vec<Shape> {
    records.sort_by_key(|record| (record.partition, record.offset));
    records
        .into_iter()
        .map(|record| (record.partition, record.key, record.value, record.headers))
        .collect()
}

/// The sum of a counter's series over every label set, from `/metrics`.
fn metric_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the stage over the preloaded `input` into fresh output topics and
/// returns its outputs, its dead letters, and its mean batch size (0 when it
/// made no batch call).
async fn run_over(
    input: &str,
    delivery: &str,
    max_batch: Option<usize>,
    expected_outputs: usize,
    expected_letters: usize,
) -> (Vec<Shape>, Vec<Shape>, f64) {
    let topics = Topics {
        input: input.to_string(),
        ..Topics::new()
    };
    let admin = Arc::new(Mutex::new(None));
    let slot = admin.clone();
    let host = common::RunningHost::start_with(
        config_from(yaml(&topics, delivery, max_batch)),
        move |ready| *slot.lock().unwrap() = ready.admin,
    );
    let timeout = Duration::from_secs(120);
    let settle = Duration::from_secs(2);
    let outputs = read(&topics.output, expected_outputs, timeout, settle).await;
    let letters = read(&topics.dead_letter, expected_letters, timeout, settle).await;
    let admin = admin.lock().unwrap().expect("the admin port listens");
    let (status, metrics) = http(admin, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    host.stop().await.expect("the host stops cleanly");
    let batches = metric_total(&metrics, "stagehost_handler_batches_total");
    let batched = metric_total(&metrics, "stagehost_handler_batched_messages_total");
    let mean = if batches > 0.0 {
        batched / batches
    } else {
        0.0
    };
    assert_eq!(outputs.len(), expected_outputs, "{delivery} {max_batch:?}");
    assert_eq!(letters.len(), expected_letters, "{delivery} {max_batch:?}");
    (shapes(outputs), shapes(letters), mean)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_and_unbatched_runs_give_byte_identical_outputs_and_dead_letters() {
    let input = unique("mixed-requests");
    create_topic(&input, PARTITIONS).await;
    let producer = producer();
    let mut expected_letters = 0;
    let mut sent = Vec::new();
    for i in 0..MESSAGES {
        let value = stream_value(i);
        let echoed = serde_json::from_str::<Value>(&value)
            .ok()
            .is_some_and(|v| v.get("do").is_none() && v["via"] != "zzz");
        if !echoed {
            expected_letters += 1;
        }
        let key = format!("k{}", i % 16);
        let (producer, input) = (&producer, &input);
        sent.push(async move { send(producer, input, Some(&key), value.as_bytes(), &[]).await });
    }
    futures::future::join_all(sent).await;
    let expected_outputs = MESSAGES as usize - expected_letters;

    let (outputs, letters, mean) = run_over(
        &input,
        "at-least-once",
        Some(1),
        expected_outputs,
        expected_letters,
    )
    .await;
    assert_eq!(mean, 0.0, "max_batch: 1 makes no batch call");
    let kinds: BTreeMap<&str, usize> = letters.iter().fold(BTreeMap::new(), |mut kinds, l| {
        *kinds
            .entry(l.3["stagehost-error-kind"].as_str())
            .or_default() += 1;
        kinds
    });
    for kind in [
        "trap",
        "transient",
        "memory-limit",
        "timeout",
        "unknown-route",
        "invalid-json",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no `{kind}` dead letter: {kinds:?}"
        );
    }
    let transient = letters
        .iter()
        .find(|l| l.3["stagehost-error-kind"] == "transient")
        .unwrap();
    assert!(
        transient.3["stagehost-error-reason"].contains("gave up after 2 attempts"),
        "{:?}",
        transient.3
    );

    for delivery in ["at-least-once", "exactly-once"] {
        let (batched_outputs, batched_letters, mean) =
            run_over(&input, delivery, None, expected_outputs, expected_letters).await;
        // The input was preloaded, so whole batches were already fetched.
        assert!(mean > 1.5, "{delivery}: mean batch of {mean}");
        assert_eq!(batched_letters.len(), letters.len());
        for (batched, alone) in batched_letters.iter().zip(&letters) {
            assert_eq!(batched, alone, "{delivery}: a dead letter differs");
        }
        for (batched, alone) in batched_outputs.iter().zip(&outputs) {
            assert_eq!(batched, alone, "{delivery}: an output differs");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_swap_in_a_batched_stream_switches_each_partition_once() {
    let topics = Topics::new();
    create_topic(&topics.input, PARTITIONS).await;
    let dir = std::env::temp_dir().join(unique("batch-swap"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.wasm");
    std::fs::copy(common::plugin("wasm32-wasip2", "hostile"), &path).unwrap();
    let yaml = format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
  topics:
    partitions: {PARTITIONS}
handlers:
  echo:
    path: {path}
stages:
  - name: swapped
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: echo
"#,
        brokers = common::brokers(),
        group = topics.group,
        path = path.display(),
        input = topics.input,
        output = topics.output,
        dead_letter = topics.dead_letter,
    );
    let reloader = Arc::new(Mutex::new(None));
    let slot = reloader.clone();
    let host = common::RunningHost::start_with(config_from(yaml), move |ready| {
        *slot.lock().unwrap() = Some(ready.reloader)
    });
    let producer = producer();
    let half = 5000;
    let send_range = |range: std::ops::Range<u64>| {
        let producer = producer.clone();
        let input = topics.input.clone();
        async move {
            let sends = range.map(|i| {
                let (producer, input) = (&producer, &input);
                async move {
                    let value = json!({"i": i}).to_string();
                    let key = format!("k{}", i % 16);
                    send(producer, input, Some(&key), value.as_bytes(), &[]).await
                }
            });
            futures::future::join_all(sends).await;
        }
    };
    send_range(0..half).await;
    // Swapped while the first half flows (or once it is done).
    read(&topics.output, 1, Duration::from_secs(60), Duration::ZERO).await;
    let reloader = loop {
        if let Some(reloader) = reloader.lock().unwrap().clone() {
            break reloader;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let other = std::fs::read(common::plugin("wasm32-wasip1", "hostile")).unwrap();
    let swapped = reloader
        .swap("echo", &other, "upload".into())
        .expect("the other build is accepted");
    let new_version = swapped.version().to_string();
    send_range(half..2 * half).await;
    let outputs = read(
        &topics.output,
        2 * half as usize,
        Duration::from_secs(120),
        Duration::from_secs(2),
    )
    .await;
    host.stop().await.expect("the host stops cleanly");
    assert_eq!(
        outputs.len(),
        2 * half as usize,
        "nothing lost, nothing twice"
    );
    let mut by_partition: BTreeMap<i32, Vec<&Received>> = BTreeMap::new();
    for output in &outputs {
        by_partition
            .entry(output.partition)
            .or_default()
            .push(output);
    }
    for (partition, mut records) in by_partition {
        records.sort_by_key(|record| record.offset);
        let versions: Vec<&str> = records
            .iter()
            .map(|record| record.header("stagehost-handler-version"))
            .collect();
        let switches = versions
            .windows(2)
            .filter(|pair| pair[0] != pair[1])
            .count();
        assert!(
            switches <= 1,
            "partition {partition} went back and forth: {switches} switches"
        );
        for record in &records {
            let i = record.json()["i"].as_u64().unwrap();
            if i >= half {
                assert_eq!(
                    record.header("stagehost-handler-version"),
                    new_version,
                    "message {i} was sent after the swap"
                );
            }
        }
    }
}

fn hostile_component(limits: Limits) -> Arc<stagehost::handlers::HandlerComponent> {
    let sandbox = Sandbox::new(false).unwrap();
    let path = common::plugin("wasm32-wasip2", "hostile");
    let spec = HandlerSpec {
        name: "hostile".into(),
        source: path.display().to_string(),
        limits,
        settings: Vec::new(),
    };
    sandbox.load(spec, &std::fs::read(&path).unwrap()).unwrap()
}

fn message(value: &[u8], offset: i64) -> MessageRef<'_> {
    MessageRef {
        topic: "t",
        partition: 0,
        offset,
        key: None,
        value,
        headers: &[],
        timestamp: None,
    }
}

#[test]
fn handle_batch_answers_each_message_and_fails_whole_on_a_trap() {
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let component = hostile_component(limits);
    assert!(component.has_batch(), "the kit exports handle-batch");
    let mut instance = run_guest(component.instantiate()).unwrap();
    assert!(instance.can_batch());
    let values = [
        br#"{"n": 1}"#.to_vec(),
        br#"{"do": "transient"}"#.to_vec(),
        b"not json".to_vec(),
        br#"{"n": 2}"#.to_vec(),
    ];
    let messages: Vec<MessageRef<'_>> = values
        .iter()
        .enumerate()
        .map(|(n, value)| message(value, n as i64))
        .collect();
    let answers = run_guest(instance.handle_batch(&messages)).unwrap();
    assert_eq!(answers.len(), 4);
    let echoed = |answer: &Result<Vec<Output>, HandlerFailure>| -> Value {
        let outputs = answer.as_ref().expect("an echo");
        serde_json::from_slice(&outputs[0].value).unwrap()
    };
    assert_eq!(echoed(&answers[0]), json!({"n": 1}));
    assert_eq!(
        answers[1].as_ref().unwrap_err().kind().as_str(),
        "transient"
    );
    assert_eq!(
        answers[2].as_ref().unwrap_err().kind().as_str(),
        "invalid-input"
    );
    assert_eq!(echoed(&answers[3]), json!({"n": 2}));

    for (poison, kind) in [
        (r#"{"do": "panic"}"#, "trap"),
        (r#"{"do": "loop"}"#, "timeout"),
    ] {
        let mut instance = run_guest(component.instantiate()).unwrap();
        let values = [br#"{"n": 1}"#.to_vec(), poison.as_bytes().to_vec()];
        let messages: Vec<MessageRef<'_>> = values
            .iter()
            .enumerate()
            .map(|(n, value)| message(value, n as i64))
            .collect();
        let failure = run_guest(instance.handle_batch(&messages)).unwrap_err();
        assert_eq!(failure.kind().as_str(), kind, "{failure}");
        assert!(failure.poisons_instance());
    }
}
