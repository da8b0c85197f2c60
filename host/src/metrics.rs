//! Prometheus metrics: what the stages consumed, produced and dead-lettered,
//! how the handlers behaved, and which handler versions are loaded.
//!
//! Each [`Metrics`] value has its own registry (never the process-global
//! one), so tests can create as many as they like. The message path records
//! through a [`StageMetrics`] handle created once per stage: it resolves each
//! label set the first time it is used and keeps the series handle, so
//! recording a message is an atomic add behind a read lock, with no
//! allocation.
//!
//! Consumer lag comes from librdkafka's own statistics: a stage's consumer
//! created with a [`LagContext`] (and `statistics.interval.ms` set) reports
//! it without any work on the message path.

use crate::kafka::BrokerTrouble;
use crate::sandbox::LogBudgets;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use serde::Deserialize;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Upper bounds of the handler duration histogram, in seconds: 1 µs to 1 s.
pub const DURATION_BUCKETS: [f64; 13] = [
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0,
];

/// Every metric of one host, in a registry of its own.
pub struct Metrics {
    registry: Registry,
    families: Families,
    /// The version currently exported per handler, so a swap can remove the
    /// previous version's info series.
    versions: Mutex<HashMap<String, String>>,
    /// The sandbox's guest-output budgets, read at each scrape.
    log_budgets: Mutex<Option<Arc<LogBudgets>>>,
}

/// The labelled metric families shared by [`Metrics`] and every
/// [`StageMetrics`] (each is a cheap handle onto the registered family).
#[derive(Clone)]
struct Families {
    messages_in: IntCounterVec,
    messages_out: IntCounterVec,
    dead_letters: IntCounterVec,
    handler_errors: IntCounterVec,
    handler_duration: HistogramVec,
    consumer_lag: IntGaugeVec,
    handler_info: IntGaugeVec,
    handler_swaps: IntCounterVec,
    log_dropped: IntCounterVec,
}

impl Metrics {
    /// A fresh set of metrics with nothing recorded yet.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let families = Families {
            messages_in: counter_vec(
                &registry,
                "stagehost_messages_in_total",
                "Messages consumed from a stage's input topic.",
                &["stage"],
            ),
            messages_out: counter_vec(
                &registry,
                "stagehost_messages_out_total",
                "Output records a handler returned, by stage and handler.",
                &["stage", "handler"],
            ),
            dead_letters: counter_vec(
                &registry,
                "stagehost_dead_letters_total",
                "Messages sent to a stage's dead-letter topic, by error kind.",
                &["stage", "kind"],
            ),
            handler_errors: counter_vec(
                &registry,
                "stagehost_handler_errors_total",
                "Failed handler calls (retried transient errors included), by error kind.",
                &["stage", "handler", "kind"],
            ),
            handler_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "stagehost_handler_duration_seconds",
                        "Wall time of one handler call, in seconds.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["stage", "handler"],
                ),
            ),
            consumer_lag: gauge_vec(
                &registry,
                "stagehost_consumer_lag",
                "Messages in an input partition the stage has not finished (high watermark minus the stored offset).",
                &["stage", "partition"],
            ),
            handler_info: gauge_vec(
                &registry,
                "stagehost_handler_info",
                "The handler version currently serving (always 1).",
                &["handler", "version"],
            ),
            handler_swaps: counter_vec(
                &registry,
                "stagehost_handler_swaps_total",
                "Attempts to replace a handler's version, by outcome (applied or rejected).",
                &["handler", "outcome"],
            ),
            log_dropped: counter_vec(
                &registry,
                "stagehost_handler_log_dropped_total",
                "Guest output lines (stdout, stderr, log) dropped over the handler's log budget.",
                &["handler"],
            ),
        };
        Arc::new(Self {
            registry,
            families,
            versions: Mutex::new(HashMap::new()),
            log_budgets: Mutex::new(None),
        })
    }

    /// The recording handle for one stage. Create it once per stage and
    /// clone it freely: clones share their cached series.
    pub fn stage(&self, stage: &str) -> StageMetrics {
        let families = self.families.clone();
        let messages_in = families.messages_in.with_label_values(&[stage]);
        StageMetrics {
            inner: Arc::new(StageInner {
                stage: stage.to_string(),
                messages_in,
                families,
                handlers: RwLock::default(),
                dead_letters: RwLock::default(),
                lag: RwLock::default(),
            }),
        }
    }

    /// Records that `version` of `handler` now serves:
    /// `stagehost_handler_info{handler,version}` is 1 and the series of the
    /// version it replaced is removed.
    pub fn set_handler_version(&self, handler: &str, version: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let info = &self.families.handler_info;
        match versions.get_mut(handler) {
            Some(current) if current == version => {}
            Some(current) => {
                let _ = info.remove_label_values(&[handler, current.as_str()]);
                *current = version.to_string();
            }
            None => {
                versions.insert(handler.to_string(), version.to_string());
            }
        }
        info.with_label_values(&[handler, version]).set(1);
    }

    /// Removes a handler's info series, e.g. when a re-read config drops it.
    pub fn forget_handler(&self, handler: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(version) = versions.remove(handler) {
            let _ = self
                .families
                .handler_info
                .remove_label_values(&[handler, version.as_str()]);
        }
    }

    /// Counts an attempt to swap a handler's version; `outcome` is
    /// `applied` or `rejected`.
    pub fn handler_swapped(&self, handler: &str, outcome: &str) {
        self.families
            .handler_swaps
            .with_label_values(&[handler, outcome])
            .inc();
    }

    /// Exports the dropped-lines count of every budget in `budgets`
    /// (`stagehost_handler_log_dropped_total`), read at each scrape.
    pub fn watch_log_budgets(&self, budgets: Arc<LogBudgets>) {
        *self
            .log_budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(budgets);
    }

    fn sync_log_dropped(&self) {
        let budgets = self
            .log_budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for budget in budgets.iter().flat_map(|budgets| budgets.all()) {
            let dropped = budget.dropped_lines();
            if dropped == 0 {
                continue;
            }
            let counter = self
                .families
                .log_dropped
                .with_label_values(&[budget.handler()]);
            counter.inc_by(dropped.saturating_sub(counter.get()));
        }
    }

    /// Every metric in the Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        self.sync_log_dropped();
        let mut text = String::new();
        if let Err(err) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::error!(cause = %err, "encoding metrics failed");
        }
        text
    }
}

