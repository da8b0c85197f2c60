//! Stateful handlers in Python and JavaScript against the real broker: the
//! `running-total-py` (componentize-py) and `running-total-js`
//! (componentize-js) components keep a total per account in their stage's
//! state through the world's `state` import, as the Rust `running-total`
//! does (host/tests/stateful.rs). For each, an exactly-once stage on fresh
//! topics handles 200 amounts, `{"account": ACCOUNT, "amount": N}` keyed by
//! the account, over 10 accounts; a `read_committed` reader must see one
//! output per amount, each account's counting 1, 2, 3, ... with running
//! sums. Values keyed by an account but without a valid `account` field
//! must be dead-lettered (`invalid-input`) and count for nothing: the
//! account is the value's field, not the key. The host is then stopped with
//! SIGTERM and started again, and 100 more amounts must carry on from the
//! restored totals.
//!
//! `scripts/build-foreign-plugins.sh` (run by `make plugins`) builds the two
//! components. Each is a whole language runtime, which the host compiles on
//! one thread the first time it loads it (tens of seconds; the restart reads
//! the compile cache).

mod common;

use common::numbered::HostProcess;
use common::{brokers, create_topic, plugin, read, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 2;
const ACCOUNTS: u64 = 10;
const FIRST_RUN: u64 = 200;
const SECOND_RUN: u64 = 100;
/// Longest wait for the host to make the progress a step needs: generous,
/// as in foreign_handlers.rs, because the first start compiles a 12 to 18 MB
/// component, on one thread, on a machine that may be busy with other tests.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(420);

/// The account and amount of input number `index` (amounts -10 to 10).
fn amount(index: u64) -> (String, i64) {
    (
        format!("account-{:02}", index % ACCOUNTS),
        (index * 37 % 21) as i64 - 10,
    )
}

/// Per account, the amounts of inputs `0..count`, in order.
fn expected_amounts(count: u64) -> BTreeMap<String, Vec<i64>> {
    let mut amounts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for index in 0..count {
        let (account, amount) = amount(index);
        amounts.entry(account).or_default().push(amount);
    }
    amounts
}

/// An exactly-once stage running `component` with `state: {}`, on fresh topics.
struct Pipeline {
    input: String,
    output: String,
    dead_letter: String,
    yaml: String,
}

impl Pipeline {
    async fn new(component: &str) -> Self {
        plugin("wasm32-wasip2", component);
        let (input, output, dead_letter) =
            (unique("amounts"), unique("totals"), unique("totals-dlq"));
        create_topic(&input, PARTITIONS).await;
        create_topic(&output, PARTITIONS).await;
        let yaml = format!(
            r#"
state_dir: {state_dir}
kafka:
  brokers: {brokers}
  group: {group}
  delivery: exactly-once
  transactions:
    id: {txn}
    commit_interval_ms: 100
  consumer:
    session.timeout.ms: 6000
    heartbeat.interval.ms: 1000
  topics:
    partitions: {PARTITIONS}
admin:
  listen: 127.0.0.1:0
handlers:
  running-total:
    path: target/wasm32-wasip2/release/{component}.wasm
stages:
  - name: totals
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: running-total
    state: {{}}
"#,
            state_dir = std::env::temp_dir()
                .join(unique("stagehost-state"))
                .display(),
            brokers = brokers(),
            group = unique("totals-group"),
            txn = unique("totals-txn"),
        );
        Self {
            input,
            output,
            dead_letter,
            yaml,
        }
    }
}

/// Sends inputs `from..to`, `{"account": ACCOUNT, "amount": N}` keyed by the
/// account, and waits for their acks.
fn send_amounts(topic: &str, from: u64, to: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for index in from..to {
        let (account, amount) = amount(index);
        let value = serde_json::json!({"account": account, "amount": amount}).to_string();
        let mut record = BaseRecord::to(topic).key(&account).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Values without a valid `account`, each keyed by an account that has
/// amounts: the handler must dead-letter them, whatever the key.
const INVALID: [&str; 3] = [
    r#"{"amount": 1000}"#,
    r#"{"account": "", "amount": 1000}"#,
    r#"{"account": 7, "amount": 1000}"#,
];

/// Sends `INVALID`, keyed by account 0, and waits for their acks.
fn send_invalid(topic: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let (account, _) = amount(0);
    for value in INVALID {
        producer
            .send(BaseRecord::to(topic).key(&account).payload(value))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Asserts `INVALID` came to the dead-letter topic as `invalid-input`.
fn assert_invalid_dead_lettered(dead_letter: &str) {
    let letters = tokio::runtime::Handle::current().block_on(read(
        dead_letter,
        INVALID.len(),
        PROGRESS_TIMEOUT,
        Duration::from_secs(1),
    ));
    let mut values: Vec<String> = letters
        .iter()
        .map(|letter| {
            assert_eq!(
                letter.header("stagehost-error-kind"),
                "invalid-input",
                "{letter:?}"
            );
            assert!(
                letter
                    .header("stagehost-error-reason")
                    .contains("\"account\" must be a non-empty string"),
                "{letter:?}"
            );
            String::from_utf8_lossy(letter.value.as_deref().unwrap_or_default()).into_owned()
        })
        .collect();
    values.sort();
    let mut expected: Vec<String> = INVALID.iter().map(|value| value.to_string()).collect();
    expected.sort();
    assert_eq!(values, expected, "the dead letters");
}

/// Reads `topic` from the beginning, `read_committed`, until at least
/// `count` outputs arrived and every partition is at its end; returns
/// them per account, in partition order. Fails with the host's log when
/// that takes longer than `PROGRESS_TIMEOUT`.
fn read_outputs(topic: &str, count: usize, host: &HostProcess) -> BTreeMap<String, Vec<Value>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("totals-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut outputs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut read = 0;
    let mut at_end = [false; PARTITIONS as usize];
    let started = Instant::now();
    while read < count || !at_end.iter().all(|end| *end) {
        assert!(
            started.elapsed() < PROGRESS_TIMEOUT,
            "{read} of {count} outputs after {PROGRESS_TIMEOUT:?}; log:\n{}",
            host.log()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => at_end[partition as usize] = true,
            Some(Err(err)) => panic!("reading {topic}: {err}"),
            Some(Ok(message)) => {
                at_end[message.partition() as usize] = false;
                let value: Value = serde_json::from_slice(message.payload().unwrap_or_default())
                    .unwrap_or_else(|err| {
                        panic!("an output that is not JSON ({err}): {message:?}")
                    });
                let account = value["account"]
                    .as_str()
                    .expect("outputs name their account");
                assert_eq!(
                    message.key(),
                    Some(account.as_bytes()),
                    "an output keeps its input's key: {value}"
                );
                outputs.entry(account.to_string()).or_default().push(value);
                read += 1;
            }
        }
    }
    outputs
}

/// Asserts the outputs are exactly one per input `0..count`, each account's
/// counting up by one with running sums of its amounts.
fn assert_exact(outputs: &BTreeMap<String, Vec<Value>>, count: u64) {
    let expected = expected_amounts(count);
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "accounts with outputs"
    );
    for (account, amounts) in &expected {
        let got = &outputs[account];
        assert_eq!(got.len(), amounts.len(), "outputs of {account}: {got:?}");
        let mut total = 0;
        for (index, (output, amount)) in got.iter().zip(amounts).enumerate() {
            total += amount;
            assert_eq!(output["count"], index as u64 + 1, "{account}: {got:?}");
            assert_eq!(output["amount"], *amount, "{account}: {got:?}");
            assert_eq!(output["total"], total, "{account}: {got:?}");
        }
    }
}

/// 200 amounts, a SIGTERM and a restart, 100 more: the totals run on.
async fn totals_survive_a_restart(component: &'static str) {
    let pipeline = Pipeline::new(component).await;
    tokio::task::spawn_blocking(move || {
        let mut host = HostProcess::start(&pipeline.yaml);
        host.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
        send_invalid(&pipeline.input);
        send_amounts(&pipeline.input, 0, FIRST_RUN);
        read_outputs(&pipeline.output, FIRST_RUN as usize, &host);
        assert_invalid_dead_lettered(&pipeline.dead_letter);
        assert!(
            host.stop("TERM"),
            "SIGTERM ends the host; log:\n{}",
            host.log()
        );
        // Stopped: everything it produced is committed, so this is all.
        assert_exact(&read_outputs(&pipeline.output, 0, &host), FIRST_RUN);
        let restores = host.log().matches("state caught up").count();
        assert!(restores > 0, "no `state caught up`; log:\n{}", host.log());

        // The group's committed offsets make the restarted host pick up
        // these wherever its start is when they arrive.
        host.restart();
        send_amounts(&pipeline.input, FIRST_RUN, FIRST_RUN + SECOND_RUN);
        read_outputs(&pipeline.output, (FIRST_RUN + SECOND_RUN) as usize, &host);
        assert!(
            host.stop("TERM"),
            "SIGTERM ends the host; log:\n{}",
            host.log()
        );
        assert_exact(
            &read_outputs(&pipeline.output, 0, &host),
            FIRST_RUN + SECOND_RUN,
        );
        let log = host.log();
        assert!(
            log.matches("state caught up").count() > restores,
            "the second start restores the state too; log:\n{log}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn python_running_total_keeps_state_across_a_restart() {
    totals_survive_a_restart("running_total_py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_running_total_keeps_state_across_a_restart() {
    totals_survive_a_restart("running_total_js").await;
}
