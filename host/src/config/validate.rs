//! The checks a config passes before anything runs, and its resolution
//! into a [`Pipeline`]: one pass over the typed file that either names the
//! first wrong field (file, line, field, what is wrong) or returns the
//! resolved pipeline, in which the wrong states cannot be written.

use super::error::{ConfigError, Located};
use super::file::{self, Config, EMBEDDED_BROKERS};
use super::graph::Graph;
use super::locate::FieldPath;
use super::pipeline::{
    AdminSettings, Brokers, ClientProperties, Delivery, Expect, ExpectedError, HandlerPlan,
    HeaderPropagation, KafkaSettings, Pipeline, RetryPolicy, Routing, SelfTestCase, StagePlan,
    StatePlan, TopicCreation, Transactions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

/// Checks `config` and resolves it, or names its first wrong field.
pub(super) fn resolve(config: &Config, at: Located<'_>) -> Result<Pipeline, ConfigError> {
    let root = FieldPath::default();
    let kafka = resolve_kafka(&config.kafka, &at)?;
    if config.handlers.is_empty() {
        return Err(at.error(&root.key("handlers"), "at least one handler is needed"));
    }
    let mut handlers = BTreeMap::new();
    for (name, handler) in &config.handlers {
        let plan = resolve_handler(name, handler, &at)?;
        handlers.insert(name.clone(), plan);
    }
    let admin = resolve_admin(&config.admin, &at)?;
    if config.stages.is_empty() {
        return Err(at.error(&root.key("stages"), "at least one stage is needed"));
    }
    let mut names = BTreeSet::new();
    let mut stages = Vec::with_capacity(config.stages.len());
    for (index, stage) in config.stages.iter().enumerate() {
        let stage_at = root.key("stages").index(index);
        check_name(&stage.name).map_err(|why| at.error(&stage_at.key("name"), why))?;
        if !names.insert(stage.name.as_str()) {
            return Err(at.error(
                &stage_at.key("name"),
                format!("stage `{}` is defined twice", stage.name),
            ));
        }
        stages.push(resolve_stage(stage, &stage_at, config, &at)?);
    }
    for (index, topic) in config.sources.iter().flatten().enumerate() {
        check_topic(topic).map_err(|why| at.error(&root.key("sources").index(index), why))?;
    }
    let pipeline = Pipeline {
        kafka,
        admin,
        handlers,
        stages,
        sources: config.sources.clone(),
        data_dir: {
            let joined = at
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&config.data_dir);
            std::path::absolute(&joined).unwrap_or(joined)
        },
    };
    check_graph(&pipeline, &at)?;
    Ok(pipeline)
}

fn resolve_kafka(
    kafka: &file::KafkaConfig,
    at: &Located<'_>,
) -> Result<KafkaSettings, ConfigError> {
    let field = FieldPath::default().key("kafka");
    let brokers = resolve_brokers(&kafka.brokers, &field.key("brokers"), at)?;
    let topics = field.key("topics");
    if kafka.topics.partitions < 1 {
        return Err(at.error(&topics.key("partitions"), "must be at least 1"));
    }
    if kafka
        .topics
        .replication_factor
        .is_some_and(|factor| factor < 1)
    {
        return Err(at.error(&topics.key("replication_factor"), "must be at least 1"));
    }
    let transactions = field.key("transactions");
    if kafka.transactions.commit_interval_ms == 0 {
        return Err(at.error(
            &transactions.key("commit_interval_ms"),
            "must be at least 1",
        ));
    }
    if let Some(id) = &kafka.transactions.id
        && (id.trim().is_empty() || id.len() > 200)
    {
        return Err(at.error(
            &transactions.key("id"),
            "must be 1 to 200 characters (a `transactional.id` prefix)",
        ));
    }
    let delivery = match kafka.delivery {
        file::Delivery::AtLeastOnce => Delivery::AtLeastOnce,
        file::Delivery::ExactlyOnce => Delivery::ExactlyOnce(Transactions {
            id_prefix: kafka
                .transactions
                .id
                .clone()
                .unwrap_or_else(default_transactional_prefix),
            commit_interval: Duration::from_millis(kafka.transactions.commit_interval_ms),
        }),
    };
    Ok(KafkaSettings {
        brokers,
        properties: ClientProperties::from_scalars(
            &kafka.properties,
            &kafka.consumer,
            &kafka.producer,
        ),
        topics: TopicCreation {
            create: kafka.topics.create,
            partitions: kafka.topics.partitions,
            replication_factor: kafka.topics.replication_factor,
        },
        delivery,
    })
}

