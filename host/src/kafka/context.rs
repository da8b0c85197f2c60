//! The contexts of the host's Kafka clients: what librdkafka says about
//! the brokers ([`BrokerTrouble`], folded into few lines), and the stage
//! consumers' own context ([`StageContext`]), which hands librdkafka's
//! statistics to the stage and logs each assignment and revocation.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    /// While the host waits for the brokers at start, complaints are only
    /// counted: the wait ends with one line of its own.
    quiet: bool,
    authentication: Option<String>,
    first: Option<String>,
    complaints: u64,
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
        state.first.get_or_insert_with(|| complaint.to_string());
        state.complaints += 1;
        if state.quiet {
            return;
        }
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

    /// Counts complaints without logging them (`true`), or logs them again.
    pub fn set_quiet(&self, quiet: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.quiet = quiet;
    }

    /// The first complaint and how many came in all.
    pub fn first(&self) -> Option<(String, u64)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.first.clone().map(|first| (first, state.complaints))
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
        // The end of a partition is an event the reader asked for, not trouble.
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
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
                // A failed connection also comes through the error callback.
                if facility != "FAIL" {
                    self.note(&format!("kafka {facility}: {message}"), false, false)
                }
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

/// The inspector consumers (offsets, watermarks) join no group: the default
/// rebalance callbacks are all they need.
impl rdkafka::consumer::ConsumerContext for HostContext {}

/// The host's producer.
pub type HostProducer = FutureProducer<HostContext>;

/// Receives a stage consumer's librdkafka statistics (JSON), for lag.
pub type StatisticsSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The context of a stage's consumer: librdkafka's periodic statistics go
/// to the stage (only emitted when `statistics.interval.ms` is set, see
/// [`STATISTICS_INTERVAL_MS`]), its complaints to the shared
/// [`BrokerTrouble`], and each assignment and revocation is logged, so that
/// with several hosts in a group each log says which partitions it holds.
pub struct StageContext {
    stage: String,
    topic: String,
    statistics: StatisticsSink,
    trouble: Arc<BrokerTrouble>,
    epochs: Arc<PartitionEpochs>,
    pause: Arc<PauseSwitch>,
}

/// Whether a stage is paused: set by the admin API, followed by the stage's
/// loop (which pauses and resumes its consumer's partitions) and by its
/// consumer's rebalances (a partition assigned while paused starts paused).
pub type PauseSwitch = tokio::sync::watch::Sender<bool>;

/// Per partition, how many times it was assigned or revoked: a stateful
/// stage catches a partition's state up again when its epoch moved.
#[derive(Debug, Default)]
pub struct PartitionEpochs {
    epochs: std::sync::Mutex<std::collections::HashMap<i32, u64>>,
}

impl PartitionEpochs {
    /// The partition's epoch now.
    pub fn epoch(&self, partition: i32) -> u64 {
        self.epochs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    fn moved(&self, list: &TopicPartitionList) {
        let mut epochs = self
            .epochs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for element in list.elements() {
            *epochs.entry(element.partition()).or_insert(0) += 1;
        }
    }
}

/// A `statistics.interval.ms` for stage consumers: how often lag updates.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

impl StageContext {
    /// The context of `stage`'s consumer of `topic`.
    pub fn new(
        stage: &str,
        topic: &str,
        statistics: StatisticsSink,
        trouble: Arc<BrokerTrouble>,
        pause: Arc<PauseSwitch>,
    ) -> Self {
        Self {
            stage: stage.to_string(),
            topic: topic.to_string(),
            statistics,
            trouble,
            epochs: Arc::default(),
            pause,
        }
    }

    /// Whether the stage is paused, and its changes.
    pub fn pause(&self) -> &Arc<PauseSwitch> {
        &self.pause
    }

    /// The assignment epochs of the stage's partitions.
    pub fn epochs(&self) -> &Arc<PartitionEpochs> {
        &self.epochs
    }
}

impl ClientContext for StageContext {
    fn stats_raw(&self, statistics: &[u8]) {
        (self.statistics)(statistics);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.trouble.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.trouble.error(&error, reason);
    }
}

impl ConsumerContext for StageContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            let mut numbers: Vec<i32> = list.elements().iter().map(|p| p.partition()).collect();
            numbers.sort_unstable();
            format!("{numbers:?}")
        };
        let stage = self.stage.as_str();
        match rebalance {
            Rebalance::Assign(list) => {
                self.epochs.moved(list);
                tracing::info!(stage, topic = %self.topic, partitions = %partitions(list), "partitions assigned");
                if *self.pause.borrow() {
                    match consumer.pause(list) {
                        Ok(()) => {
                            tracing::info!(stage, partitions = %partitions(list), "assigned partitions start paused")
                        }
                        Err(err) => {
                            tracing::warn!(stage, cause = %err, "could not pause the assigned partitions")
                        }
                    }
                }
            }
            Rebalance::Revoke(list) => {
                self.epochs.moved(list);
                tracing::info!(stage, topic = %self.topic, partitions = %partitions(list), "partitions revoked");
            }
            Rebalance::Error(err) => {
                tracing::warn!(stage, topic = %self.topic, cause = %err, "rebalance failed");
            }
        }
    }
}