/// A stage's recording handle; see [`Metrics::stage`].
#[derive(Clone)]
pub struct StageMetrics {
    inner: Arc<StageInner>,
}

struct StageInner {
    stage: String,
    messages_in: IntCounter,
    families: Families,
    handlers: RwLock<HashMap<String, Arc<HandlerSeries>>>,
    dead_letters: RwLock<HashMap<String, IntCounter>>,
    lag: RwLock<HashMap<i32, IntGauge>>,
}

/// One handler's series in one stage; see [`StageMetrics::handler_metrics`].
#[derive(Clone)]
pub struct HandlerMetrics(Arc<HandlerSeries>);

impl HandlerMetrics {
    /// Counts the outputs one handler call returned
    /// (`stagehost_messages_out_total`).
    pub fn outputs(&self, count: u64) {
        self.0.outputs.inc_by(count);
    }

    /// Records the wall time of one handler call
    /// (`stagehost_handler_duration_seconds`).
    pub fn call_took(&self, seconds: f64) {
        self.0.duration.observe(seconds);
    }
}

/// The series of one handler in one stage.
struct HandlerSeries {
    outputs: IntCounter,
    duration: Histogram,
    errors: RwLock<HashMap<String, IntCounter>>,
}

impl StageMetrics {
    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.inner.stage
    }

    /// Counts one consumed message (`stagehost_messages_in_total`).
    pub fn message_in(&self) {
        self.inner.messages_in.inc();
    }

    /// The recording handle of one handler's series in this stage; a
    /// partition worker keeps it, so the hot path looks nothing up.
    pub fn handler_metrics(&self, handler: &str) -> HandlerMetrics {
        HandlerMetrics(self.handler(handler))
    }

    /// Counts one dead-lettered message (`stagehost_dead_letters_total`).
    pub fn dead_lettered(&self, kind: &str) {
        let inner = &*self.inner;
        cached(&inner.dead_letters, kind, || {
            inner
                .families
                .dead_letters
                .with_label_values(&[inner.stage.as_str(), kind])
        })
        .inc();
    }

    /// Counts one failed handler call (`stagehost_handler_errors_total`);
    /// `kind` is a [`HandlerFailure`](crate::sandbox::HandlerFailure) kind.
    pub fn handler_error(&self, handler: &str, kind: &str) {
        let series = self.handler(handler);
        cached(&series.errors, kind, || {
            self.inner.families.handler_errors.with_label_values(&[
                self.inner.stage.as_str(),
                handler,
                kind,
            ])
        })
        .inc();
    }

    /// Sets how far the stage is behind on one input partition
    /// (`stagehost_consumer_lag`).
    pub fn set_lag(&self, partition: i32, lag: i64) {
        let inner = &*self.inner;
        cached(&inner.lag, &partition, || {
            inner
                .families
                .consumer_lag
                .with_label_values(&[inner.stage.as_str(), partition.to_string().as_str()])
        })
        .set(lag);
    }

    /// Removes a partition's lag series, e.g. when the partition is revoked.
    pub fn clear_lag(&self, partition: i32) {
        let inner = &*self.inner;
        let removed = inner
            .lag
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&partition);
        if removed.is_some() {
            let _ = inner
                .families
                .consumer_lag
                .remove_label_values(&[inner.stage.as_str(), partition.to_string().as_str()]);
        }
    }

    /// Sets the lag of every partition of `topic` from a librdkafka
    /// statistics document: `consumer_lag_stored` (the high watermark minus
    /// the stored offset), else `consumer_lag` (minus the committed offset).
    /// A partition this consumer does not fetch, or whose lag is unknown,
    /// loses its series.
    pub fn record_statistics(&self, topic: &str, statistics: &[u8]) {
        let stats: Statistics = match serde_json::from_slice(statistics) {
            Ok(stats) => stats,
            Err(err) => {
                tracing::debug!(stage = %self.inner.stage, cause = %err, "unreadable librdkafka statistics");
                return;
            }
        };
        let Some(topic) = stats.topics.get(topic) else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            // librdkafka lists the unassigned-messages queue as partition -1.
            let Some(partition) = partition.parse::<i32>().ok().filter(|p| *p >= 0) else {
                continue;
            };
            let fetching = !matches!(
                stats.fetch_state.as_deref(),
                Some("none" | "stopping" | "stopped")
            );
            let lag = if stats.consumer_lag_stored >= 0 {
                stats.consumer_lag_stored
            } else {
                stats.consumer_lag
            };
            if fetching && lag >= 0 {
                self.set_lag(partition, lag);
            } else {
                self.clear_lag(partition);
            }
        }
    }

    fn handler(&self, handler: &str) -> Arc<HandlerSeries> {
        let inner = &*self.inner;
        cached(&inner.handlers, handler, || {
            let labels = [inner.stage.as_str(), handler];
            Arc::new(HandlerSeries {
                outputs: inner.families.messages_out.with_label_values(&labels),
                duration: inner.families.handler_duration.with_label_values(&labels),
                errors: RwLock::default(),
            })
        })
    }
}

