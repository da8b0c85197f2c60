//! Delivery-mode benchmark against the local real broker (`make kafka-up`):
//! the throughput cost of exactly-once (Kafka transactions) against
//! at-least-once. For each mode, `MESSAGES` calculator requests are loaded
//! into a fresh 4-partition topic first; then the host starts and the clock
//! runs until a `read_committed` reader has seen every result.
//!
//! Run: `cargo bench -p stagehost --bench delivery` (env `MESSAGES`,
//! default 200000; `COMMIT_INTERVAL_MS`, default 100).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use stagehost::config::LoadedConfig;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn preload(brokers: &str, topic: &str, count: u64) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    for id in 0..count {
        let (key, value) = (
            format!("k{}", id % 64),
            format!(r#"{{"operation":"add","id":{id},"x":{id},"y":1}}"#),
        );
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// Counts records on `topic` until `count` arrived; returns when the first
/// and the last arrived.
fn wait_for(brokers: &str, topic: &str, count: u64) -> anyhow::Result<(Instant, Instant)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut seen = 0;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < count {
        anyhow::ensure!(Instant::now() < deadline, "only {seen} of {count} results");
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    Ok((first.expect("a first result"), Instant::now()))
}

/// One mode's rates: from the host's start to the last result, and from
/// the first result to the last (the steady state, without the start-up:
/// joining the group, and for exactly-once `init_transactions`).
struct Rates {
    from_start: f64,
    steady: f64,
}

async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    Ok(())
}

/// Messages per second through the host in `delivery` mode.
async fn measure(
    brokers: &str,
    delivery: &str,
    count: u64,
    interval: u64,
) -> anyhow::Result<Rates> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (input, output) = (format!("bench-in-{run}"), format!("bench-out-{run}"));
    create_topic(brokers, &input).await?;
    create_topic(brokers, &output).await?;
    preload(brokers, &input, count)?;
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  group: bench-{run}\n  delivery: {delivery}\n  transactions:\n    id: bench-{run}\n    commit_interval_ms: {interval}\n  topics:\n    partitions: {PARTITIONS}\nadmin:\n  enabled: false\nhandlers:\n  add:\n    path: {}\n    watch: false\nstages:\n  - name: bench\n    input: {input}\n    output: {output}\n    dead_letter: bench-dlq-{run}\n    route:\n      field: operation\n      to:\n        add: add\n",
        repo_root()
            .join("target/wasm32-wasip2/release/add.wasm")
            .display()
    );
    let config = LoadedConfig::from_source(&repo_root().join("bench.yml"), yaml)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let host = tokio::spawn(async move {
        let host = stagehost::Host::start(config).await?;
        let (_requests, reloads) = tokio::sync::mpsc::unbounded_channel();
        host.run(
            async move {
                let _ = stop_rx.await;
            },
            reloads,
        )
        .await
    });
    let (brokers_owned, output_owned) = (brokers.to_string(), output.clone());
    let (first, done) =
        tokio::task::spawn_blocking(move || wait_for(&brokers_owned, &output_owned, count))
            .await??;
    let _ = stop_tx.send(());
    host.await??;
    Ok(Rates {
        from_start: count as f64 / (done - started).as_secs_f64(),
        steady: (count - 1) as f64 / (done - first).as_secs_f64(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // The host's log, when RUST_LOG asks for it (e.g. to see transactions).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let count = env_number("MESSAGES", 200_000);
    let interval = env_number("COMMIT_INTERVAL_MS", 100);
    let brokers =
        std::env::var("STAGEHOST_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let at_least_once = measure(&brokers, "at-least-once", count, interval).await?;
    let exactly_once = measure(&brokers, "exactly-once", count, interval).await?;
    println!(
        "delivery benchmark: {count} preloaded messages, {PARTITIONS} partitions, results seen by a read_committed reader; from the host's start to the last result, and from the first result to the last"
    );
    println!(
        "at-least-once: {:>9.0} msg/s from start, {:>9.0} msg/s first to last",
        at_least_once.from_start, at_least_once.steady
    );
    println!(
        "exactly-once:  {:>9.0} msg/s from start ({:.0}% of at-least-once), {:>9.0} msg/s first to last ({:.0}%), transactions every {interval} ms",
        exactly_once.from_start,
        100.0 * exactly_once.from_start / at_least_once.from_start,
        exactly_once.steady,
        100.0 * exactly_once.steady / at_least_once.steady
    );
    Ok(())
}
