//! Helpers for the integration tests: the real broker's address, unique
//! topic names, a host started the way `host run` starts it, and a producer
//! and reader for the test's own topics.
#![allow(dead_code)]

pub mod numbered;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use stagehost::config::LoadedConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The broker the tests run against (`make kafka-up` starts it).
pub fn brokers() -> String {
    std::env::var("STAGEHOST_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built plugin; fails the test with the command to build it when missing.
pub fn plugin(target: &str, name: &str) -> PathBuf {
    let path = repo_root()
        .join("target")
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (`make plugins`)",
        path.display()
    );
    path
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Topics of one calculator pipeline under test.
#[derive(Clone)]
pub struct Topics {
    pub input: String,
    pub output: String,
    pub dead_letter: String,
    pub group: String,
}

impl Topics {
    pub fn new() -> Self {
        Self {
            input: unique("requests"),
            output: unique("results"),
            dead_letter: unique("dlq"),
            group: unique("group"),
        }
    }
}

/// The calculator config of the repository, pointed at fresh topics.
pub fn calculator_yaml(topics: &Topics, partitions: i32) -> String {
    calculator_yaml_on(&brokers(), topics, partitions)
}

/// [`calculator_yaml`] for the cluster at `bootstrap`.
pub fn calculator_yaml_on(bootstrap: &str, topics: &Topics, partitions: i32) -> String {
    format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
  topics:
    partitions: {partitions}
admin:
  listen: 127.0.0.1:0
handlers:
  add:
    path: target/wasm32-wasip2/release/add.wasm
  subtract:
    path: target/wasm32-wasip2/release/subtract.wasm
stages:
  - name: calculator
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    route:
      field: operation
      to:
        sum: add
        add: add
        sub: subtract
        subtract: subtract
"#,
        brokers = bootstrap,
        group = topics.group,
        input = topics.input,
        output = topics.output,
        dead_letter = topics.dead_letter,
    )
}

/// Parses config text as if it were a file at the repository root.
pub fn config_from(yaml: String) -> LoadedConfig {
    // Each host keeps its handler versions apart from every other test's.
    let data_dir = std::env::temp_dir().join(unique("stagehost-data"));
    let yaml = format!("data_dir: {}\n{yaml}", data_dir.display());
    LoadedConfig::from_source(&repo_root().join("test-config.yml"), yaml)
        .expect("test config is valid")
}

/// A host running in this process, as `host run` runs it.
pub struct RunningHost {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningHost {
    pub fn start(config: LoadedConfig) -> Self {
        Self::start_with(config, |_| {})
    }

    /// Starts the host and hands what it reports when ready to `ready`.
    pub fn start_with(
        config: LoadedConfig,
        ready: impl FnOnce(stagehost::Ready) + Send + 'static,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let host = stagehost::Host::start(config).await?;
            ready(host.ready());
            // No reload requests: the test re-reads nothing.
            let (_requests, reloads) = tokio::sync::mpsc::unbounded_channel();
            host.run(
                async move {
                    let _ = stopped.await;
                },
                reloads,
            )
            .await
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the host the way SIGTERM does and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// Creates a topic with the given partitions.
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_with(topic, partitions, &[]).await;
}

/// Creates a topic with the given partitions and topic configs
/// (`max.message.bytes`, say).
pub async fn create_topic_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for &(name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

/// A producer with the same delivery guarantee the host uses.
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Produces one record and waits for its acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &[u8],
    headers: &[(&str, &str)],
) {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .payload(value)
        .headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .map_err(|(err, _)| err)
        .expect("test message acknowledged");
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    /// The record's timestamp (milliseconds since the epoch), if any.
    pub timestamp: Option<i64>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or_default()).expect("value is JSON")
    }

    pub fn header(&self, key: &str) -> &str {
        self.headers
            .get(key)
            .unwrap_or_else(|| panic!("header `{key}` missing; headers: {:?}", self.headers))
    }
}

/// Reads a topic from the beginning until `count` records arrived, then
/// keeps reading for `settle` to catch any extra ones. Panics on timeout.
pub async fn read(topic: &str, count: usize, timeout: Duration, settle: Duration) -> Vec<Received> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_blocking(&topic, count, timeout, settle))
        .await
        .unwrap()
}

fn read_blocking(topic: &str, count: usize, timeout: Duration, settle: Duration) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let started = Instant::now();
    let partitions = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !partitions.is_empty() {
            break partitions;
        }
        assert!(started.elapsed() < timeout, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut received = Vec::new();
    let mut complete_at: Option<Instant> = None;
    loop {
        if received.len() >= count && complete_at.is_none() {
            complete_at = Some(Instant::now());
        }
        if complete_at.is_some_and(|at| at.elapsed() >= settle) {
            break;
        }
        assert!(
            complete_at.is_some() || started.elapsed() < timeout,
            "timed out reading {topic}: {} of {count} records",
            received.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("reading test topic");
        let mut headers = BTreeMap::new();
        if let Some(all) = message.headers() {
            for header in all.iter() {
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        received.push(Received {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message.timestamp().to_millis(),
        });
    }
    received
}

/// One HTTP/1.1 request to the admin port; returns the status and the body.
pub async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("admin port answers");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().expect("an HTTP status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The `host` binary running a calculator config on `topics`, written (with
/// absolute plugin paths) to a fresh directory. Returns the process, the
/// config file and its text.
pub fn spawn_host(topics: &Topics) -> (std::process::Child, PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("stagehost-run"));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = calculator_yaml(topics, 1).replace(
        "path: target/",
        &format!("path: {}/target/", repo_root().display()),
    );
    let config = dir.join("config.yml");
    std::fs::write(&config, &yaml).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["run", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, config, yaml)
}

/// A finished command for a failure message: its exit status, stdout and
/// stderr.
pub fn report(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Sends a signal (`HUP`, `TERM`, …) to a process.
pub fn signal(process: &std::process::Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), process.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} failed");
}

/// Waits for a process in a blocking task and returns its output.
pub async fn wait_output(process: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || process.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

/// A message as a handler receives it, with only a value.
pub fn wit_message(value: Vec<u8>) -> stagehost::handlers::bindings::Message {
    stagehost::handlers::bindings::Message {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        key: None,
        value,
        headers: Vec::new(),
        timestamp: None,
    }
}
