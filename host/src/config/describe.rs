//! The plan `host check` prints: the resolved pipeline, defaults filled
//! in, each secret shown as the reference it came from (or hidden).

use super::file::EMBEDDED_BROKERS;
use super::graph::Graph;
use super::load::LoadedConfig;
use super::locate::FieldPath;
use super::pipeline::{Brokers, Delivery, Routing};
use super::secrets::looks_secret;

impl LoadedConfig {
    /// A field's value as the plan shows it: the `${NAME}` or `file:PATH`
    /// it came from, if it came from one.
    pub fn shown(&self, field: &FieldPath, value: &str) -> String {
        self.references
            .get(&field.to_string())
            .cloned()
            .unwrap_or_else(|| value.to_string())
    }

    /// [`LoadedConfig::shown`] for a named property or setting: a value
    /// written into the file under a secret-looking name is hidden too.
    pub fn shown_named(&self, field: &FieldPath, name: &str, value: &str) -> String {
        match self.references.get(&field.to_string()) {
            Some(reference) => reference.clone(),
            None if looks_secret(name) => "*** (hidden)".to_string(),
            None => value.to_string(),
        }
    }

    /// The resolved pipeline, defaults filled in, as `host check` prints it.
    pub fn plan(&self) -> String {
        use std::fmt::Write as _;
        let config = &self.pipeline;
        let mut out = String::new();
        let kafka = &config.kafka;
        let brokers_at = FieldPath::default().key("kafka").key("brokers");
        let brokers = match &kafka.brokers {
            Brokers::Embedded => EMBEDDED_BROKERS.to_string(),
            // A list's items may each be a reference, shown instead.
            Brokers::Servers(servers) => servers
                .split(',')
                .enumerate()
                .map(|(index, server)| self.shown(&brokers_at.index(index), server))
                .collect::<Vec<_>>()
                .join(","),
        };
        let _ = writeln!(out, "brokers: {}", self.shown(&brokers_at, &brokers));
        match &kafka.delivery {
            Delivery::AtLeastOnce => {
                let _ = writeln!(out, "delivery: at-least-once");
            }
            Delivery::ExactlyOnce(transactions) => {
                let _ = writeln!(
                    out,
                    "delivery: exactly-once (transactions committed every {} ms)",
                    transactions.commit_interval.as_millis()
                );
            }
        }
        if kafka.topics.create {
            let _ = writeln!(
                out,
                "missing topics are created with {} partition(s), replication factor {}",
                kafka.topics.partitions,
                kafka
                    .topics
                    .replication_factor
                    .map_or("of the brokers' default".to_string(), |f| f.to_string())
            );
        }
        for (scope, section, properties) in [
            ("all clients", "properties", &kafka.properties.all),
            ("consumers", "consumer", &kafka.properties.consumer),
            ("producers", "producer", &kafka.properties.producer),
        ] {
            for (key, value) in properties {
                let field = FieldPath::default()
                    .key("kafka")
                    .key(section)
                    .key(key.clone());
                let value = self.shown_named(&field, key, value);
                let _ = writeln!(out, "property for {scope}: {key}={value}");
            }
        }
        if let Some(listen) = config.admin.listen {
            let token = if config.admin.token.is_some() {
                "required"
            } else {
                "none"
            };
            let _ = writeln!(out, "admin port: {listen} (token: {token})");
        }
        for (name, handler) in &config.handlers {
            let limits = handler.limits;
            let fuel = limits
                .fuel
                .map(|f| format!(", fuel {f}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "handler {name}: {} (memory {} MiB, timeout {} ms{fuel}; per message at most {} output(s), {} bytes in all)",
                handler.written_path.display(),
                limits.memory_mib,
                limits.timeout_ms,
                limits.max_outputs,
                limits.max_output_bytes
            );
            let log = limits.log;
            let _ = writeln!(
                out,
                "  guest log: {} line(s)/s (burst {}), {} bytes/s (burst {}), lines cut at {} bytes",
                log.lines_per_second,
                log.burst_lines,
                log.bytes_per_second,
                log.burst_bytes,
                log.max_line_bytes
            );
            let stateful = config.stages.iter().any(|stage| {
                stage.state.is_some() && stage.routing.handlers().any(|used| used == name)
            });
            if stateful {
                let _ = writeln!(
                    out,
                    "  state: at most {} bytes per partition, {} change(s) per message",
                    limits.state_bytes, limits.state_writes
                );
            }
            for (key, value) in &handler.settings {
                let field = FieldPath::default()
                    .key("handlers")
                    .key(name.clone())
                    .key("settings")
                    .key(key.clone());
                let value = self.shown_named(&field, key, value);
                let _ = writeln!(out, "  setting {key}={value}");
            }
            if !handler.watch {
                let _ = writeln!(out, "  file not watched");
            }
            if !handler.self_test.is_empty() {
                let _ = writeln!(out, "  self-test: {} case(s)", handler.self_test.len());
            }
        }
        let graph = Graph::of(config);
        let sources: Vec<&str> = graph.sources().into_iter().collect();
        let _ = writeln!(out, "sources (fed from outside): {}", sources.join(", "));
        for stage in &config.stages {
            if !self.runs(&stage.name) {
                let _ = writeln!(out, "stage {}: runs elsewhere (not selected)", stage.name);
                continue;
            }
            let _ = writeln!(
                out,
                "stage {}: {} -> {} (dead letters: {}; group {})",
                stage.name, stage.input, stage.output, stage.dead_letter, stage.group
            );
            match &stage.routing {
                Routing::Single(handler) => {
                    let _ = writeln!(out, "  every message -> {handler}");
                }
                Routing::ByField { field, to } => {
                    for (value, handler) in to {
                        let _ = writeln!(out, "  {field} = {value:?} -> {handler}");
                    }
                }
            }
            for (branch, topic) in &stage.branches {
                let _ = writeln!(out, "  branch {branch} -> {topic}");
            }
            if stage.allowed_topics.is_empty() {
                let _ = writeln!(
                    out,
                    "  handlers may write only to the output and the branches"
                );
            } else {
                let _ = writeln!(
                    out,
                    "  handlers may also write to: {}",
                    stage
                        .allowed_topics
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if let Some(state) = &stage.state {
                let _ = writeln!(
                    out,
                    "  state per input partition: changelog {} (compacted), stores in {}",
                    state.changelog,
                    state.dir.display()
                );
            }
            if let Some(parallelism) = stage.parallelism {
                let _ = writeln!(out, "  at most {parallelism} partition(s) at once");
            }
            let _ = writeln!(
                out,
                "  at most {} message(s) per handler call",
                stage.max_batch
            );
            if stage.propagate_headers != crate::config::HeaderPropagation::All {
                let _ = writeln!(
                    out,
                    "  input headers passed on to outputs: {}",
                    stage.propagate_headers
                );
            }
            let retry = stage.retry;
            let _ = writeln!(
                out,
                "  transient errors: {} attempt(s), backoff {}..{} ms",
                retry.max_attempts,
                retry.initial_backoff.as_millis(),
                retry.max_backoff.as_millis()
            );
        }
        out
    }
}