/// `kafka.brokers`: `embedded`, comma-separated addresses, or a list of
/// addresses (joined with commas, as librdkafka takes them).
fn resolve_brokers(
    brokers: &file::BrokersConfig,
    field: &FieldPath,
    at: &Located<'_>,
) -> Result<Brokers, ConfigError> {
    match brokers {
        file::BrokersConfig::Text(text) => {
            let text = text.trim();
            if text.is_empty() {
                Err(at.error(field, "must name at least one broker"))
            } else if text == EMBEDDED_BROKERS {
                Ok(Brokers::Embedded)
            } else {
                Ok(Brokers::Servers(text.to_string()))
            }
        }
        file::BrokersConfig::List(addresses) => {
            if addresses.is_empty() {
                return Err(at.error(field, "must name at least one broker"));
            }
            let mut servers = Vec::with_capacity(addresses.len());
            for (index, address) in addresses.iter().enumerate() {
                let address = address.trim();
                let why = if address.is_empty() {
                    Some("must be a broker address like `host:9092`".to_string())
                } else if address == EMBEDDED_BROKERS {
                    Some(format!(
                        "`{EMBEDDED_BROKERS}` is not an address: write `brokers: {EMBEDDED_BROKERS}` instead of a list"
                    ))
                } else if address.contains(',') {
                    Some(format!(
                        "`{address}` holds several addresses: write one address per item"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(at.error(&field.index(index), why));
                }
                servers.push(address);
            }
            Ok(Brokers::Servers(servers.join(",")))
        }
    }
}

/// `stagehost-<hostname>`: unique per machine and stable across restarts.
fn default_transactional_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("stagehost-{host}")
}

fn resolve_handler(
    name: &str,
    handler: &file::HandlerConfig,
    at: &Located<'_>,
) -> Result<HandlerPlan, ConfigError> {
    let field = FieldPath::default().key("handlers").key(name);
    check_name(name).map_err(|why| at.error(&field, why))?;
    if handler.path.as_os_str().is_empty() {
        return Err(at.error(&field.key("path"), "must name a .wasm file"));
    }
    let limits = &handler.limits;
    let limits_at = field.key("limits");
    if limits.memory_mib == 0 || limits.memory_mib > 4096 {
        return Err(at.error(&limits_at.key("memory_mib"), "must be between 1 and 4096"));
    }
    for (key, zero) in [
        ("timeout_ms", limits.timeout_ms == 0),
        ("fuel", limits.fuel == Some(0)),
        ("max_outputs", limits.max_outputs == 0),
        ("max_output_bytes", limits.max_output_bytes == 0),
        ("state_bytes", limits.state_bytes == 0),
        ("state_writes", limits.state_writes == 0),
    ] {
        if zero {
            return Err(at.error(&limits_at.key(key), "must be at least 1"));
        }
    }
    let log = limits.log;
    let log_at = limits_at.key("log");
    for (key, value) in [
        ("lines_per_second", u64::from(log.lines_per_second)),
        ("burst_lines", u64::from(log.burst_lines)),
        ("bytes_per_second", log.bytes_per_second),
        ("burst_bytes", log.burst_bytes),
    ] {
        if value == 0 {
            return Err(at.error(&log_at.key(key), "must be at least 1"));
        }
    }
    if log.max_line_bytes < 80 {
        return Err(at.error(&log_at.key("max_line_bytes"), "must be at least 80"));
    }
    let mut self_test = Vec::with_capacity(handler.self_test.len());
    for (index, case) in handler.self_test.iter().enumerate() {
        let case_at = field.key("self_test").index(index);
        let expect = match (&case.output, case.error.as_deref()) {
            (Some(output), None) => Expect::Output(output.clone()),
            (None, Some("invalid-input")) => Expect::Error(ExpectedError::InvalidInput),
            (None, Some("transient")) => Expect::Error(ExpectedError::Transient),
            (None, Some(other)) => {
                return Err(at.error(
                    &case_at.key("error"),
                    format!("`{other}` is not `invalid-input` or `transient`"),
                ));
            }
            _ => {
                return Err(at.error(&case_at, "set exactly one of `output` and `error`"));
            }
        };
        self_test.push(SelfTestCase {
            input: case.input.clone(),
            key: case.key.clone(),
            state: case.state.clone(),
            expect_state: case
                .expect_state
                .iter()
                .map(|(key, value)| (key.clone(), Some(value.clone()).filter(|v| !v.is_null())))
                .collect(),
            expect,
        });
    }
    let base = at.path.parent().unwrap_or(Path::new("."));
    let joined = base.join(&handler.path);
    Ok(HandlerPlan {
        name: name.to_string(),
        path: std::path::absolute(&joined).unwrap_or(joined),
        written_path: handler.path.clone(),
        limits: *limits,
        settings: handler
            .settings
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect(),
        watch: handler.watch,
        self_test,
    })
}

fn resolve_admin(
    admin: &file::AdminConfig,
    at: &Located<'_>,
) -> Result<AdminSettings, ConfigError> {
    let field = FieldPath::default().key("admin");
    let token = admin.token.clone().filter(|token| !token.is_empty());
    if !admin.enabled {
        return Ok(AdminSettings {
            listen: None,
            token,
        });
    }
    let address: std::net::SocketAddr = admin.listen.parse().map_err(|_| {
        at.error(
            &field.key("listen"),
            format!("`{}` is not an address like 127.0.0.1:9644", admin.listen),
        )
    })?;
    if !address.ip().is_loopback() && token.is_none() {
        return Err(at.error(
            &field.key("token"),
            "a token is required when the admin port listens beyond loopback",
        ));
    }
    Ok(AdminSettings {
        listen: Some(address),
        token,
    })
}

fn resolve_stage(
    stage: &file::StageConfig,
    field: &FieldPath,
    config: &Config,
    at: &Located<'_>,
) -> Result<StagePlan, ConfigError> {
    for (key, topic) in [
        ("input", &stage.input),
        ("output", &stage.output),
        ("dead_letter", &stage.dead_letter),
    ] {
        check_topic(topic).map_err(|why| at.error(&field.key(key), why))?;
    }
    for (key, topic) in [
        ("output", &stage.output),
        ("dead_letter", &stage.dead_letter),
    ] {
        check_writable(topic).map_err(|why| at.error(&field.key(key), why))?;
    }
    for (index, topic) in stage.allowed_topics.iter().enumerate() {
        let topic_at = field.key("allowed_topics").index(index);
        check_topic(topic).map_err(|why| at.error(&topic_at, why))?;
        check_writable(topic).map_err(|why| at.error(&topic_at, why))?;
        if topic == &stage.input || topic == &stage.dead_letter {
            return Err(at.error(
                &topic_at,
                format!("`{topic}` is the stage's own input or dead-letter topic"),
            ));
        }
    }
    if stage.output == stage.input || stage.dead_letter == stage.input {
        let key = if stage.output == stage.input {
            "output"
        } else {
            "dead_letter"
        };
        return Err(at.error(
            &field.key(key),
            format!(
                "`{}` is also the stage's input: it would feed itself",
                stage.input
            ),
        ));
    }
    let routing = resolve_routing(stage, field, config, at)?;
    for (branch, topic) in &stage.branches {
        let branch_at = field.key("branches").key(branch.clone());
        check_name(branch).map_err(|why| at.error(&branch_at, why))?;
        check_topic(topic).map_err(|why| at.error(&branch_at, why))?;
        check_writable(topic).map_err(|why| at.error(&branch_at, why))?;
    }
    let parallelism = match stage.parallelism {
        None => None,
        Some(n) => Some(
            NonZeroUsize::new(n)
                .ok_or_else(|| at.error(&field.key("parallelism"), "must be at least 1"))?,
        ),
    };
    let max_batch = match stage.max_batch {
        None => super::DEFAULT_MAX_BATCH,
        Some(n) if n > super::MAX_MAX_BATCH => {
            return Err(at.error(
                &field.key("max_batch"),
                format!("must be at most {}", super::MAX_MAX_BATCH),
            ));
        }
        Some(n) => NonZeroUsize::new(n)
            .ok_or_else(|| at.error(&field.key("max_batch"), "must be at least 1"))?,
    };
    let propagate_headers = header_propagation(stage, field, at)?;
    let retry_at = field.key("retry");
    let retry = &stage.retry;
    let max_attempts = NonZeroU32::new(retry.max_attempts)
        .ok_or_else(|| at.error(&retry_at.key("max_attempts"), "must be at least 1"))?;
    if retry.max_backoff_ms < retry.initial_backoff_ms {
        return Err(at.error(
            &retry_at.key("max_backoff_ms"),
            "must not be less than initial_backoff_ms",
        ));
    }
    let group = stage
        .group
        .clone()
        .unwrap_or_else(|| format!("{}.{}", config.kafka.group, stage.name));
    let state = match &stage.state {
        None => None,
        Some(state) => {
            let changelog = state
                .changelog
                .clone()
                .unwrap_or_else(|| format!("{group}-changelog"));
            let changelog_at = field.key("state").key("changelog");
            check_topic(&changelog).map_err(|why| at.error(&changelog_at, why))?;
            check_writable(&changelog).map_err(|why| at.error(&changelog_at, why))?;
            if changelog == stage.input
                || changelog == stage.output
                || changelog == stage.dead_letter
            {
                return Err(at.error(
                    &changelog_at,
                    format!("`{changelog}` is one of the stage's own topics"),
                ));
            }
            let base = at.path.parent().unwrap_or(Path::new("."));
            let dir = match &config.state_dir {
                Some(dir) => base.join(dir),
                None => base.join(&config.data_dir).join("state"),
            }
            .join(&stage.name);
            Some(StatePlan {
                changelog,
                dir: std::path::absolute(&dir).unwrap_or(dir),
            })
        }
    };
    Ok(StagePlan {
        name: stage.name.clone(),
        input: stage.input.clone(),
        output: stage.output.clone(),
        dead_letter: stage.dead_letter.clone(),
        branches: stage.branches.clone(),
        allowed_topics: stage.allowed_topics.iter().cloned().collect(),
        parallelism,
        max_batch,
        propagate_headers,
        group,
        routing,
        retry: RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(retry.max_backoff_ms),
        },
        state,
    })
}

