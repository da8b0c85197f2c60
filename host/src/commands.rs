//! What each command line command does, apart from `run` (see [`crate::run`]).

use crate::config::{Limits, LoadedConfig};
use crate::registry::Registry;
use crate::sandbox::{HandlerSpec, Sandbox};
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Map, Value, json};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// `host check`: validates the config, loads and initialises every plugin,
/// checks the Kafka properties, and returns the plan it would run.
pub fn check(path: &Path) -> anyhow::Result<String> {
    let config = LoadedConfig::load(path)?;
    let sandbox = Sandbox::new(crate::needs_fuel(&config))?;
    let registry = Registry::load(&config, &sandbox, None)?;
    let kafka = &config.config.kafka;
    // Building the clients validates every librdkafka property; they are
    // dropped before they do anything with the network.
    let bootstrap = kafka.brokers.as_str();
    crate::kafka::producer_config(bootstrap, kafka)
        .create::<FutureProducer>()
        .map(drop)
        .context("kafka.properties / kafka.producer")?;
    for stage in &config.config.stages {
        crate::kafka::consumer_config(bootstrap, kafka, stage)
            .create::<BaseConsumer>()
            .map(drop)
            .with_context(|| {
                format!("kafka.properties / kafka.consumer (stage `{}`)", stage.name)
            })?;
    }
    let mut plan = format!("{}: OK\n{}", path.display(), config.plan());
    for (name, component) in registry.handlers() {
        plan.push_str(&format!(
            "loaded {name}: version {}, {} bytes, from {}\n",
            component.version(),
            component.size(),
            component.source()
        ));
    }
    Ok(plan)
}

/// `host plugin inspect`: loads one component with default limits.
pub fn inspect(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sandbox = Sandbox::new(false)?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let component = sandbox.load(
        HandlerSpec {
            name,
            source: path.display().to_string(),
            limits: Limits::default(),
            settings: Vec::new(),
        },
        &bytes,
    )?;
    Ok(format!(
        "{}: implements stagehost:handler/stage-handler\nversion: {}\nsize: {} bytes\n",
        path.display(),
        component.version(),
        component.size()
    ))
}

/// `host send`: produces one message, or one per line of stdin.
pub async fn send(
    brokers: &str,
    topic: &str,
    message: Option<String>,
    key: Option<String>,
    raw: bool,
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "15000")
        .create()
        .context("creating the producer")?;
    let messages: Vec<String> = match message {
        Some(message) => vec![message],
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading stdin")?
            .into_iter()
            .filter(|line| !line.trim().is_empty())
            .collect(),
    };
    for (index, text) in messages.iter().enumerate() {
        if !raw {
            serde_json::from_str::<Value>(text).with_context(|| {
                format!(
                    "message {} is not JSON (pass --raw to send it anyway): {text}",
                    index + 1
                )
            })?;
        }
        let mut record = FutureRecord::<str, str>::to(topic).payload(text);
        if let Some(key) = &key {
            record = record.key(key);
        }
        let delivery = producer
            .send(record, Timeout::After(Duration::from_secs(15)))
            .await
            .map_err(|(err, _)| err)
            .with_context(|| format!("sending to `{topic}` on {brokers}"))?;
        println!(
            "sent to {topic} partition {} offset {}",
            delivery.partition, delivery.offset
        );
    }
    Ok(())
}

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
            for header in crate::dead_letter::raw_headers(all) {
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
