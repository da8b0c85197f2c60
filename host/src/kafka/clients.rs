//! The host's Kafka clients, made from the resolved [`KafkaSettings`]: the
//! shared producer (acks=all, idempotent), one consumer per stage (offsets
//! stored only after the work is done), a transactional producer per stage
//! in exactly-once mode, and an admin client. The user's properties come
//! last and override the host's defaults.

use super::context::{
    BrokerTrouble, HostContext, HostProducer, PauseSwitch, StageContext, StatisticsSink,
};
use super::embedded::{Bootstrap, EmbeddedBroker};
use crate::config::{ClientProperties, Delivery, KafkaSettings, StagePlan};
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use std::sync::Arc;

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1_000_000;

/// A stage's consumer.
pub type StageConsumer = StreamConsumer<StageContext>;

/// Makes the host's clients for one cluster; they share one
/// [`BrokerTrouble`].
#[derive(Clone)]
pub struct Clients {
    bootstrap: String,
    embedded: Option<Arc<EmbeddedBroker>>,
    settings: KafkaSettings,
    trouble: Arc<BrokerTrouble>,
}

impl Clients {
    /// Clients of the cluster at `bootstrap`, as `settings` describe them.
    pub fn new(bootstrap: &Bootstrap, settings: &KafkaSettings) -> Self {
        Self {
            bootstrap: bootstrap.bootstrap().to_string(),
            embedded: bootstrap.embedded().cloned(),
            settings: settings.clone(),
            trouble: Arc::default(),
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The embedded broker, when the clients use it.
    pub fn embedded(&self) -> Option<&Arc<EmbeddedBroker>> {
        self.embedded.as_ref()
    }

    /// The settings the clients are made from.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// What librdkafka said about the brokers, folded.
    pub fn trouble(&self) -> &Arc<BrokerTrouble> {
        &self.trouble
    }

    fn context(&self) -> HostContext {
        HostContext::new(self.trouble.clone())
    }

    /// Creates the shared producer.
    pub fn producer(&self) -> anyhow::Result<HostProducer> {
        producer_config(&self.bootstrap, &self.settings.properties)
            .create_with_context(self.context())
            .context("creating the Kafka producer (check kafka.properties and kafka.producer)")
    }

    /// Creates a stage's own transactional producer (exactly-once mode); the
    /// stage initialises it before its first transaction.
    pub fn transactional_producer(
        &self,
        stage: &str,
        transactional_id: &str,
    ) -> anyhow::Result<HostProducer> {
        let config =
            transactional_config(&self.bootstrap, &self.settings.properties, transactional_id);
        config.create_with_context(self.context()).with_context(|| {
            format!(
                "creating the transactional producer for stage `{stage}` (check kafka.properties and kafka.producer)"
            )
        })
    }

    /// Creates a stage's consumer (not yet subscribed); its statistics go
    /// to `statistics`.
    pub fn stage_consumer(
        &self,
        stage: &StagePlan,
        statistics: StatisticsSink,
        pause: Arc<PauseSwitch>,
    ) -> anyhow::Result<StageConsumer> {
        let exactly_once = matches!(self.settings.delivery, Delivery::ExactlyOnce(_));
        let mut config = consumer_config(
            &self.bootstrap,
            &self.settings.properties,
            &stage.group,
            &format!("stagehost-{}", stage.name),
            exactly_once,
        );
        if config.get("statistics.interval.ms").is_none() {
            config.set(
                "statistics.interval.ms",
                super::context::STATISTICS_INTERVAL_MS,
            );
        }
        let context = StageContext::new(
            &stage.name,
            &stage.input,
            statistics,
            self.trouble.clone(),
            pause,
        );
        config.create_with_context(context).with_context(|| {
            format!(
                "creating the Kafka consumer for stage `{}` (check kafka.properties and kafka.consumer)",
                stage.name
            )
        })
    }

    /// Creates a consumer in `group` that joins nothing: for reading the
    /// group's committed offsets and the partitions' watermarks.
    pub fn inspector(&self, group: &str) -> anyhow::Result<BaseConsumer<HostContext>> {
        let mut config = consumer_config(
            &self.bootstrap,
            &self.settings.properties,
            group,
            "stagehost-inspector",
            true,
        );
        config.set("enable.auto.commit", "false");
        config
            .create_with_context(self.context())
            .context("creating a Kafka consumer to read offsets")
    }

    /// Creates a consumer that joins no group and reads a stateful stage's
    /// changelog to its end: committed records only, with an end-of-partition
    /// event.
    pub fn restorer(&self, stage: &str) -> anyhow::Result<BaseConsumer<HostContext>> {
        let mut config = consumer_config(
            &self.bootstrap,
            &self.settings.properties,
            &format!("stagehost-restore-{stage}"),
            &format!("stagehost-restore-{stage}"),
            true,
        );
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // The end of the changelog is found by a fetch that comes back
            // empty: answered at once rather than after librdkafka's 500 ms.
            .set("fetch.wait.max.ms", "10");
        config
            .create_with_context(self.context())
            .context("creating the Kafka consumer that restores state")
    }

    /// Creates an admin client.
    pub fn admin(&self) -> anyhow::Result<AdminClient<HostContext>> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.settings.properties.all {
            config.set(key, value);
        }
        config
            .create_with_context(self.context())
            .context("creating the Kafka admin client")
    }

    /// The producer's `message.max.bytes` as the config sets it (librdkafka's
    /// default otherwise): the largest record the host hands to the producer.
    pub fn max_record_bytes(&self) -> u64 {
        max_record_bytes(&self.settings.properties)
    }
}

/// [`Clients::max_record_bytes`] of these properties.
pub fn max_record_bytes(properties: &ClientProperties) -> u64 {
    properties
        .producer_property("message.max.bytes")
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_RECORD_BYTES)
}