fn resolve_routing(
    stage: &file::StageConfig,
    field: &FieldPath,
    config: &Config,
    at: &Located<'_>,
) -> Result<Routing, ConfigError> {
    let known = || {
        config
            .handlers
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (&stage.handler, &stage.route) {
        (Some(_), Some(_)) => Err(at.error(
            &field.key("route"),
            "set either `handler` or `route`, not both",
        )),
        (None, None) => Err(at.error(field, "needs a `handler` or a `route`")),
        (Some(handler), None) => {
            if config.handlers.contains_key(handler) {
                Ok(Routing::Single(handler.clone()))
            } else {
                Err(at.error(
                    &field.key("handler"),
                    format!("unknown handler `{handler}` (defined: {})", known()),
                ))
            }
        }
        (None, Some(route)) => {
            let route_at = field.key("route");
            if route.field.is_empty() {
                return Err(at.error(&route_at.key("field"), "must not be empty"));
            }
            if route.to.is_empty() {
                return Err(at.error(&route_at.key("to"), "needs at least one value"));
            }
            for (value, handler) in &route.to {
                if !config.handlers.contains_key(handler) {
                    return Err(at.error(
                        &route_at.key("to").key(value.clone()),
                        format!("unknown handler `{handler}` (defined: {})", known()),
                    ));
                }
            }
            Ok(Routing::ByField {
                field: route.field.clone(),
                to: route.to.clone(),
            })
        }
    }
}

/// The stages must form a graph without cycles, and with `sources` set,
/// every input must be fed by a source or a stage.
fn check_graph(pipeline: &Pipeline, at: &Located<'_>) -> Result<(), ConfigError> {
    let stages = FieldPath::default().key("stages");
    let graph = Graph::of(pipeline);
    if let Some(dangling) = graph.dangling().first() {
        return Err(at.error(
            &stages.index(dangling.stage).key("input"),
            format!(
                "`{}` is a dangling input: no stage produces it and `sources` does not list it",
                dangling.topic
            ),
        ));
    }
    if let Some(cycle) = graph.cycle() {
        return Err(at.error(
            &stages.index(cycle[0]).key("input"),
            format!("the stages form a cycle: {}", graph.describe_cycle(&cycle)),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Err(format!(
            "name `{name}` must be non-empty and use only letters, digits, `-` and `_`"
        ))
    } else {
        Ok(())
    }
}

/// Checks a Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{topic}` is not a valid Kafka topic name (1 to 249 of letters, digits, `.`, `_`, `-`)"
        ))
    }
}

