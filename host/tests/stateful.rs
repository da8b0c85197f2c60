//! Stateful handlers against the real broker: the `running-total` handler
//! keeps a total per account in its stage's state. Amounts for 100 accounts
//! go through a 4-partition topic while the `host` process is killed with
//! SIGKILL at random points and started again; in exactly-once mode a
//! `read_committed` reader must then see every amount's output once, each
//! account's outputs counting 1, 2, 3, ... with totals that are the sums of
//! that account's amounts so far: the state is exactly the effect of the
//! committed inputs. At least once, nothing is lost. Also: the state
//! directory deleted between runs is restored from the changelog; unkeyed
//! messages and messages past the state limits are dead letters with their
//! kind; the admin API reads an entry.

mod common;

use common::numbered::{HostProcess, kill_points};
use common::{brokers, create_topic, http, read, unique};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
const ACCOUNTS: u64 = 100;
/// Longest wait for the host to make the progress a step needs.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(240);

/// One pipeline's topics and where its host keeps its state.
struct Setup {
    input: String,
    output: String,
    dead_letter: String,
    group: String,
    state_dir: PathBuf,
}

impl Setup {
    async fn new() -> Self {
        let setup = Self {
            input: unique("amounts"),
            output: unique("totals"),
            dead_letter: unique("totals-dlq"),
            group: unique("totals-group"),
            state_dir: std::env::temp_dir().join(unique("stagehost-state")),
        };
        create_topic(&setup.input, PARTITIONS).await;
        create_topic(&setup.output, PARTITIONS).await;
        setup
    }

    /// The running-total pipeline in `delivery` mode; `limits` is YAML for
    /// the handler's `limits:` (indented by four spaces), or empty.
    fn yaml(&self, delivery: &str, limits: &str) -> String {
        self.yaml_with(
            delivery,
            limits,
            &self.state_dir,
            "target/wasm32-wasip2/release/running_total.wasm",
        )
    }

    /// [`Setup::yaml`] with the state in `state_dir` and the handler at `handler`.
    fn yaml_with(
        &self,
        delivery: &str,
        limits: &str,
        state_dir: &std::path::Path,
        handler: &str,
    ) -> String {
        format!(
            r#"
state_dir: {state_dir}
kafka:
  brokers: {brokers}
  group: {group}
  delivery: {delivery}
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
    path: {handler}
{limits}
stages:
  - name: totals
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: running-total
    state: {{}}
"#,
            state_dir = state_dir.display(),
            brokers = brokers(),
            group = self.group,
            txn = unique("totals-txn"),
            input = self.input,
            output = self.output,
            dead_letter = self.dead_letter,
        )
    }
}

/// The amount of input number `index` (1 to 9) and its account.
fn amount(index: u64) -> (String, i64) {
    (
        format!("account-{:03}", index % ACCOUNTS),
        (index * 7 % 9 + 1) as i64,
    )
}