/// The parts of librdkafka's statistics JSON that lag needs.
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Deserialize)]
struct PartitionStatistics {
    #[serde(default)]
    fetch_state: Option<String>,
    #[serde(default = "unknown")]
    consumer_lag: i64,
    #[serde(default = "unknown")]
    consumer_lag_stored: i64,
}

fn unknown() -> i64 {
    -1
}

/// The context of a stage's consumer: turns librdkafka's periodic
/// statistics into `stagehost_consumer_lag` for the stage's input topic.
/// Statistics are only emitted when the consumer's
/// `statistics.interval.ms` is set (see [`STATISTICS_INTERVAL_MS`]).
pub struct LagContext {
    stage: StageMetrics,
    topic: String,
    trouble: Arc<BrokerTrouble>,
}

/// A `statistics.interval.ms` for stage consumers: how often lag updates.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

impl LagContext {
    /// Reports the lag on `topic` (the stage's input) into `stage`, and
    /// librdkafka's complaints into `trouble`.
    pub fn new(stage: StageMetrics, topic: &str, trouble: Arc<BrokerTrouble>) -> Self {
        Self {
            stage,
            topic: topic.to_string(),
            trouble,
        }
    }

    /// The stage's recording handle.
    pub fn stage(&self) -> &StageMetrics {
        &self.stage
    }
}

impl ClientContext for LagContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.stage.record_statistics(&self.topic, statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.trouble.log(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.trouble.error(&error, reason);
    }
}