/// Whether a topic is Kafka's own: a name starting with `__`
/// (`__consumer_offsets`, `__transaction_state`, ...). No handler may write
/// to one, whatever the config says.
pub fn is_internal_topic(topic: &str) -> bool {
    topic.starts_with("__")
}

/// Checks that the host may write to a topic: not an internal one.
fn check_writable(topic: &str) -> Result<(), String> {
    if is_internal_topic(topic) {
        Err(format!(
            "`{topic}` is an internal Kafka topic (its name starts with `__`): nothing may write to it"
        ))
    } else {
        Ok(())
    }
}

/// A stage's `propagate_headers`: `all` when it does not say.
fn header_propagation(
    stage: &file::StageConfig,
    field: &FieldPath,
    at: &Located<'_>,
) -> Result<HeaderPropagation, ConfigError> {
    let field = field.key("propagate_headers");
    match &stage.propagate_headers {
        None => Ok(HeaderPropagation::All),
        Some(file::PropagateHeadersConfig::Word(word)) => match word.as_str() {
            "all" => Ok(HeaderPropagation::All),
            "none" => Ok(HeaderPropagation::None),
            other => Err(at.error(
                &field,
                format!(
                    "`{other}` is not `all`, `none` or a list of header names like `[traceparent, correlation-id]`"
                ),
            )),
        },
        Some(file::PropagateHeadersConfig::Names(names)) => {
            let mut kept = BTreeSet::new();
            for (index, name) in names.iter().enumerate() {
                if name.is_empty() {
                    return Err(at.error(&field.index(index), "a header name may not be empty"));
                }
                kept.insert(name.clone());
            }
            Ok(HeaderPropagation::Only(kept))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_topic_names() {
        assert!(check_topic("calc-requests").is_ok());
        assert!(check_topic("a.b_c-1").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("has space").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic(&"x".repeat(250)).is_err());
    }
}