/// Sends inputs `from..to` (keyed by account), flushed.
fn send_amounts(topic: &str, from: u64, to: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for index in from..to {
        let (account, amount) = amount(index);
        let value = format!(r#"{{"account": "{account}", "amount": {amount}}}"#);
        loop {
            match producer.send(BaseRecord::to(topic).key(&account).payload(&value)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every output of the stage, as a read_committed reader sees them, in
/// partition order: per account its outputs in order.
struct Outputs {
    seen: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    count: Arc<AtomicUsize>,
    reading: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Outputs {
    fn start(topic: &str) -> Self {
        let seen: Arc<Mutex<BTreeMap<String, Vec<Value>>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let reading = Arc::new(AtomicBool::new(true));
        let reader = {
            let (seen, count, reading, topic) = (
                seen.clone(),
                count.clone(),
                reading.clone(),
                topic.to_string(),
            );
            std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", brokers())
                    .set("group.id", unique("totals-reader"))
                    .set("enable.auto.commit", "false")
                    .set("isolation.level", "read_committed")
                    .create()
                    .unwrap();
                let mut assignment = TopicPartitionList::new();
                for partition in 0..PARTITIONS {
                    assignment
                        .add_partition_offset(&topic, partition, Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&assignment).unwrap();
                while reading.load(Ordering::Relaxed) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(20)) else {
                        continue;
                    };
                    let value: Value =
                        serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
                    let account = value["account"].as_str().unwrap().to_string();
                    seen.lock().unwrap().entry(account).or_default().push(value);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self {
            seen,
            count,
            reading,
            reader: Some(reader),
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `count` outputs were read; fails with the host's log if
    /// the host stops or `PROGRESS_TIMEOUT` passes.
    fn wait_for(&self, count: usize, host: &HostProcess) {
        let started = Instant::now();
        while self.count() < count {
            assert!(
                started.elapsed() < PROGRESS_TIMEOUT,
                "{} of {count} outputs after {PROGRESS_TIMEOUT:?}; log:\n{}",
                self.count(),
                host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> BTreeMap<String, Vec<Value>> {
        self.reading.store(false, Ordering::Relaxed);
        self.reader.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Waits until the running host process has started (logged that it runs).
fn wait_for_start(host: &HostProcess) {
    host.wait_for_log_since_start("stagehost running", PROGRESS_TIMEOUT);
}

/// Waits until the host's log shows it was assigned at least one partition.
fn wait_for_partitions(host: &HostProcess) {
    let started = Instant::now();
    while !host
        .log()
        .lines()
        .any(|line| line.contains("partitions assigned") && !line.contains("partitions=[]"))
    {
        assert!(
            started.elapsed() < PROGRESS_TIMEOUT,
            "no partitions; log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// Asserts the outputs are exactly one per input, each account's counting
/// up by one with running sums of its amounts.
fn assert_exact(outputs: &BTreeMap<String, Vec<Value>>, count: u64) {
    let expected = expected_amounts(count);
    assert_eq!(outputs.len(), expected.len(), "accounts with outputs");
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

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_state_is_exact_through_three_sigkills() {
    let setup = Setup::new().await;
    const COUNT: u64 = 50_000;
    let yaml = setup.yaml("exactly-once", "");
    let report = tokio::task::spawn_blocking(move || {
        let outputs = Outputs::start(&setup.output);
        let mut host = HostProcess::start(&yaml);
        host.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
        send_amounts(&setup.input, 0, COUNT);
        let points = kill_points(3);
        println!("SIGKILL at {points:.3?} of {COUNT} outputs");
        for point in points {
            let target =
                ((point * COUNT as f64) as usize).max(outputs.count() + COUNT as usize / 50);
            if target >= COUNT as usize {
                break;
            }
            outputs.wait_for(target, &host);
            host.stop("KILL");
            println!("killed at {} outputs", outputs.count());
            host.restart();
        }
        outputs.wait_for(COUNT as usize, &host);
        // SIGTERM only once the last start has its signal handlers.
        wait_for_start(&host);
        assert!(
            host.stop("TERM"),
            "SIGTERM ends the host; log:\n{}",
            host.log()
        );
        let log = host.log();
        // A moment for anything wrongly produced late to show up.
        std::thread::sleep(Duration::from_secs(2));
        (outputs.finish(), log)
    })
    .await
    .unwrap();
    let (outputs, log) = report;
    assert!(log.contains("state caught up"), "{log}");
    assert_exact(&outputs, COUNT);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_state_loses_nothing_through_sigkills() {
    let setup = Setup::new().await;
    const COUNT: u64 = 20_000;
    let yaml = setup.yaml("at-least-once", "");
    let outputs = tokio::task::spawn_blocking(move || {
        let outputs = Outputs::start(&setup.output);
        let mut host = HostProcess::start(&yaml);
        host.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
        send_amounts(&setup.input, 0, COUNT);
        for point in kill_points(2) {
            outputs.wait_for((point * COUNT as f64) as usize, &host);
            host.stop("KILL");
            host.restart();
        }
        wait_for_start(&host);
        outputs.wait_for(COUNT as usize, &host);
        // Every input is handled at least once: each account's last count
        // reaches its number of inputs.
        let expected = expected_amounts(COUNT);
        let started = Instant::now();
        loop {
            let done = {
                let seen = outputs.seen.lock().unwrap();
                expected.iter().all(|(account, amounts)| {
                    seen.get(account)
                        .and_then(|got| got.last())
                        .is_some_and(|last| last["count"].as_u64().unwrap() >= amounts.len() as u64)
                })
            };
            if done {
                break;
            }
            assert!(
                started.elapsed() < PROGRESS_TIMEOUT,
                "counts short; log:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            host.stop("TERM"),
            "SIGTERM ends the host; log:\n{}",
            host.log()
        );
        outputs.finish()
    })
    .await
    .unwrap();
    let inputs = expected_amounts(COUNT);
    let produced: usize = outputs.values().map(Vec::len).sum();
    println!(
        "at-least-once: {produced} outputs for {COUNT} inputs ({} handled again after the kills)",
        produced - COUNT as usize
    );
    for (account, amounts) in &inputs {
        let got = &outputs[account];
        assert!(
            got.len() >= amounts.len(),
            "{account}: {} outputs for {} inputs",
            got.len(),
            amounts.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn state_comes_back_from_the_changelog_and_bad_messages_are_dead_letters() {
    let setup = Setup::new().await;
    let yaml = setup.yaml(
        "exactly-once",
        "    limits:\n      state_bytes: 4096\n      state_writes: 1",
    );
    let state_dir = setup.state_dir.clone();
    let (input, output, dead_letter) = (
        setup.input.clone(),
        setup.output.clone(),
        setup.dead_letter.clone(),
    );
    // First run: 1000 amounts, then a clean stop.
    let outputs = Outputs::start(&output);
    let mut host = HostProcess::start(&yaml);
    host.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
    send_amounts(&input, 0, 1000);
    tokio::task::block_in_place(|| outputs.wait_for(1000, &host));
    let admin = host.admin_address(Duration::from_secs(10));
    let (status, body) = http(admin, "GET", "/state/totals/account-007", None, b"").await;
    assert_eq!(status, 200, "{body}");
    let entry: Value = serde_json::from_str(&body).unwrap();
    let saved: Value = serde_json::from_str(entry["value"].as_str().unwrap()).unwrap();
    assert_eq!(saved["count"], 10, "{entry}");
    let (status, _) = http(admin, "GET", "/state/totals/no-such-account", None, b"").await;
    assert_eq!(status, 404);
    assert!(host.stop("TERM"));

    // A clean stop left checkpoints at the changelog's end: the next start
    // reads nothing of it.
    let before = host.log().len();
    host.restart();
    wait_for_start(&host);
    send_amounts(&input, 1000, 1100);
    tokio::task::block_in_place(|| outputs.wait_for(1100, &host));
    let restart_log = host.log()[before..].to_string();
    let catch_ups: Vec<&str> = restart_log
        .lines()
        .filter(|line| line.contains("state caught up"))
        .collect();
    assert!(!catch_ups.is_empty(), "{restart_log}");
    assert!(
        catch_ups.iter().all(|line| line.contains(" records=0 ")),
        "{catch_ups:#?}"
    );
    assert!(host.stop("TERM"));

    // The local state is lost: the next start restores it from the changelog.
    std::fs::remove_dir_all(&state_dir).unwrap();
    host.restart();
    wait_for_start(&host);
    send_amounts(&input, 1100, 2000);
    // Unkeyed, and a key so long that one entry passes 4096 bytes.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<(), _>::to(&input).payload(r#"{"amount": 1}"#))
        .unwrap();
    let long_key = "k".repeat(5000);
    let long = format!(r#"{{"account": "{long_key}", "amount": 1}}"#);
    producer
        .send(BaseRecord::to(&input).key(&long_key).payload(&long))
        .unwrap();
    // No account: invalid input, and no state changes.
    producer
        .send(
            BaseRecord::to(&input)
                .key("account-001")
                .payload(r#"{"amount": 1}"#),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    tokio::task::block_in_place(|| outputs.wait_for(2000, &host));
    let letters = read(
        &dead_letter,
        3,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    let kinds: Vec<&str> = letters
        .iter()
        .map(|letter| letter.header("stagehost-error-kind"))
        .collect();
    assert!(kinds.contains(&"missing-key"), "{kinds:?}");
    assert!(kinds.contains(&"state-limit"), "{kinds:?}");
    assert!(kinds.contains(&"invalid-input"), "{kinds:?}");
    assert!(host.stop("TERM"), "log:\n{}", host.log());
    let log = host.log();
    assert!(log.contains("limits.state_bytes"), "{log}");
    let outputs = outputs.finish();
    assert!(!outputs.contains_key(&long_key));
    assert_exact(&outputs, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_the_state_and_the_survivor_takes_over_a_killed_one() {
    let setup = Setup::new().await;
    const COUNT: u64 = 20_000;
    let handler = "target/wasm32-wasip2/release/running_total.wasm";
    let first = setup.yaml_with("exactly-once", "", &setup.state_dir, handler);
    let second_dir = std::env::temp_dir().join(unique("stagehost-state"));
    let second = setup.yaml_with("exactly-once", "", &second_dir, handler);
    let outputs = tokio::task::spawn_blocking(move || {
        let outputs = Outputs::start(&setup.output);
        let mut survivor = HostProcess::start(&first);
        survivor.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
        let mut killed = HostProcess::start(&second);
        killed.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
        // Both hold partitions before the amounts come.
        wait_for_partitions(&killed);
        send_amounts(&setup.input, 0, COUNT);
        outputs.wait_for(COUNT as usize / 3, &survivor);
        killed.stop("KILL");
        println!("second host killed at {} outputs", outputs.count());
        outputs.wait_for(COUNT as usize, &survivor);
        assert!(survivor.stop("TERM"), "log:\n{}", survivor.log());
        let survivor_log = survivor.log();
        let killed_log = killed.log();
        std::thread::sleep(Duration::from_secs(2));
        (outputs.finish(), survivor_log, killed_log)
    })
    .await
    .unwrap();
    let (outputs, survivor_log, killed_log) = outputs;
    // The killed host had handled some partitions' state: the survivor
    // restored them from the changelog.
    assert!(killed_log.contains("state caught up"), "{killed_log}");
    assert!(
        survivor_log.matches("state caught up").count() > 2,
        "{survivor_log}"
    );
    assert_exact(&outputs, COUNT);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_swap_mid_stream_keeps_the_state() {
    let setup = Setup::new().await;
    const COUNT: u64 = 10_000;
    // The Rust handler is replaced by the Python one, which keeps the same
    // state in the same format.
    let dir = std::env::temp_dir().join(unique("stagehost-swap"));
    std::fs::create_dir_all(&dir).unwrap();
    let served = dir.join("running-total.wasm");
    let release = common::repo_root().join("target/wasm32-wasip2/release");
    std::fs::copy(release.join("running_total.wasm"), &served).unwrap();
    let yaml = setup.yaml_with(
        "exactly-once",
        "",
        &setup.state_dir,
        served.to_str().unwrap(),
    );
    let outputs = tokio::task::spawn_blocking(move || {
        let outputs = Outputs::start(&setup.output);
        let host = HostProcess::start(&yaml);
        host.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
        send_amounts(&setup.input, 0, COUNT / 2);
        outputs.wait_for(COUNT as usize / 4, &host);
        let next = dir.join("next.wasm");
        std::fs::copy(release.join("running_total_py.wasm"), &next).unwrap();
        std::fs::rename(&next, &served).unwrap();
        host.wait_for_log("handler swapped", PROGRESS_TIMEOUT);
        send_amounts(&setup.input, COUNT / 2, COUNT);
        outputs.wait_for(COUNT as usize, &host);
        let mut host = host;
        assert!(host.stop("TERM"), "log:\n{}", host.log());
        std::thread::sleep(Duration::from_secs(1));
        outputs.finish()
    })
    .await
    .unwrap();
    assert_exact(&outputs, COUNT);
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_passes_each_id_once() {
    let input = unique("events");
    let output = unique("unique-events");
    create_topic(&input, PARTITIONS).await;
    create_topic(&output, PARTITIONS).await;
    let yaml = format!(
        r#"
state_dir: {state_dir}
kafka:
  brokers: {brokers}
  group: {group}
handlers:
  dedup:
    path: target/wasm32-wasip2/release/dedup.wasm
stages:
  - name: dedup
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: dedup
    state: {{}}
"#,
        state_dir = std::env::temp_dir()
            .join(unique("stagehost-state"))
            .display(),
        brokers = brokers(),
        group = unique("dedup-group"),
        dead_letter = unique("events-dlq"),
    );
    let mut host = HostProcess::start(&yaml);
    host.wait_for_log("stagehost running", PROGRESS_TIMEOUT);
    // 300 ids, each sent three times: the producer's retries, say.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for copy in 0..3 {
        for id in 0..300 {
            let key = format!("order-{id}");
            let value = format!(r#"{{"id": "{key}", "copy": {copy}}}"#);
            producer
                .send(BaseRecord::to(&input).key(&key).payload(&value))
                .unwrap();
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let received = read(
        &output,
        300,
        Duration::from_secs(120),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(received.len(), 300, "one output per id");
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);
    // The first copy of each id is the one that passes.
    assert!(received.iter().all(|r| r.json()["copy"] == 0));
    assert!(host.stop("TERM"), "log:\n{}", host.log());
}
