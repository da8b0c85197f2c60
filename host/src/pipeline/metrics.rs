//! What the message path records, as Prometheus series: messages in and
//! out, dead letters by kind, handler errors and call times, and consumer
//! lag from librdkafka's statistics.
//!
//! A [`StageMetrics`] handle is made once per stage from the host's
//! [`MetricFamilies`] (registered by the control layer): it resolves each
//! label set the first time it is used and keeps the series handle, so
//! recording a message is an atomic add behind a read lock, with no
//! allocation.

use super::recent::RecentDeadLetters;
use crate::handlers::ErrorKind;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use serde::Deserialize;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

/// The labelled families the message path records into (each a cheap
/// handle onto the registered family).
#[derive(Clone)]
pub struct MetricFamilies {
    /// `stagehost_messages_in_total{stage}`.
    pub messages_in: IntCounterVec,
    /// `stagehost_messages_out_total{stage,handler}`.
    pub messages_out: IntCounterVec,
    /// `stagehost_dead_letters_total{stage,kind}`.
    pub dead_letters: IntCounterVec,
    /// `stagehost_handler_errors_total{stage,handler,kind}`.
    pub handler_errors: IntCounterVec,
    /// `stagehost_handler_duration_seconds{stage,handler}`.
    pub handler_duration: HistogramVec,
    /// `stagehost_handler_batches_total{stage,handler}`.
    pub handler_batches: IntCounterVec,
    /// `stagehost_handler_batched_messages_total{stage,handler}`.
    pub handler_batched_messages: IntCounterVec,
    /// `stagehost_consumer_lag{stage,partition}`.
    pub consumer_lag: IntGaugeVec,
    /// `stagehost_state_restored_records_total{stage}`.
    pub state_restored_records: IntCounterVec,
    /// `stagehost_state_restore_seconds_total{stage}`.
    pub state_restore_seconds: prometheus::CounterVec,
    /// `stagehost_state_bytes{stage,partition}`.
    pub state_bytes: IntGaugeVec,
    /// The last dead letters of every stage (not a Prometheus series).
    pub recent_dead_letters: Arc<RecentDeadLetters>,
}

/// A stage's recording handle. Clones share their cached series.
#[derive(Clone)]
pub struct StageMetrics {
    inner: Arc<StageInner>,
}

struct StageInner {
    stage: String,
    messages_in: IntCounter,
    families: MetricFamilies,
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

    /// Counts one `handle-batch` call of `messages` messages
    /// (`stagehost_handler_batches_total`,
    /// `stagehost_handler_batched_messages_total`).
    pub fn batch(&self, messages: usize) {
        self.0.batches.inc();
        self.0.batched_messages.inc_by(messages as u64);
    }
}

/// The series of one handler in one stage.
struct HandlerSeries {
    outputs: IntCounter,
    duration: Histogram,
    batches: IntCounter,
    batched_messages: IntCounter,
    errors: RwLock<HashMap<String, IntCounter>>,
}

impl StageMetrics {
    /// The recording handle of `stage`.
    pub fn new(families: &MetricFamilies, stage: &str) -> Self {
        let families = families.clone();
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
    pub fn dead_lettered(&self, kind: ErrorKind) {
        let inner = &*self.inner;
        let kind = kind.as_str();
        cached(&inner.dead_letters, kind, || {
            inner
                .families
                .dead_letters
                .with_label_values(&[inner.stage.as_str(), kind])
        })
        .inc();
    }

    /// Where the stage keeps its last dead letters, for the console.
    pub fn recent_dead_letters(&self) -> &RecentDeadLetters {
        &self.inner.families.recent_dead_letters
    }

    /// Counts one failed handler call (`stagehost_handler_errors_total`).
    pub fn handler_error(&self, handler: &str, kind: ErrorKind) {
        let series = self.handler(handler);
        let kind = kind.as_str();
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

    /// Records one restore or catch-up of a partition's state
    /// (`stagehost_state_restored_records_total`,
    /// `stagehost_state_restore_seconds_total`, `stagehost_state_bytes`).
    pub fn state_restored(&self, partition: i32, records: u64, seconds: f64, bytes: u64) {
        let inner = &*self.inner;
        let stage = inner.stage.as_str();
        inner
            .families
            .state_restored_records
            .with_label_values(&[stage])
            .inc_by(records);
        inner
            .families
            .state_restore_seconds
            .with_label_values(&[stage])
            .inc_by(seconds);
        self.set_state_bytes(partition, bytes);
    }

    /// Sets the size of a partition's state (`stagehost_state_bytes`).
    pub fn set_state_bytes(&self, partition: i32, bytes: u64) {
        let inner = &*self.inner;
        inner
            .families
            .state_bytes
            .with_label_values(&[inner.stage.as_str(), partition.to_string().as_str()])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
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
                batches: inner.families.handler_batches.with_label_values(&labels),
                batched_messages: inner
                    .families
                    .handler_batched_messages
                    .with_label_values(&labels),
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