/// Logs each assignment and revocation, so that with several hosts in a
/// group each log says which partitions it holds.
impl ConsumerContext for LagContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            let mut numbers: Vec<i32> = list.elements().iter().map(|p| p.partition()).collect();
            numbers.sort_unstable();
            format!("{numbers:?}")
        };
        let stage = self.stage.name();
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(stage, topic = %self.topic, partitions = %partitions(list), "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                tracing::info!(stage, topic = %self.topic, partitions = %partitions(list), "partitions revoked");
            }
            Rebalance::Error(err) => {
                tracing::warn!(stage, topic = %self.topic, cause = %err, "rebalance failed");
            }
        }
    }
}

/// The value cached under `key`, created by `make` on first use.
fn cached<K, Q, V>(map: &RwLock<HashMap<K, V>>, key: &Q, make: impl FnOnce() -> V) -> V
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    V: Clone,
{
    if let Some(value) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return value.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.to_owned())
        .or_insert_with(make)
        .clone()
}

fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric options are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn a_fresh_registry_exports_nothing() {
        assert_eq!(Metrics::new().encode(), "");
    }

    #[test]
    fn stage_counters_carry_their_labels() {
        let metrics = Metrics::new();
        let stage = metrics.stage("calc");
        stage.message_in();
        stage.message_in();
        stage.handler_metrics("add").outputs(3);
        stage.clone().handler_metrics("add").outputs(1);
        stage.handler_metrics("subtract").outputs(0);
        stage.dead_lettered("trap");
        stage.handler_error("add", "trap");
        stage.handler_error("add", "transient");
        stage.handler_error("add", "transient");
        stage.set_lag(0, 42);
        stage.set_lag(0, 7);
        stage.set_lag(1, 0);
        metrics.stage("other").message_in();

        let text = metrics.encode();
        let lines = lines(&text);
        for expected in [
            "stagehost_messages_in_total{stage=\"calc\"} 2",
            "stagehost_messages_in_total{stage=\"other\"} 1",
            "stagehost_messages_out_total{handler=\"add\",stage=\"calc\"} 4",
            "stagehost_messages_out_total{handler=\"subtract\",stage=\"calc\"} 0",
            "stagehost_dead_letters_total{kind=\"trap\",stage=\"calc\"} 1",
            "stagehost_handler_errors_total{handler=\"add\",kind=\"trap\",stage=\"calc\"} 1",
            "stagehost_handler_errors_total{handler=\"add\",kind=\"transient\",stage=\"calc\"} 2",
            "stagehost_consumer_lag{partition=\"0\",stage=\"calc\"} 7",
            "stagehost_consumer_lag{partition=\"1\",stage=\"calc\"} 0",
        ] {
            assert!(lines.contains(&expected), "missing `{expected}` in\n{text}");
        }
        for family in [
            "stagehost_messages_in_total",
            "stagehost_messages_out_total",
            "stagehost_dead_letters_total",
            "stagehost_handler_errors_total",
            "stagehost_consumer_lag",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no help for {family}"
            );
        }

        stage.clear_lag(1);
        let text = metrics.encode();
        assert!(!text.contains("partition=\"1\""), "{text}");
        assert!(text.contains("stagehost_consumer_lag{partition=\"0\",stage=\"calc\"} 7"));
    }

    #[test]
    fn latency_lands_in_microsecond_to_second_buckets() {
        let metrics = Metrics::new();
        let stage = metrics.stage("calc");
        let add = stage.handler_metrics("add");
        add.call_took(0.000_003);
        add.call_took(0.2);
        add.call_took(3.0);
        let text = metrics.encode();
        let lines = lines(&text);
        for expected in [
            "# HELP stagehost_handler_duration_seconds Wall time of one handler call, in seconds.",
            "# TYPE stagehost_handler_duration_seconds histogram",
            "stagehost_handler_duration_seconds_bucket{handler=\"add\",stage=\"calc\",le=\"0.000001\"} 0",
            "stagehost_handler_duration_seconds_bucket{handler=\"add\",stage=\"calc\",le=\"0.000005\"} 1",
            "stagehost_handler_duration_seconds_bucket{handler=\"add\",stage=\"calc\",le=\"0.5\"} 2",
            "stagehost_handler_duration_seconds_bucket{handler=\"add\",stage=\"calc\",le=\"1\"} 2",
            "stagehost_handler_duration_seconds_bucket{handler=\"add\",stage=\"calc\",le=\"+Inf\"} 3",
            "stagehost_handler_duration_seconds_count{handler=\"add\",stage=\"calc\"} 3",
        ] {
            assert!(lines.contains(&expected), "missing `{expected}` in\n{text}");
        }
    }

    #[test]
    fn a_version_swap_replaces_the_info_series() {
        let metrics = Metrics::new();
        metrics.set_handler_version("add", "aaaaaaaaaaaa");
        metrics.set_handler_version("subtract", "cccccccccccc");
        metrics.set_handler_version("add", "aaaaaaaaaaaa");
        let text = metrics.encode();
        assert!(text.contains("# HELP stagehost_handler_info "), "{text}");
        assert!(
            text.contains("stagehost_handler_info{handler=\"add\",version=\"aaaaaaaaaaaa\"} 1")
        );

        metrics.set_handler_version("add", "bbbbbbbbbbbb");
        metrics.handler_swapped("add", "applied");
        metrics.handler_swapped("add", "rejected");
        metrics.handler_swapped("add", "rejected");
        let text = metrics.encode();
        let lines = lines(&text);
        assert!(!text.contains("aaaaaaaaaaaa"), "{text}");
        for expected in [
            "stagehost_handler_info{handler=\"add\",version=\"bbbbbbbbbbbb\"} 1",
            "stagehost_handler_info{handler=\"subtract\",version=\"cccccccccccc\"} 1",
            "stagehost_handler_swaps_total{handler=\"add\",outcome=\"applied\"} 1",
            "stagehost_handler_swaps_total{handler=\"add\",outcome=\"rejected\"} 2",
        ] {
            assert!(lines.contains(&expected), "missing `{expected}` in\n{text}");
        }
        assert!(text.contains("# HELP stagehost_handler_swaps_total "));

        metrics.forget_handler("subtract");
        metrics.forget_handler("multiply");
        let text = metrics.encode();
        assert!(!text.contains("subtract"), "{text}");
        assert!(
            text.contains("stagehost_handler_info{handler=\"add\",version=\"bbbbbbbbbbbb\"} 1")
        );
    }

    #[test]
    fn lag_comes_from_librdkafka_statistics() {
        let metrics = Metrics::new();
        let stage = metrics.stage("calc");
        stage.set_lag(3, 9);
        let statistics = br#"{
            "name": "rdkafka#consumer-1", "type": "consumer", "ts": 1,
            "brokers": {},
            "topics": {
                "calc.in": {"topic": "calc.in", "partitions": {
                    "0": {"partition": 0, "fetch_state": "active", "consumer_lag": 12, "consumer_lag_stored": 10},
                    "1": {"partition": 1, "fetch_state": "active", "consumer_lag": 4, "consumer_lag_stored": -1},
                    "2": {"partition": 2, "fetch_state": "active", "consumer_lag": -1, "consumer_lag_stored": -1},
                    "3": {"partition": 3, "fetch_state": "none", "consumer_lag": 9, "consumer_lag_stored": 9},
                    "-1": {"partition": -1, "consumer_lag": 5, "consumer_lag_stored": 5}
                }},
                "other": {"topic": "other", "partitions": {
                    "7": {"partition": 7, "fetch_state": "active", "consumer_lag": 1, "consumer_lag_stored": 1}
                }}
            }
        }"#;
        let context = LagContext::new(stage.clone(), "calc.in", Arc::default());
        context.stats_raw(statistics);
        context.stats_raw(b"not json");
        let text = metrics.encode();
        let lag: Vec<&str> = lines(&text)
            .into_iter()
            .filter(|line| line.starts_with("stagehost_consumer_lag{"))
            .collect();
        assert_eq!(
            lag,
            [
                "stagehost_consumer_lag{partition=\"0\",stage=\"calc\"} 10",
                "stagehost_consumer_lag{partition=\"1\",stage=\"calc\"} 4",
            ],
            "{text}"
        );
    }

    #[test]
    fn metrics_values_are_independent() {
        let one = Metrics::new();
        let two = Metrics::new();
        one.stage("s").message_in();
        assert!(
            one.encode()
                .contains("stagehost_messages_in_total{stage=\"s\"} 1")
        );
        assert_eq!(two.encode(), "");
    }
}
