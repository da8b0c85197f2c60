//! Kafka clients as the config describes them: the shared producer (acks=all,
//! idempotent), one consumer per stage (offsets stored only after the work is
//! done), a transactional producer per stage in exactly-once mode, topic
//! creation, and the embedded in-memory development broker.

use crate::config::{Delivery, EMBEDDED_BROKERS, KafkaConfig, StageConfig};
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Where the brokers are: a real cluster, or the in-memory mock cluster that
/// lives as long as this value.
pub struct Brokers {
    bootstrap: String,
    _embedded: Option<EmbeddedBroker>,
}

/// librdkafka's mock cluster, kept on a thread of its own (it is not `Send`)
/// until dropped.
struct EmbeddedBroker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    fn start() -> anyhow::Result<(Self, String)> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stagehost-embedded-broker".into())
            .spawn(move || match MockCluster::new(1) {
                Ok(cluster) => {
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    let _ = stop_rx.recv();
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })?;
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker thread ended")?
            .context("starting the embedded broker")?;
        Ok((
            Self {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            bootstrap,
        ))
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Brokers {
    /// Resolves `kafka.brokers`, starting the embedded broker when asked.
    pub fn connect(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        if kafka.brokers.trim() == EMBEDDED_BROKERS {
            let (embedded, bootstrap) = EmbeddedBroker::start()?;
            tracing::warn!(
                bootstrap = %bootstrap,
                "using the embedded in-memory development broker: nothing is persisted, \
                 and it holds at most about 100k messages per partition"
            );
            Ok(Self {
                bootstrap,
                _embedded: Some(embedded),
            })
        } else {
            Ok(Self {
                bootstrap: kafka.brokers.trim().to_string(),
                _embedded: None,
            })
        }
    }

    /// The bootstrap servers clients should use.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

fn base_config(bootstrap: &str, kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in &kafka.properties {
        config.set(key, value.to_string());
    }
    config
}

/// The producer config: at-least-once defaults, then the user's properties.
pub fn producer_config(bootstrap: &str, kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000");
    for (key, value) in kafka.properties.iter().chain(&kafka.producer) {
        config.set(key, value.to_string());
    }
    config
}

/// The consumer config for one stage: offsets are stored by the host after
/// a message's outputs are acknowledged and committed in the background.
pub fn consumer_config(bootstrap: &str, kafka: &KafkaConfig, stage: &StageConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", stage.group_id(kafka))
        .set("client.id", format!("stagehost-{}", stage.name))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("isolation.level", "read_committed");
    if kafka.delivery == Delivery::ExactlyOnce {
        // Offsets are committed inside each stage's transactions.
        config.set("enable.auto.commit", "false");
    }
    for (key, value) in kafka.properties.iter().chain(&kafka.consumer) {
        config.set(key, value.to_string());
    }
    config
}

/// Creates the shared producer.
pub fn producer(bootstrap: &str, kafka: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    producer_config(bootstrap, kafka)
        .create()
        .context("creating the Kafka producer (check kafka.properties and kafka.producer)")
}

/// Creates a stage's own transactional producer (exactly-once mode); the
/// stage initialises it before its first transaction.
pub fn transactional_producer(
    bootstrap: &str,
    kafka: &KafkaConfig,
    stage: &StageConfig,
) -> anyhow::Result<FutureProducer> {
    let mut config = producer_config(bootstrap, kafka);
    config.set("transactional.id", kafka.transactional_id(&stage.name));
    // librdkafka requires a delivery timeout within the transaction timeout.
    let transaction_timeout = config
        .get("transaction.timeout.ms")
        .unwrap_or("60000")
        .to_string();
    let user_set =
        |key: &str| kafka.properties.contains_key(key) || kafka.producer.contains_key(key);
    if !user_set("message.timeout.ms") {
        config.set("message.timeout.ms", transaction_timeout);
    }
    config.create().with_context(|| {
        format!(
            "creating the transactional producer for stage `{}` (check kafka.properties and kafka.producer)",
            stage.name
        )
    })
}

/// Creates a stage's consumer (not yet subscribed).
pub fn consumer(
    bootstrap: &str,
    kafka: &KafkaConfig,
    stage: &StageConfig,
    lag: crate::metrics::LagContext,
) -> anyhow::Result<StreamConsumer<crate::metrics::LagContext>> {
    let mut config = consumer_config(bootstrap, kafka, stage);
    if config.get("statistics.interval.ms").is_none() {
        config.set(
            "statistics.interval.ms",
            crate::metrics::STATISTICS_INTERVAL_MS,
        );
    }
    config.create_with_context(lag).with_context(|| {
        format!(
            "creating the Kafka consumer for stage `{}` (check kafka.properties and kafka.consumer)",
            stage.name
        )
    })
}

/// Creates the given topics where they are missing.
pub async fn ensure_topics(
    bootstrap: &str,
    kafka: &KafkaConfig,
    topics: &[&str],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap, kafka)
        .create()
        .context("creating the Kafka admin client")?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                kafka.topics.partitions,
                // -1 asks the broker for its `default.replication.factor`.
                TopicReplication::Fixed(kafka.topics.replication_factor.unwrap_or(-1)),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .with_context(|| format!("creating topics on {bootstrap}"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic `{topic}` on {bootstrap}: {code}"),
        }
    }
    Ok(())
}

/// Waits until the brokers answer a metadata request, with a clear error
/// when they do not.
pub async fn wait_reachable(producer: &FutureProducer, bootstrap: &str) -> anyhow::Result<()> {
    use rdkafka::producer::Producer as _;
    let client = producer.clone();
    let answer = tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_metadata(None, Duration::from_secs(20))
            .map(drop)
    })
    .await?;
    answer.with_context(|| {
        format!(
            "cannot reach Kafka at {bootstrap} (is a broker running? `make kafka-up` starts one)"
        )
    })
}
