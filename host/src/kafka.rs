//! Kafka clients as the config describes them: the shared producer (acks=all,
//! idempotent), one consumer per stage (offsets stored only after the work is
//! done), a transactional producer per stage in exactly-once mode, topic
//! creation, and the embedded in-memory development broker.

use crate::config::{Delivery, EMBEDDED_BROKERS, KafkaConfig, StageConfig};
use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::time::Instant;

/// How often a repeated librdkafka complaint is logged again, with its count.
const REPEAT_INTERVAL: Duration = Duration::from_secs(30);

/// What librdkafka said about the connection to the brokers, folded: each
/// distinct complaint is logged once, then once per [`REPEAT_INTERVAL`] with
/// how often it came meanwhile. An authentication failure is kept, so that
/// waiting for the brokers can stop at once with its reason.
#[derive(Default)]
pub struct BrokerTrouble {
    state: Mutex<TroubleState>,
}

#[derive(Default)]
struct TroubleState {
    authentication: Option<String>,
    last: Option<String>,
    seen: HashMap<String, (u64, Instant)>,
}

impl BrokerTrouble {
    fn note(&self, complaint: &str, authentication: bool, error: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if authentication && state.authentication.is_none() {
            state.authentication = Some(complaint.to_string());
        }
        state.last = Some(complaint.to_string());
        // The same complaint from another broker or with another count of
        // suppressed repeats is the same complaint.
        let shape = complaint_shape(complaint);
        let now = Instant::now();
        let (count, logged) = state
            .seen
            .entry(shape)
            .or_insert((0, now - REPEAT_INTERVAL));
        *count += 1;
        if now.duration_since(*logged) < REPEAT_INTERVAL {
            return;
        }
        let repeats = *count - 1;
        *count = 0;
        *logged = now;
        drop(state);
        match (error, repeats) {
            (true, 0) => tracing::error!(target: "librdkafka", "{complaint}"),
            (true, n) => {
                tracing::error!(target: "librdkafka", repeats = n, "{complaint} (and {n} more like it)")
            }
            (false, 0) => tracing::warn!(target: "librdkafka", "{complaint}"),
            (false, n) => {
                tracing::warn!(target: "librdkafka", repeats = n, "{complaint} (and {n} more like it)")
            }
        }
    }

    /// The first authentication failure librdkafka reported, if any.
    pub fn authentication_failure(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .authentication
            .clone()
    }

    /// The newest complaint, if any.
    pub fn last(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .clone()
    }

    /// librdkafka's global error callback.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let authentication = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication)
        ) || reason.contains("SASL authentication")
            || reason.contains("SSL handshake failed");
        self.note(&format!("kafka: {reason}"), authentication, true);
    }

    /// librdkafka's log callback: warnings and worse are folded; the rest
    /// goes to debug.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                self.note(&format!("kafka {facility}: {message}"), false, false)
            }
            _ => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }
}

/// A complaint without what varies between repeats: digits, and the
/// `rdkafka#producer-N` client names.
fn complaint_shape(complaint: &str) -> String {
    complaint.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The context of the host's producers and admin clients: librdkafka's
/// complaints go to a shared [`BrokerTrouble`].
#[derive(Clone, Default)]
pub struct HostContext {
    trouble: Arc<BrokerTrouble>,
}

impl HostContext {
    /// A context reporting into `trouble`.
    pub fn new(trouble: Arc<BrokerTrouble>) -> Self {
        Self { trouble }
    }

    /// Where this context reports.
    pub fn trouble(&self) -> &Arc<BrokerTrouble> {
        &self.trouble
    }
}

impl ClientContext for HostContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.trouble.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.trouble.error(&error, reason);
    }
}

/// The host's producer.
pub type HostProducer = FutureProducer<HostContext>;

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

/// The producer's `message.max.bytes` as the config sets it (librdkafka's
/// default otherwise): the largest record the host hands to the producer.
pub fn max_record_bytes(kafka: &KafkaConfig) -> u64 {
    kafka
        .producer
        .get("message.max.bytes")
        .or_else(|| kafka.properties.get("message.max.bytes"))
        .and_then(|value| value.to_string().trim().parse().ok())
        .unwrap_or(crate::pipeline::DEFAULT_MAX_RECORD_BYTES)
}

/// Creates the shared producer.
pub fn producer(
    bootstrap: &str,
    kafka: &KafkaConfig,
    trouble: &Arc<BrokerTrouble>,
) -> anyhow::Result<HostProducer> {
    producer_config(bootstrap, kafka)
        .create_with_context(HostContext::new(trouble.clone()))
        .context("creating the Kafka producer (check kafka.properties and kafka.producer)")
}

/// Creates a stage's own transactional producer (exactly-once mode); the
/// stage initialises it before its first transaction.
pub fn transactional_producer(
    bootstrap: &str,
    kafka: &KafkaConfig,
    stage: &StageConfig,
    trouble: &Arc<BrokerTrouble>,
) -> anyhow::Result<HostProducer> {
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
    config.create_with_context(HostContext::new(trouble.clone())).with_context(|| {
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
    trouble: &Arc<BrokerTrouble>,
) -> anyhow::Result<()> {
    let admin: AdminClient<HostContext> = base_config(bootstrap, kafka)
        .create_with_context(HostContext::new(trouble.clone()))
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

/// How long the host waits for the brokers to answer at start.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Waits until the brokers answer a metadata request, for at most `wait`,
/// with one clear error when they do not: an authentication failure ends
/// the wait at once, naming the brokers and the SASL mechanism.
pub async fn wait_reachable(
    producer: &HostProducer,
    trouble: &BrokerTrouble,
    kafka: &KafkaConfig,
    bootstrap: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    use rdkafka::producer::Producer as _;
    let started = Instant::now();
    loop {
        let client = producer.clone();
        let answer = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Duration::from_millis(500))
                .map(drop)
        })
        .await?;
        let failure = match answer {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if let Some(reason) = trouble.authentication_failure() {
            anyhow::bail!(
                "authentication failed at {bootstrap} ({}): {reason}",
                security_summary(kafka)
            );
        }
        if started.elapsed() >= wait {
            let cause = trouble.last().unwrap_or_else(|| failure.to_string());
            anyhow::bail!(
                "cannot reach Kafka at {bootstrap} within {} s: {cause} \
                 (is a broker running there? `make kafka-up` starts one on 127.0.0.1:9092)",
                wait.as_secs()
            );
        }
    }
}

/// How the clients authenticate, for error messages: the security protocol
/// and the SASL mechanism (never a credential).
pub fn security_summary(kafka: &KafkaConfig) -> String {
    let property = |key: &str| {
        kafka
            .properties
            .get(key)
            .or_else(|| kafka.producer.get(key))
            .map(|value| value.to_string())
    };
    let protocol = property("security.protocol").unwrap_or_else(|| "plaintext".into());
    match property("sasl.mechanism").or_else(|| property("sasl.mechanisms")) {
        Some(mechanism) => format!("security.protocol {protocol}, SASL mechanism {mechanism}"),
        None => format!("security.protocol {protocol}"),
    }
}
