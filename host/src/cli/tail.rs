//! `host tail TOPIC`: prints a topic's messages as JSON lines, headers
//! included.

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

/// `host tail`: prints a topic's messages as JSON lines until `count`
/// messages were printed or nothing arrived for `idle_timeout`.
pub fn tail(
    brokers: &str,
    topic: &str,
    from_end: bool,
    count: Option<usize>,
    idle_timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "stagehost-tail")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .with_context(|| format!("reading metadata of `{topic}` from {brokers}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic `{topic}` does not exist on {brokers}"
    );
    let mut assignment = TopicPartitionList::new();
    let start = if from_end {
        Offset::End
    } else {
        Offset::Beginning
    };
    for partition in partitions {
        assignment.add_partition_offset(topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    let mut printed = 0;
    let mut last = Instant::now();
    let stdout = std::io::stdout();
    while count.is_none_or(|count| printed < count) {
        if idle_timeout.is_some_and(|idle| last.elapsed() >= idle) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading `{topic}`"))?;
        last = Instant::now();
        let mut headers = Map::new();
        if let Some(all) = message.headers() {
            for header in crate::kafka::headers::raw_headers(all) {
                let value = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                headers.insert(header.key_text().into_owned(), json!(value));
            }
        }
        let line = json!({
            "partition": message.partition(),
            "offset": message.offset(),
            "key": message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            "value": message.payload().map(readable),
            "headers": headers,
        });
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

/// JSON values stay JSON; anything else is shown as (lossy) text.
fn readable(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}
