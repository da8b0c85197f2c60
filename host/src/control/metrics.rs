//! Prometheus metrics: the host's registry and what the control layer
//! records itself (which handler versions serve, swaps, dropped guest
//! output), and the families the message path records into through a
//! [`StageMetrics`] handle per stage (see [`crate::pipeline::metrics`]).
//!
//! Each [`Metrics`] value has its own registry (never the process-global
//! one), so tests can create as many as they like. Consumer lag comes from
//! librdkafka's own statistics, without any work on the message path.

use crate::handlers::sandbox::LogBudgets;
use crate::pipeline::metrics::{MetricFamilies, StageMetrics};
use crate::pipeline::recent::RecentDeadLetter;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Upper bounds of the handler duration histogram, in seconds: 1 µs to 1 s.
pub const DURATION_BUCKETS: [f64; 13] = [
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0,
];

/// Every metric of one host, in a registry of its own.
pub struct Metrics {
    registry: Registry,
    stages: MetricFamilies,
    handler_info: IntGaugeVec,
    handler_swaps: IntCounterVec,
    log_dropped: IntCounterVec,
    /// The version currently exported per handler, so a swap can remove the
    /// previous version's info series.
    versions: Mutex<HashMap<String, String>>,
    /// The sandbox's guest-output budgets, read at each scrape.
    log_budgets: Mutex<Option<Arc<LogBudgets>>>,
}

impl Metrics {
    /// A fresh set of metrics with nothing recorded yet.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let stages = MetricFamilies {
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
            handler_batches: counter_vec(
                &registry,
                "stagehost_handler_batches_total",
                "handle-batch calls, by stage and handler (each of several messages already fetched).",
                &["stage", "handler"],
            ),
            handler_batched_messages: counter_vec(
                &registry,
                "stagehost_handler_batched_messages_total",
                "Messages handed to a handler in handle-batch calls; over stagehost_handler_batches_total, the mean batch size.",
                &["stage", "handler"],
            ),
            consumer_lag: gauge_vec(
                &registry,
                "stagehost_consumer_lag",
                "Messages in an input partition the stage has not finished (high watermark minus the stored offset).",
                &["stage", "partition"],
            ),
            state_restored_records: counter_vec(
                &registry,
                "stagehost_state_restored_records_total",
                "Changelog records read to restore or catch up a stateful stage's partitions.",
                &["stage"],
            ),
            state_restore_seconds: register(
                &registry,
                prometheus::CounterVec::new(
                    prometheus::Opts::new(
                        "stagehost_state_restore_seconds_total",
                        "Time spent restoring or catching up a stateful stage's partitions, in seconds.",
                    ),
                    &["stage"],
                ),
            ),
            state_bytes: gauge_vec(
                &registry,
                "stagehost_state_bytes",
                "Bytes of keys and values in a stateful stage's partition (its store, as of the last restore or checkpoint).",
                &["stage", "partition"],
            ),
            recent_dead_letters: Arc::default(),
        };
        let handler_info = gauge_vec(
            &registry,
            "stagehost_handler_info",
            "The handler version currently serving (always 1).",
            &["handler", "version"],
        );
        let handler_swaps = counter_vec(
            &registry,
            "stagehost_handler_swaps_total",
            "Attempts to replace a handler's version, by outcome (applied or rejected).",
            &["handler", "outcome"],
        );
        let log_dropped = counter_vec(
            &registry,
            "stagehost_handler_log_dropped_total",
            "Guest output lines (stdout, stderr, log) dropped over the handler's log budget.",
            &["handler"],
        );
        Arc::new(Self {
            registry,
            stages,
            handler_info,
            handler_swaps,
            log_dropped,
            versions: Mutex::new(HashMap::new()),
            log_budgets: Mutex::new(None),
        })
    }

    /// The recording handle for one stage. Create it once per stage and
    /// clone it freely: clones share their cached series.
    pub fn stage(&self, stage: &str) -> StageMetrics {
        StageMetrics::new(&self.stages, stage)
    }

    /// Records that `version` of `handler` now serves:
    /// `stagehost_handler_info{handler,version}` is 1 and the series of the
    /// version it replaced is removed.
    pub fn set_handler_version(&self, handler: &str, version: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let info = &self.handler_info;
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

    /// The last dead letters of every stage, newest first (`GET /dead-letters`).
    pub fn recent_dead_letters(&self) -> Vec<RecentDeadLetter> {
        self.stages.recent_dead_letters.newest_first()
    }

    /// Removes a handler's info series, e.g. when a re-read config drops it.
    pub fn forget_handler(&self, handler: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(version) = versions.remove(handler) {
            let _ = self
                .handler_info
                .remove_label_values(&[handler, version.as_str()]);
        }
    }

    /// Counts an attempt to swap a handler's version; `outcome` is
    /// `applied` or `rejected`.
    pub fn handler_swapped(&self, handler: &str, outcome: &str) {
        self.handler_swaps
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
            let counter = self.log_dropped.with_label_values(&[budget.handler()]);
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
    use crate::handlers::ErrorKind;

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
        stage.dead_lettered(ErrorKind::Trap);
        stage.handler_error("add", ErrorKind::Trap);
        stage.handler_error("add", ErrorKind::Transient);
        stage.handler_error("add", ErrorKind::Transient);
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
        stage.record_statistics("calc.in", statistics);
        stage.record_statistics("calc.in", b"not json");
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
