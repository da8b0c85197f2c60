//! `host replay CONFIG --stage NAME …` against the real broker. The
//! calculator runs under `host run` over three input partitions and
//! commits its group's offsets; a replay of partition 0 from offset 2 and
//! partition 1 from offset 1, up to a `--to-time` between the fifth and
//! sixth record, writes exactly the outputs of those inputs to a side topic
//! (each naming its input and its would-be topic), counts the one bad
//! request among them as a dead letter without writing it anywhere, and
//! leaves the group's offsets, the live output and the dead-letter topic
//! as they were. Bad requests (a range with no messages among them) exit
//! non-zero with the reason and create nothing; `--handler subtract.wasm`
//! runs that component in place of the stage's routing.

mod common;

use common::numbered::HostProcess;
use common::{
    Received, Topics, brokers, calculator_yaml, create_topic, plugin, producer, read, repo_root,
    report, unique,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(90);
/// Records per input partition.
const PER_PARTITION: i64 = 6;
/// Input partitions.
const PARTITIONS: i32 = 3;

/// `host replay CONFIG --stage calculator ARGS`.
fn replay(config: &Path, args: &[&str]) -> Output {
    replay_stage(config, "calculator", args)
}

fn replay_stage(config: &Path, stage: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("replay")
        .arg(config)
        .args(["--stage", stage])
        .args(args)
        .output()
        .expect("host runs")
}

/// Writes `yaml` with absolute plugin paths to a fresh directory.
fn config_file(yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("stagehost-replay"));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = yaml.replace(
        "path: target/",
        &format!("path: {}/target/", repo_root().display()),
    );
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    config
}

/// Produces one record to a partition with a timestamp and a header, and
/// waits for its acknowledgement.
async fn send_at(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &str,
    timestamp: i64,
) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "trace-id",
        value: Some(key),
    });
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(value)
                .timestamp(timestamp)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(err, _)| err)
        .expect("test message acknowledged");
}

/// The group's committed offset on each of the topic's partitions.
fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut asked = TopicPartitionList::new();
    for partition in 0..partitions {
        asked.add_partition(topic, partition);
    }
    let found = consumer
        .committed_offsets(asked, Duration::from_secs(30))
        .expect("committed offsets read");
    (0..partitions)
        .map(|partition| found.find_partition(topic, partition).unwrap().offset())
        .collect()
}

/// A consumer that reads metadata and watermarks only.
fn inspector() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("inspector"))
        .create()
        .unwrap()
}

/// Whether the topic exists.
fn exists(topic: &str) -> bool {
    let metadata = inspector()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .any(|found| found.name() == topic && found.error().is_none())
}

/// How many records the topic holds (no transactions write there, so each
/// offset is one record).
fn records_in(topic: &str) -> i64 {
    let consumer = inspector();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let found = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic)
        .expect("the topic exists");
    found
        .partitions()
        .iter()
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// A time in ms since the epoch as RFC 3339.
fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// An hour ago, in whole seconds, as ms since the epoch.
fn an_hour_ago() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (now.as_secs() as i64 - 3600) * 1000
}

/// The request at offset `offset` of `partition`: a sum of `x = 100 *
/// partition + offset` and 1, except for a subtraction at 0/3 and a bad
/// operand at 0/4.
fn request(partition: i32, offset: i64) -> String {
    match (partition, offset) {
        (0, 3) => r#"{"operation": "sub", "x": 3, "y": 1}"#.to_string(),
        (0, 4) => r#"{"operation": "sum", "operator_1": "five", "operator_2": "2"}"#.to_string(),
        _ => format!(
            r#"{{"operation": "sum", "x": {}, "y": 1}}"#,
            100 * i64::from(partition) + offset
        ),
    }
}

/// The records of the side topic by the input they replay.
fn by_source(records: &[Received]) -> BTreeMap<String, &Received> {
    let mut sources = BTreeMap::new();
    for record in records {
        let source = record.header("stagehost-replay-of").to_string();
        assert!(
            sources.insert(source.clone(), record).is_none(),
            "{source} replayed twice: {records:?}"
        );
    }
    sources
}

