//! `host tail` and `host send` against the real broker, as a user runs them:
//! the bytes come back exactly as produced, `--count` gives the newest
//! records, `--partition`, `--offset` and `--format` select and print what
//! they say, headers and partitions go where `send` is told, and a broker
//! that does not answer is one line of error within seconds.

mod common;

use common::{brokers, create_topic, producer, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest any one command may take before the test fails.
const SAFETY: Duration = Duration::from_secs(120);

/// Runs the `host` binary with `stdin` and returns its output; fails the
/// test (and kills the process) after [`SAFETY`].
fn host_with_input(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .env_remove("STAGEHOST_BROKERS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the host binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("writing the host's stdin");
    let pid = child.id();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match output.recv_timeout(SAFETY) {
        Ok(output) => output.expect("waiting for the host"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("`host {}` did not end within {SAFETY:?}", args.join(" "));
        }
    }
}

fn host(args: &[&str]) -> Output {
    host_with_input(args, b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `host tail TOPIC ARGS… --brokers B`, which must succeed; its stdout.
fn tail(topic: &str, args: &[&str]) -> Vec<u8> {
    let brokers = brokers();
    let mut all = vec!["tail", topic];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--brokers", &brokers]);
    let out = host(&all);
    assert!(
        out.status.success(),
        "host {} failed: {}",
        all.join(" "),
        text(&out.stderr)
    );
    out.stdout
}

/// The JSON lines `host tail` printed.
fn json_lines(stdout: &[u8]) -> Vec<Value> {
    text(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

/// One record to produce.
#[derive(Default)]
struct Produce<'a> {
    partition: Option<i32>,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: &'a [(&'a str, &'a [u8])],
    timestamp: Option<i64>,
}

/// Produces `record` and waits for its acknowledgement; returns (partition, offset).
async fn produce(producer: &FutureProducer, topic: &str, record: Produce<'_>) -> (i32, i64) {
    let mut headers = OwnedHeaders::new();
    for (key, value) in record.headers {
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let mut future = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(record.value)
        .headers(headers);
    if let Some(key) = record.key {
        future = future.key(key);
    }
    if let Some(partition) = record.partition {
        future = future.partition(partition);
    }
    if let Some(timestamp) = record.timestamp {
        future = future.timestamp(timestamp);
    }
    let delivery = producer
        .send(future, Timeout::After(Duration::from_secs(30)))
        .await
        .map_err(|(err, _)| err)
        .expect("test record acknowledged");
    (delivery.partition, delivery.offset)
}

/// A record read back with its headers as a list, in order.
#[derive(Debug)]
struct ReadBack {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads `count` records of `topic` from the beginning of every partition
/// (`partitions` of them), keeping each record's header list as it is.
fn read_back(topic: &str, partitions: i32, count: usize) -> Vec<ReadBack> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            started.elapsed() < SAFETY,
            "timed out reading {topic}: {} of {count} records",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("reading the test topic");
        let headers = message
            .headers()
            .map(stagehost::kafka::headers::raw_headers)
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.key_text().into_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        records.push(ReadBack {
            partition: message.partition(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    records
}

/// Milliseconds since the epoch, now.
fn now_millis() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_count_1_prints_the_produced_bytes_exactly() {
    let topic = unique("tail-bytes");
    create_topic(&topic, 1).await;
    let produced = r#"{"operation": "triple", "x": 14, "result": 42}"#;
    let producer = producer();
    produce(
        &producer,
        &topic,
        Produce {
            key: Some(b"k1"),
            value: produced.as_bytes(),
            headers: &[("stagehost-handler", b"triple"), ("n", b"2")],
            timestamp: Some(1_700_000_000_123),
            ..Produce::default()
        },
    )
    .await;

    let stdout = tail(&topic, &["--count", "1"]);
    let expected = format!(
        "{{\"topic\":\"{topic}\",\"partition\":0,\"offset\":0,\"timestamp\":\"2023-11-14T22:13:20.123Z\",\
         \"key\":\"k1\",\"headers\":[[\"stagehost-handler\",\"triple\"],[\"n\",\"2\"]],\
         \"value\":{}}}\n",
        serde_json::to_string(produced).unwrap()
    );
    assert_eq!(text(&stdout), expected);
    let line = &json_lines(&stdout)[0];
    assert_eq!(line["value"].as_str(), Some(produced), "byte for byte");

    // `--format value`: just the bytes and a newline.
    let stdout = tail(&topic, &["--count", "1", "--format", "value"]);
    assert_eq!(stdout, format!("{produced}\n").into_bytes());
    // A template with every field.
    let stdout = tail(&topic, &["--count", "1", "--format", r"%t|%k|%T|%h|%s\t."]);
    assert_eq!(
        text(&stdout),
        format!("{topic}|k1|1700000000123|stagehost-handler=triple,n=2|{produced}\t.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_come_back_as_base64() {
    let topic = unique("tail-base64");
    create_topic(&topic, 1).await;
    let producer = producer();
    produce(
        &producer,
        &topic,
        Produce {
            key: Some(&[0xc3, 0x28]),
            value: &[0xff, 0xfe, 0x00, 0x41],
            headers: &[("bin", &[0x80]), ("text", "é".as_bytes())],
            ..Produce::default()
        },
    )
    .await;
    let lines = json_lines(&tail(&topic, &["--count", "1"]));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["value"], json!({"base64": "//4AQQ=="}));
    assert_eq!(line["key"], json!({"base64": "wyg="}));
    assert_eq!(
        line["headers"],
        json!([["bin", {"base64": "gA=="}], ["text", "é"]])
    );
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));

    // `--format value` writes the bytes themselves.
    let stdout = tail(&topic, &["--count", "1", "--format", "value"]);
    assert_eq!(stdout, vec![0xff, 0xfe, 0x00, 0x41, b'\n']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_gives_the_newest_records_across_partitions() {
    let topic = unique("tail-newest");
    create_topic(&topic, 3).await;
    let producer = producer();
    let base = now_millis();
    for partition in 0..3 {
        let value = format!("{{\"n\": {partition}}}");
        produce(
            &producer,
            &topic,
            Produce {
                partition: Some(partition),
                value: value.as_bytes(),
                timestamp: Some(base + i64::from(partition)),
                ..Produce::default()
            },
        )
        .await;
    }
    let lines = json_lines(&tail(&topic, &["--count", "1"]));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["partition"], 2, "{lines:?}");
    assert_eq!(lines[0]["value"], "{\"n\": 2}");

    // The newest two, oldest first.
    let stdout = tail(&topic, &["--count", "2", "--format", r"%p:%o:%s\n"]);
    assert_eq!(text(&stdout), "1:0:{\"n\": 1}\n2:0:{\"n\": 2}\n");

    // A newer record on partition 0 is now the newest.
    produce(
        &producer,
        &topic,
        Produce {
            partition: Some(0),
            value: b"{\"n\": 3}",
            timestamp: Some(base + 3),
            ..Produce::default()
        },
    )
    .await;
    let stdout = tail(&topic, &["--count", "1", "--format", r"%p:%o:%s\n"]);
    assert_eq!(text(&stdout), "0:1:{\"n\": 3}\n");
    // More than there are: all of them, in timestamp order.
    let stdout = tail(&topic, &["--count", "10", "--format", r"%p:%o\n"]);
    assert_eq!(text(&stdout), "0:0\n1:0\n2:0\n0:1\n");
    // Only the partitions asked for.
    let stdout = tail(
        &topic,
        &[
            "--count",
            "10",
            "--partition",
            "1",
            "--partition",
            "2",
            "--format",
            r"%p\n",
        ],
    );
    assert_eq!(text(&stdout), "1\n2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_offset_select_what_they_say() {
    let topic = unique("tail-select");
    create_topic(&topic, 2).await;
    let producer = producer();
    let base = now_millis();
    for (partition, values) in [(0, ["a0", "a1", "a2", "a3"].as_slice()), (1, &["b0", "b1"])] {
        for (index, value) in values.iter().enumerate() {
            produce(
                &producer,
                &topic,
                Produce {
                    partition: Some(partition),
                    value: value.as_bytes(),
                    timestamp: Some(base + i64::try_from(index).unwrap()),
                    ..Produce::default()
                },
            )
            .await;
        }
    }
    let format = ["--format", r"%p:%o:%s\n"];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&format);
        text(&tail(&topic, &all))
    };
    // -N: N from the end of each partition.
    assert_eq!(
        run(&["--partition", "0", "--offset", "-1", "--count", "1"]),
        "0:3:a3\n"
    );
    assert_eq!(
        run(&["--partition", "0", "--offset", "-2", "--count", "2"]),
        "0:2:a2\n0:3:a3\n"
    );
    // N: that offset; with --count, the first N records from there.
    assert_eq!(
        run(&["--partition", "0", "--offset", "0", "--count", "1"]),
        "0:0:a0\n"
    );
    assert_eq!(
        run(&["--partition", "0", "--offset", "2", "--count", "2"]),
        "0:2:a2\n0:3:a3\n"
    );
    assert_eq!(
        run(&["--partition", "1", "--offset", "beginning", "--count", "1"]),
        "1:0:b0\n"
    );
    // -1 on every partition: one record each, in arrival order.
    let mut lines: Vec<String> = run(&["--offset", "-1", "--count", "2"])
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["0:3:a3", "1:1:b1"]);
    // Following a partition from an offset until it is idle.
    assert_eq!(
        run(&["--partition", "1", "--offset", "1", "--idle-timeout", "2"]),
        "1:1:b1\n"
    );
    // end: nothing old; --from-end is the same.
    assert_eq!(run(&["--offset", "end", "--idle-timeout", "1"]), "");
    assert_eq!(run(&["--from-end", "--idle-timeout", "1"]), "");

    // A partition the topic does not have.
    let brokers = brokers();
    let out = host(&["tail", &topic, "--partition", "7", "--brokers", &brokers]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no partition 7"), "{stderr}");
    // An offset that is none.
    let out = host(&["tail", &topic, "--offset", "soon", "--brokers", &brokers]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not an offset"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sets_headers_in_order_and_the_partition() {
    let topic = unique("send-headers");
    create_topic(&topic, 3).await;
    let brokers = brokers();
    let message = r#"{"a": 1,  "b": [2]}"#;
    let out = host(&[
        "send",
        &topic,
        message,
        "--header",
        "a=1",
        "--header",
        "a=2",
        "--header",
        "eq=x=y",
        "--partition",
        "2",
        "--key",
        "k",
        "--brokers",
        &brokers,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("sent to {topic} partition 2 offset 0\n")
    );
    let topic_name = topic.clone();
    let records = tokio::task::spawn_blocking(move || read_back(&topic_name, 3, 1))
        .await
        .unwrap();
    let record = &records[0];
    assert_eq!(record.partition, 2);
    assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(record.value.as_deref(), Some(message.as_bytes()));
    assert_eq!(
        record.headers,
        [
            ("a".to_string(), Some(b"1".to_vec())),
            ("a".to_string(), Some(b"2".to_vec())),
            ("eq".to_string(), Some(b"x=y".to_vec())),
        ]
    );
    // And tail shows the same.
    let lines = json_lines(&tail(&topic, &["--count", "1"]));
    assert_eq!(
        lines[0]["headers"],
        json!([["a", "1"], ["a", "2"], ["eq", "x=y"]])
    );
    assert_eq!(lines[0]["value"], message);

    // One message per non-empty line of stdin, to the partition given.
    let out = host_with_input(
        &[
            "send",
            &topic,
            "--raw",
            "--partition",
            "1",
            "--brokers",
            &brokers,
        ],
        b"first\n\nsecond\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("sent to {topic} partition 1 offset 0\nsent to {topic} partition 1 offset 1\n")
    );
    let stdout = tail(
        &topic,
        &["--partition", "1", "--count", "2", "--format", "value"],
    );
    assert_eq!(text(&stdout), "first\nsecond\n");

    // A header without `=` and a partition the topic does not have.
    let out = host(&["send", &topic, "{}", "--header", "a", "--brokers", &brokers]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("KEY=VALUE"));
    let out = host(&[
        "send",
        &topic,
        "{}",
        "--partition",
        "9",
        "--brokers",
        &brokers,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("partition 9"),
        "{}",
        text(&out.stderr)
    );
}

/// A command against brokers that are not there ends within seconds, with
/// one line naming the address and hardly any other.
fn assert_unreachable_in_one_line(args: &[&str]) {
    let started = Instant::now();
    let out = host(args);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.contains("cannot reach Kafka at 127.0.0.1:1"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(lines.len() < 5, "{} lines: {stderr}", lines.len());
}

#[test]
fn send_and_tail_without_a_broker_fail_in_one_line() {
    assert_unreachable_in_one_line(&["send", "t", r#"{"a": 1}"#, "--brokers", "127.0.0.1:1"]);
    assert_unreachable_in_one_line(&["tail", "t", "--count", "1", "--brokers", "127.0.0.1:1"]);
    assert_unreachable_in_one_line(&["tail", "t", "--brokers", "127.0.0.1:1"]);
}

#[test]
fn tail_of_a_missing_topic_names_topic_and_brokers() {
    let topic = unique("never-created");
    let brokers = brokers();
    let out = host(&["tail", &topic, "--count", "1", "--brokers", &brokers]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("topic `{topic}` does not exist on {brokers}")),
        "{stderr}"
    );
    assert!(stderr.lines().count() < 5, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_reads_past_transaction_markers_and_aborted_records() {
    use rdkafka::producer::Producer as _;
    let topic = unique("tail-transactions");
    create_topic(&topic, 1).await;
    let transactional: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("tail-test"))
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    transactional.init_transactions(timeout).unwrap();
    // Offsets: 0 "kept", 1 its commit marker, 2 "dropped", 3 its abort marker.
    for (value, commit) in [(&b"kept"[..], true), (b"dropped", false)] {
        transactional.begin_transaction().unwrap();
        produce(
            &transactional,
            &topic,
            Produce {
                value,
                ..Produce::default()
            },
        )
        .await;
        if commit {
            transactional.commit_transaction(timeout).unwrap();
        } else {
            transactional.abort_transaction(timeout).unwrap();
        }
    }
    let stdout = tail(&topic, &["--count", "1", "--format", r"%o:%s\n"]);
    assert_eq!(text(&stdout), "0:kept\n");
    let stdout = tail(&topic, &["--count", "5", "--format", r"%o:%s\n"]);
    assert_eq!(text(&stdout), "0:kept\n");
}