/// A transactional producer's config: [`producer_config`] with the
/// `transactional.id` and a delivery timeout within the transaction's.
pub fn transactional_config(
    bootstrap: &str,
    properties: &ClientProperties,
    transactional_id: &str,
) -> ClientConfig {
    let mut config = producer_config(bootstrap, properties);
    config.set("transactional.id", transactional_id);
    // librdkafka requires a delivery timeout within the transaction timeout.
    let transaction_timeout = config
        .get("transaction.timeout.ms")
        .unwrap_or("60000")
        .to_string();
    if properties.producer_property("message.timeout.ms").is_none() {
        config.set("message.timeout.ms", transaction_timeout);
    }
    config
}

/// The producer config: at-least-once defaults, then the user's properties.
pub fn producer_config(bootstrap: &str, properties: &ClientProperties) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000");
    for (key, value) in properties.all.iter().chain(&properties.producer) {
        config.set(key, value);
    }
    config
}

/// The consumer config of a stage in `group`: offsets are stored by the
/// host after a message's outputs are acknowledged and committed in the
/// background (or, `exactly_once`, inside the stage's transactions).
pub fn consumer_config(
    bootstrap: &str,
    properties: &ClientProperties,
    group: &str,
    client_id: &str,
    exactly_once: bool,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", client_id)
        .set(
            "enable.auto.commit",
            if exactly_once { "false" } else { "true" },
        )
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("isolation.level", "read_committed")
        // librdkafka keeps one fetch in flight per broker. When the
        // partitions with data are all backed up locally, the fetch asks
        // only for a partition at its end, and the broker holds it for
        // fetch.wait.max.ms (500 ms by default) while the stage drains what
        // it has and then waits; and a partition whose local queue was full
        // is fetched again only after fetch.queue.backoff.ms (1 s).
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "20");
    for (key, value) in properties.all.iter().chain(&properties.consumer) {
        config.set(key, value);
    }
    config
}