/// The stderr of a command that must fail, with its report.
fn refused(out: &Output) -> (String, String) {
    assert!(!out.status.success(), "expected a refusal: {}", report(out));
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        report(out),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_an_offset_range_gives_exactly_its_outputs_and_leaves_the_group_alone() {
    let topics = Topics::new();
    create_topic(&topics.input, PARTITIONS).await;
    let producer = producer();
    let base = an_hour_ago();
    for partition in 0..PARTITIONS {
        for offset in 0..PER_PARTITION {
            let key = format!("k{partition}-{offset}");
            let value = request(partition, offset);
            let at = base + offset * 1000;
            send_at(&producer, &topics.input, partition, &key, &value, at).await;
        }
    }
    let mut host = HostProcess::start(&calculator_yaml(&topics, 1));
    let outputs = (PER_PARTITION * i64::from(PARTITIONS) - 1) as usize;
    read(&topics.output, outputs, WAIT, Duration::ZERO).await;
    read(&topics.dead_letter, 1, WAIT, Duration::ZERO).await;
    // The drain commits every offset the host handled.
    assert!(host.stop("TERM"), "{}", host.log());
    let group = format!("{}.calculator", topics.group);
    let before = committed(&group, &topics.input, PARTITIONS);
    assert_eq!(
        before,
        vec![Offset::Offset(PER_PARTITION); PARTITIONS as usize]
    );

    let side = unique("replayed");
    // Up to the first record at or after 4.5 s: offsets below 5.
    let to_time = rfc3339(base + 4500);
    let out = replay(
        host.config_path(),
        &[
            "--from-offset",
            "0:2",
            "1:1",
            "--to-time",
            &to_time,
            "--to-topic",
            &side,
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", report(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    assert_eq!(summary["messages"], 7, "{summary}");
    assert_eq!(summary["outputs"], 6, "{summary}");
    assert_eq!(
        summary["dead_letters"],
        serde_json::json!({"invalid-input": 1})
    );
    let letter = &summary["first_dead_letters"][0];
    assert_eq!(letter["source"], format!("{}/0/4", topics.input));
    assert_eq!(letter["handler"], "add");
    assert!(
        letter["reason"].as_str().unwrap().contains("operator_1"),
        "{letter}"
    );
    assert_eq!(
        summary["ranges"],
        serde_json::json!([
            {"partition": 0, "start": 2, "end": 5},
            {"partition": 1, "start": 1, "end": 5},
        ])
    );

    let records = read(&side, 6, WAIT, Duration::ZERO).await;
    assert_eq!(records_in(&side), 6, "exactly the range's outputs");
    let sources = by_source(&records);
    let expected: Vec<(i32, i64, i64, &str)> = vec![
        (0, 2, 3, "add"),
        (0, 3, 2, "subtract"),
        (1, 1, 102, "add"),
        (1, 2, 103, "add"),
        (1, 3, 104, "add"),
        (1, 4, 105, "add"),
    ];
    let wanted: Vec<String> = expected
        .iter()
        .map(|(partition, offset, ..)| format!("{}/{partition}/{offset}", topics.input))
        .collect();
    assert_eq!(
        sources.keys().cloned().collect::<Vec<_>>(),
        wanted,
        "{records:?}"
    );
    for (partition, offset, result, handler) in expected {
        let record = sources[&format!("{}/{partition}/{offset}", topics.input)];
        assert_eq!(record.json()["result"], result, "{record:?}");
        let key = format!("k{partition}-{offset}");
        assert_eq!(record.key.as_deref(), Some(key.as_str()));
        assert_eq!(record.header("trace-id"), key);
        assert_eq!(record.header("stagehost-handler"), handler);
        assert_eq!(record.header("stagehost-handler-version").len(), 12);
        assert_eq!(record.header("stagehost-replay-topic"), topics.output);
    }

    assert_eq!(
        committed(&group, &topics.input, PARTITIONS),
        before,
        "the stage's group is untouched"
    );
    assert_eq!(records_in(&topics.output), outputs as i64);
    assert_eq!(records_in(&topics.dead_letter), 1, "no dead letter written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_exit_non_zero_with_the_reason_and_create_nothing() {
    let topics = Topics::new();
    create_topic(&topics.input, 1).await;
    let producer = producer();
    let base = an_hour_ago();
    for offset in 0..3 {
        let value = request(1, offset);
        send_at(
            &producer,
            &topics.input,
            0,
            "k",
            &value,
            base + offset * 1000,
        )
        .await;
    }
    let yaml = calculator_yaml(&topics, 1);
    let config = config_file(&yaml);
    let side = unique("replayed");

    // A range with no messages: from the end, from a time after the last
    // record, and to a time before the first.
    let (stderr, all) = refused(&replay(
        &config,
        &["--from-offset", "0:3", "--to-topic", &side],
    ));
    assert!(
        stderr.contains("the range has no messages")
            && stderr.contains("partition 0 has none from offset 3 up to its end at offset 3"),
        "{all}"
    );
    let (stderr, all) = refused(&replay(
        &config,
        &["--from-time", "2m ago", "--to-topic", &side],
    ));
    assert!(stderr.contains("the range has no messages"), "{all}");
    let before_all = rfc3339(base - 60_000);
    let (stderr, all) = refused(&replay(
        &config,
        &[
            "--from-offset",
            "0:0",
            "--to-time",
            &before_all,
            "--to-topic",
            &side,
        ],
    ));
    assert!(
        stderr.contains("the range has no messages") && stderr.contains("at or after"),
        "{all}"
    );

    let (stderr, all) = refused(&replay(
        &config,
        &["--from-offset", "0:0", "--to-topic", &topics.input],
    ));
    assert!(stderr.contains("would feed itself"), "{all}");
    let (stderr, all) = refused(&replay(
        &config,
        &["--from-offset", "0:0", "4:0", "--to-topic", &side],
    ));
    assert!(stderr.contains("has no partition 4"), "{all}");
    let (stderr, all) = refused(&replay(
        &config,
        &["--from-offset", "0-1", "--to-topic", &side],
    ));
    assert!(stderr.contains("is not PARTITION:OFFSET"), "{all}");
    let (stderr, all) = refused(&replay(
        &config,
        &[
            "--from-offset",
            "0:0",
            "--from-time",
            "1h",
            "--to-topic",
            &side,
        ],
    ));
    assert!(stderr.contains("cannot be used with"), "{all}");
    let (stderr, all) = refused(&replay(&config, &["--to-topic", &side]));
    assert!(
        stderr.contains("--from-offset") && stderr.contains("required"),
        "{all}"
    );
    let (stderr, all) = refused(&replay_stage(
        &config,
        "nope",
        &["--from-offset", "0:0", "--to-topic", &side],
    ));
    assert!(
        stderr.contains("has no stage `nope` (it has: calculator)"),
        "{all}"
    );
    let stateful = config_file(&format!("{yaml}    state: {{}}\n"));
    let (stderr, all) = refused(&replay(
        &stateful,
        &["--from-offset", "0:0", "--to-topic", &side],
    ));
    assert!(stderr.contains("keeps state"), "{all}");

    assert!(!exists(&side), "a refused replay creates nothing");
    assert_eq!(records_in(&topics.input), 3);
    assert_eq!(
        committed(&format!("{}.calculator", topics.group), &topics.input, 1),
        [Offset::Invalid],
        "nothing committed for the stage's group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_another_handler_runs_it_on_every_message() {
    let topics = Topics::new();
    create_topic(&topics.input, 1).await;
    let producer = producer();
    let base = an_hour_ago();
    for offset in 0..3 {
        let value = format!(r#"{{"operation": "sum", "x": {}, "y": 3}}"#, 10 + offset);
        let key = format!("k{offset}");
        send_at(
            &producer,
            &topics.input,
            0,
            &key,
            &value,
            base + offset * 1000,
        )
        .await;
    }
    let config = config_file(&calculator_yaml(&topics, 1));
    let side = unique("replayed");
    let subtract = plugin("wasm32-wasip2", "subtract");
    let out = replay(
        &config,
        &[
            "--from-offset",
            "0:0",
            "--handler",
            subtract.to_str().unwrap(),
            "--to-topic",
            &side,
        ],
    );
    assert!(out.status.success(), "{}", report(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.starts_with("replayed stage `calculator` with subtract in place of its handlers"),
        "{}",
        report(&out)
    );
    assert!(summary.contains("messages:     3\n"), "{summary}");
    assert!(summary.contains("outputs:      3\n"), "{summary}");
    assert!(summary.contains("dead letters: 0"), "{summary}");

    let records = read(&side, 3, WAIT, Duration::ZERO).await;
    assert_eq!(records_in(&side), 3);
    let sources = by_source(&records);
    for offset in 0..3 {
        let record = sources[&format!("{}/0/{offset}", topics.input)];
        assert_eq!(record.json()["result"], 7 + offset, "{record:?}");
        assert_eq!(record.header("stagehost-handler"), "subtract");
        assert_eq!(record.header("stagehost-replay-topic"), topics.output);
    }
}
