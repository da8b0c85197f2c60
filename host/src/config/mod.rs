//! The typed `config.yml`: Kafka connection, handlers and stages, parsed with
//! serde and checked before the first message is read. Every error names the
//! file, the line and the field.

mod locate;
mod secrets;

pub use locate::{FieldPath, Segment};
pub use secrets::{References, looks_secret};

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The `brokers` value that starts librdkafka's in-memory mock cluster.
pub const EMBEDDED_BROKERS: &str = "embedded";

/// A whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach Kafka and how the host's clients behave.
    pub kafka: KafkaConfig,
    /// Handler components by name.
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// Stages: each consumes one topic and routes its messages to handlers.
    /// A stage's input may be another stage's output, so stages form a graph.
    pub stages: Vec<StageConfig>,
    /// Topics fed from outside the graph. When set, every stage input must be
    /// one of these or produced by a stage (`host check` names any other as
    /// dangling); when absent, every input no stage produces is a source.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// The admin HTTP port: handler API, `/metrics`, `/healthz`.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// The `admin` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin port at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on. Port 0 picks a free port (logged at start).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token required on every request; mandatory when `listen` is not
    /// a loopback address.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9644".to_string()
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_admin_listen(),
            token: None,
        }
    }
}

/// The `kafka` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`), or `embedded` for the
    /// in-memory development broker.
    pub brokers: String,
    /// Consumer group prefix; each stage consumes as `<group>.<stage name>`
    /// unless the stage sets its own `group`.
    #[serde(default = "default_group")]
    pub group: String,
    /// librdkafka properties for every client (e.g. `security.protocol`).
    #[serde(default)]
    pub properties: BTreeMap<String, Scalar>,
    /// librdkafka properties for consumers only.
    #[serde(default)]
    pub consumer: BTreeMap<String, Scalar>,
    /// librdkafka properties for producers only.
    #[serde(default)]
    pub producer: BTreeMap<String, Scalar>,
    /// Whether and how the host creates missing topics at start.
    #[serde(default)]
    pub topics: TopicDefaults,
    /// The delivery guarantee: `at-least-once` (the default) or
    /// `exactly-once` (Kafka transactions).
    #[serde(default)]
    pub delivery: Delivery,
    /// Transaction settings, used in `exactly-once` mode.
    #[serde(default)]
    pub transactions: TransactionConfig,
}

/// The delivery guarantee of every stage.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// An input offset is committed only after all its outputs (or its
    /// dead letter) are acknowledged; a crash may repeat outputs, never
    /// lose one.
    #[default]
    AtLeastOnce,
    /// Outputs, dead letters and input offsets are committed together in a
    /// Kafka transaction; `read_committed` consumers see each output once.
    ExactlyOnce,
}

/// The `kafka.transactions` section (exactly-once mode).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    /// Prefix of the stages' `transactional.id`s (`<id>.<stage>`). It must
    /// be unique per host process and stable across its restarts, so that a
    /// restarted host fences off the unfinished transactions of the one that
    /// crashed. Default: `stagehost-<hostname>`.
    #[serde(default)]
    pub id: Option<String>,
    /// How often a stage commits its open transaction, in milliseconds:
    /// the longest time an output waits before `read_committed` consumers
    /// can see it.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
}

fn default_commit_interval_ms() -> u64 {
    100
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            id: None,
            commit_interval_ms: default_commit_interval_ms(),
        }
    }
}

impl KafkaConfig {
    /// The `transactional.id` of a stage in exactly-once mode.
    pub fn transactional_id(&self, stage: &str) -> String {
        let prefix = self.transactions.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "localhost".to_string());
            format!("stagehost-{host}")
        });
        format!("{prefix}.{stage}")
    }
}

fn default_group() -> String {
    "stagehost".to_string()
}

/// How missing topics are created at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    /// Create missing input, output and dead-letter topics at start.
    #[serde(default = "yes")]
    pub create: bool,
    /// Partitions for topics the host creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor for topics the host creates; `None` takes the
    /// brokers' `default.replication.factor`.
    #[serde(default)]
    pub replication_factor: Option<i32>,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            create: true,
            partitions: default_partitions(),
            replication_factor: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_partitions() -> i32 {
    3
}

/// A YAML scalar used as a property or setting value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean, written as `true`/`false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(value) => write!(f, "{value}"),
            Scalar::Int(value) => write!(f, "{value}"),
            Scalar::Float(value) => write!(f, "{value}"),
            Scalar::String(value) => f.write_str(value),
        }
    }
}

/// One handler component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Path of the `.wasm` component, relative to the config file.
    pub path: PathBuf,
    /// Settings passed to the handler's `init` export.
    #[serde(default)]
    pub settings: BTreeMap<String, Scalar>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Reload the handler when its file changes on disk.
    #[serde(default = "yes")]
    pub watch: bool,
    /// Cases a new version must pass before it replaces the running one.
    #[serde(default)]
    pub self_test: Vec<SelfTestCase>,
}

/// One self-test case: a JSON input and what the handler must answer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelfTestCase {
    /// The message value, as JSON.
    pub input: serde_json::Value,
    /// The one output value expected, as JSON (compared as JSON values).
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// The error kind expected instead: `invalid-input` or `transient`.
    #[serde(default)]
    pub error: Option<String>,
}

/// Per-handler sandbox limits.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory the handler may grow to, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Longest wall time one call may take, in milliseconds: the time the
    /// guest runs and the time it waits in host calls (clocks, polls,
    /// stdio) alike. At the limit the call is abandoned and its instance
    /// dropped.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Optional fuel (roughly, wasm instructions) allowed per message.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Most output records one message may produce; past it the message is
    /// dead-lettered as `invalid-output` and none of its outputs is produced.
    #[serde(default = "default_max_outputs")]
    pub max_outputs: u32,
    /// Most bytes one message's outputs may add up to (keys, values and
    /// headers); past it the message is dead-lettered as `invalid-output`.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// The budget for what the guest writes to stdout and stderr and sends
    /// to `log`, shared by the three.
    #[serde(default)]
    pub log: LogLimits,
}

fn default_memory_mib() -> u64 {
    Limits::DEFAULT.memory_mib
}
fn default_timeout_ms() -> u64 {
    Limits::DEFAULT.timeout_ms
}
fn default_max_outputs() -> u32 {
    Limits::DEFAULT.max_outputs
}
fn default_max_output_bytes() -> u64 {
    Limits::DEFAULT.max_output_bytes
}

impl Limits {
    /// The defaults, as a constant (for `..Limits::DEFAULT`).
    pub const DEFAULT: Limits = Limits {
        memory_mib: 64,
        timeout_ms: 1000,
        fuel: None,
        max_outputs: 1000,
        max_output_bytes: 8 << 20,
        log: LogLimits::DEFAULT,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How much guest output (stdout, stderr and `log` lines together) reaches
/// the host log: a token bucket of lines and one of bytes, each refilled at
/// its rate up to its burst. Lines past the budget are dropped, counted in
/// `stagehost_handler_log_dropped_total` and summarised in one line per
/// interval, so the host log grows by a bounded amount whatever a guest
/// writes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Lines per second, on average.
    #[serde(default = "default_lines_per_second")]
    pub lines_per_second: u32,
    /// Lines that may come at once after a quiet spell.
    #[serde(default = "default_burst_lines")]
    pub burst_lines: u32,
    /// Bytes per second, on average.
    #[serde(default = "default_bytes_per_second")]
    pub bytes_per_second: u64,
    /// Bytes that may come at once after a quiet spell.
    #[serde(default = "default_burst_bytes")]
    pub burst_bytes: u64,
    /// Longest line kept; the rest of a longer line is cut (and counted).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: u32,
}

fn default_lines_per_second() -> u32 {
    LogLimits::DEFAULT.lines_per_second
}
fn default_burst_lines() -> u32 {
    LogLimits::DEFAULT.burst_lines
}
fn default_bytes_per_second() -> u64 {
    LogLimits::DEFAULT.bytes_per_second
}
fn default_burst_bytes() -> u64 {
    LogLimits::DEFAULT.burst_bytes
}
fn default_max_line_bytes() -> u32 {
    LogLimits::DEFAULT.max_line_bytes
}

impl LogLimits {
    /// The defaults: a host log that grows by a few KiB a second per
    /// handler at most.
    pub const DEFAULT: LogLimits = LogLimits {
        lines_per_second: 20,
        burst_lines: 100,
        bytes_per_second: 16 << 10,
        burst_bytes: 64 << 10,
        max_line_bytes: 2048,
    };
}

impl Default for LogLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One stage: a topic consumed, routed to handlers, produced downstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Stage name, unique in the file; used in logs, headers and the group id.
    pub name: String,
    /// Topic the stage consumes.
    pub input: String,
    /// Topic the handlers' outputs go to unless an output names its own.
    pub output: String,
    /// Topic for messages that could not be processed, with the reason.
    pub dead_letter: String,
    /// Named branches: branch name → topic. A handler output whose topic is a
    /// branch name goes to that branch's topic.
    #[serde(default)]
    pub branches: BTreeMap<String, String>,
    /// Other topics the stage's handlers may name in an output, besides
    /// `output` and the `branches`. A handler output to any other topic, or
    /// to an internal topic (a name starting with `__`), turns its message
    /// into one `forbidden-topic` dead letter and none of its outputs is
    /// produced.
    #[serde(default)]
    pub allowed_topics: Vec<String>,
    /// Partitions handled at once by this stage in this host; `None` handles
    /// every assigned partition concurrently. Order within a partition is kept.
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// Consumer group for this stage (default `<kafka.group>.<name>`).
    #[serde(default)]
    pub group: Option<String>,
    /// The one handler for every message (instead of `route`).
    #[serde(default)]
    pub handler: Option<String>,
    /// Routing by a field of the JSON message (instead of `handler`).
    #[serde(default)]
    pub route: Option<RouteConfig>,
    /// Retries for a handler's `transient` errors.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// Routing by a JSON field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Top-level field whose string value selects the handler, or a JSON
    /// pointer such as `/meta/op`.
    #[serde(default = "default_route_field")]
    pub field: String,
    /// Field value → handler name.
    pub to: BTreeMap<String, String>,
}

fn default_route_field() -> String {
    "operation".to_string()
}

/// Bounded exponential backoff for transient handler errors.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; then the message is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds; doubled each time.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts, in milliseconds.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

fn default_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> u64 {
    100
}
fn default_max_backoff() -> u64 {
    2000
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
        }
    }
}

impl StageConfig {
    /// The consumer group this stage joins.
    pub fn group_id(&self, kafka: &KafkaConfig) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("{}.{}", kafka.group, self.name))
    }
}

/// A config error that names the file, the line (when known) and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when the field could be found.
    pub position: Option<(usize, usize)>,
    /// The field, e.g. `stages[0].route.to.sum`; empty for the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parsed and checked config, with its source kept for locating fields.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's text.
    pub source: String,
    /// The typed content.
    pub config: Config,
    /// The stages this host runs (`host run --stage`); `None` runs them all.
    pub selected: Option<BTreeSet<String>>,
    /// The fields whose value came from `${NAME}` or `file:PATH`, with the
    /// reference: shown instead of the value.
    pub references: References,
}

impl LoadedConfig {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let error = |position, message| ConfigError {
            file: path.to_path_buf(),
            position,
            field: String::new(),
            message,
        };
        let bytes = std::fs::read(path)
            .map_err(|err| error(None, format!("cannot read the file: {err}")))?;
        let source = String::from_utf8(bytes).map_err(|err| {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            error(
                Some((line, column)),
                "the file is not UTF-8 text (an invalid byte here)".to_string(),
            )
        })?;
        Self::from_source(path, source)
    }

    /// Parses and checks config text; `path` names it in errors and anchors
    /// relative plugin paths.
    pub fn from_source(path: &Path, source: String) -> Result<Self, ConfigError> {
        let yaml_error = |err: serde_yaml::Error| {
            let position = err.location().map(|at| (at.line(), at.column()));
            let text = without_positions(&err.to_string());
            let (field, message) = split_serde_path(&text);
            ConfigError {
                file: path.to_path_buf(),
                position,
                field,
                message,
            }
        };
        // Typed from the text first, for errors that point into it.
        let mut config: Config = serde_yaml::from_str(&source).map_err(yaml_error)?;
        let mut raw: serde_yaml::Value = serde_yaml::from_str(&source).map_err(yaml_error)?;
        let mut references = References::new();
        let base = path.parent().unwrap_or(Path::new("."));
        secrets::resolve(&mut raw, base, &FieldPath::default(), &mut references).map_err(
            |(field, message)| ConfigError {
                file: path.to_path_buf(),
                position: locate::locate(&source, &field),
                field: field.to_string(),
                message,
            },
        )?;
        if !references.is_empty() {
            // Only strings changed, into strings: this typing succeeds as the first did.
            config = serde_yaml::from_value(raw).map_err(yaml_error)?;
        }
        let loaded = Self {
            path: path.to_path_buf(),
            source,
            config,
            selected: None,
            references,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    /// Limits the stages this host runs to `names`; none given runs all.
    /// The rest of the graph is still checked, and runs elsewhere.
    pub fn select_stages(mut self, names: &[String]) -> Result<Self, ConfigError> {
        if names.is_empty() {
            self.selected = None;
            return Ok(self);
        }
        let known: BTreeSet<&str> = self.config.stages.iter().map(|s| s.name.as_str()).collect();
        if let Some(unknown) = names.iter().find(|name| !known.contains(name.as_str())) {
            let known = known.into_iter().collect::<Vec<_>>().join(", ");
            return Err(ConfigError {
                file: self.path.clone(),
                position: None,
                field: "stages".into(),
                message: format!("`--stage {unknown}`: no such stage (stages: {known})"),
            });
        }
        self.selected = Some(names.iter().cloned().collect());
        Ok(self)
    }

    /// The stages this host runs: all, or the selected ones.
    pub fn running_stages(&self) -> impl Iterator<Item = &StageConfig> {
        self.config.stages.iter().filter(|stage| {
            self.selected
                .as_ref()
                .is_none_or(|selected| selected.contains(&stage.name))
        })
    }

    /// An error about `field`, located in the source.
    pub fn error(&self, field: &FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            position: locate::locate(&self.source, field),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The absolute path of a handler's component file.
    pub fn plugin_path(&self, handler: &HandlerConfig) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let joined = base.join(&handler.path);
        std::path::absolute(&joined).unwrap_or(joined)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let root = FieldPath::default();
        let config = &self.config;
        let kafka = root.key("kafka");
        if config.kafka.brokers.trim().is_empty() {
            return Err(self.error(&kafka.key("brokers"), "must name at least one broker"));
        }
        let topics = kafka.key("topics");
        if config.kafka.topics.partitions < 1 {
            return Err(self.error(&topics.key("partitions"), "must be at least 1"));
        }
        if config
            .kafka
            .topics
            .replication_factor
            .is_some_and(|factor| factor < 1)
        {
            return Err(self.error(&topics.key("replication_factor"), "must be at least 1"));
        }
        let transactions = kafka.key("transactions");
        if config.kafka.transactions.commit_interval_ms == 0 {
            return Err(self.error(
                &transactions.key("commit_interval_ms"),
                "must be at least 1",
            ));
        }
        if let Some(id) = &config.kafka.transactions.id
            && (id.trim().is_empty() || id.len() > 200)
        {
            return Err(self.error(
                &transactions.key("id"),
                "must be 1 to 200 characters (a `transactional.id` prefix)",
            ));
        }
        if config.handlers.is_empty() {
            return Err(self.error(&root.key("handlers"), "at least one handler is needed"));
        }
        for (name, handler) in &config.handlers {
            let at = root.key("handlers").key(name.clone());
            check_name(name).map_err(|why| self.error(&at, why))?;
            if handler.path.as_os_str().is_empty() {
                return Err(self.error(&at.key("path"), "must name a .wasm file"));
            }
            let limits = at.key("limits");
            if handler.limits.memory_mib == 0 || handler.limits.memory_mib > 4096 {
                return Err(self.error(&limits.key("memory_mib"), "must be between 1 and 4096"));
            }
            if handler.limits.timeout_ms == 0 {
                return Err(self.error(&limits.key("timeout_ms"), "must be at least 1"));
            }
            if handler.limits.fuel == Some(0) {
                return Err(self.error(&limits.key("fuel"), "must be at least 1"));
            }
            if handler.limits.max_outputs == 0 {
                return Err(self.error(&limits.key("max_outputs"), "must be at least 1"));
            }
            if handler.limits.max_output_bytes == 0 {
                return Err(self.error(&limits.key("max_output_bytes"), "must be at least 1"));
            }
            let log = handler.limits.log;
            let log_at = limits.key("log");
            for (field, value) in [
                ("lines_per_second", u64::from(log.lines_per_second)),
                ("burst_lines", u64::from(log.burst_lines)),
                ("bytes_per_second", log.bytes_per_second),
                ("burst_bytes", log.burst_bytes),
            ] {
                if value == 0 {
                    return Err(self.error(&log_at.key(field), "must be at least 1"));
                }
            }
            if log.max_line_bytes < 80 {
                return Err(self.error(&log_at.key("max_line_bytes"), "must be at least 80"));
            }
            for (index, case) in handler.self_test.iter().enumerate() {
                let case_at = at.key("self_test").index(index);
                match (&case.output, case.error.as_deref()) {
                    (Some(_), None) | (None, Some("invalid-input" | "transient")) => {}
                    (None, Some(other)) => {
                        return Err(self.error(
                            &case_at.key("error"),
                            format!("`{other}` is not `invalid-input` or `transient`"),
                        ));
                    }
                    _ => {
                        return Err(self.error(&case_at, "set exactly one of `output` and `error`"));
                    }
                }
            }
        }
        let admin = root.key("admin");
        if config.admin.enabled {
            let address: std::net::SocketAddr = config.admin.listen.parse().map_err(|_| {
                self.error(
                    &admin.key("listen"),
                    format!(
                        "`{}` is not an address like 127.0.0.1:9644",
                        config.admin.listen
                    ),
                )
            })?;
            if !address.ip().is_loopback()
                && config.admin.token.as_deref().is_none_or(str::is_empty)
            {
                return Err(self.error(
                    &admin.key("token"),
                    "a token is required when the admin port listens beyond loopback",
                ));
            }
        }
        if config.stages.is_empty() {
            return Err(self.error(&root.key("stages"), "at least one stage is needed"));
        }
        let mut names = BTreeSet::new();
        for (index, stage) in config.stages.iter().enumerate() {
            let at = root.key("stages").index(index);
            check_name(&stage.name).map_err(|why| self.error(&at.key("name"), why))?;
            if !names.insert(stage.name.as_str()) {
                return Err(self.error(
                    &at.key("name"),
                    format!("stage `{}` is defined twice", stage.name),
                ));
            }
            for (field, topic) in [
                ("input", &stage.input),
                ("output", &stage.output),
                ("dead_letter", &stage.dead_letter),
            ] {
                check_topic(topic).map_err(|why| self.error(&at.key(field), why))?;
            }
            for (field, topic) in [
                ("output", &stage.output),
                ("dead_letter", &stage.dead_letter),
            ] {
                check_writable(topic).map_err(|why| self.error(&at.key(field), why))?;
            }
            for (index, topic) in stage.allowed_topics.iter().enumerate() {
                let topic_at = at.key("allowed_topics").index(index);
                check_topic(topic).map_err(|why| self.error(&topic_at, why))?;
                check_writable(topic).map_err(|why| self.error(&topic_at, why))?;
                if topic == &stage.input || topic == &stage.dead_letter {
                    return Err(self.error(
                        &topic_at,
                        format!("`{topic}` is the stage's own input or dead-letter topic"),
                    ));
                }
            }
            if stage.output == stage.input || stage.dead_letter == stage.input {
                let field = if stage.output == stage.input {
                    "output"
                } else {
                    "dead_letter"
                };
                return Err(self.error(
                    &at.key(field),
                    format!(
                        "`{}` is also the stage's input: it would feed itself",
                        stage.input
                    ),
                ));
            }
            self.validate_routing(stage, &at)?;
            for (branch, topic) in &stage.branches {
                let branch_at = at.key("branches").key(branch.clone());
                check_name(branch).map_err(|why| self.error(&branch_at, why))?;
                check_topic(topic).map_err(|why| self.error(&branch_at, why))?;
                check_writable(topic).map_err(|why| self.error(&branch_at, why))?;
            }
            if stage.parallelism == Some(0) {
                return Err(self.error(&at.key("parallelism"), "must be at least 1"));
            }
            let retry = at.key("retry");
            if stage.retry.max_attempts == 0 {
                return Err(self.error(&retry.key("max_attempts"), "must be at least 1"));
            }
            if stage.retry.max_backoff_ms < stage.retry.initial_backoff_ms {
                return Err(self.error(
                    &retry.key("max_backoff_ms"),
                    "must not be less than initial_backoff_ms",
                ));
            }
        }
        self.validate_graph()
    }

    /// The stages must form a graph without cycles, and with `sources` set,
    /// every input must be fed by a source or a stage.
    fn validate_graph(&self) -> Result<(), ConfigError> {
        let root = FieldPath::default();
        for (index, topic) in self.config.sources.iter().flatten().enumerate() {
            check_topic(topic).map_err(|why| self.error(&root.key("sources").index(index), why))?;
        }
        let graph = crate::graph::Graph::of(&self.config);
        if let Some(dangling) = graph.dangling().first() {
            return Err(self.error(
                &root.key("stages").index(dangling.stage).key("input"),
                format!(
                    "`{}` is a dangling input: no stage produces it and `sources` does not list it",
                    dangling.topic
                ),
            ));
        }
        if let Some(cycle) = graph.cycle() {
            return Err(self.error(
                &root.key("stages").index(cycle[0]).key("input"),
                format!("the stages form a cycle: {}", graph.describe_cycle(&cycle)),
            ));
        }
        Ok(())
    }

    fn validate_routing(&self, stage: &StageConfig, at: &FieldPath) -> Result<(), ConfigError> {
        let known = || {
            self.config
                .handlers
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (&stage.handler, &stage.route) {
            (Some(_), Some(_)) => Err(self.error(
                &at.key("route"),
                "set either `handler` or `route`, not both",
            )),
            (None, None) => Err(self.error(at, "needs a `handler` or a `route`")),
            (Some(handler), None) => {
                if self.config.handlers.contains_key(handler) {
                    Ok(())
                } else {
                    Err(self.error(
                        &at.key("handler"),
                        format!("unknown handler `{handler}` (defined: {})", known()),
                    ))
                }
            }
            (None, Some(route)) => {
                let route_at = at.key("route");
                if route.field.is_empty() {
                    return Err(self.error(&route_at.key("field"), "must not be empty"));
                }
                if route.to.is_empty() {
                    return Err(self.error(&route_at.key("to"), "needs at least one value"));
                }
                for (value, handler) in &route.to {
                    if !self.config.handlers.contains_key(handler) {
                        return Err(self.error(
                            &route_at.key("to").key(value.clone()),
                            format!("unknown handler `{handler}` (defined: {})", known()),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Removes serde_yaml's " at line L column C" phrases: the error's
/// position already says where.
fn without_positions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let tail = &after[digits..];
        match tail.strip_prefix(" column ") {
            Some(column) if digits > 0 => {
                rest = column.trim_start_matches(|c: char| c.is_ascii_digit());
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits serde_yaml's `path.to.field: message` into its two parts.
fn split_serde_path(text: &str) -> (String, String) {
    match text.split_once(": ") {
        Some((path, rest))
            if !path.contains(' ')
                && path
                    .chars()
                    .all(|c| c.is_alphanumeric() || "._-[]".contains(c)) =>
        {
            (path.to_string(), rest.to_string())
        }
        _ => (String::new(), text.to_string()),
    }
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
        use fmt::Write as _;
        let config = &self.config;
        let mut out = String::new();
        let kafka = &config.kafka;
        let _ = writeln!(
            out,
            "brokers: {}",
            self.shown(
                &FieldPath::default().key("kafka").key("brokers"),
                &kafka.brokers
            )
        );
        match kafka.delivery {
            Delivery::AtLeastOnce => {
                let _ = writeln!(out, "delivery: at-least-once");
            }
            Delivery::ExactlyOnce => {
                let _ = writeln!(
                    out,
                    "delivery: exactly-once (transactions committed every {} ms)",
                    kafka.transactions.commit_interval_ms
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
            ("all clients", "properties", &kafka.properties),
            ("consumers", "consumer", &kafka.consumer),
            ("producers", "producer", &kafka.producer),
        ] {
            for (key, value) in properties {
                let field = FieldPath::default()
                    .key("kafka")
                    .key(section)
                    .key(key.clone());
                let value = self.shown_named(&field, key, &value.to_string());
                let _ = writeln!(out, "property for {scope}: {key}={value}");
            }
        }
        if config.admin.enabled {
            let token = if config.admin.token.is_some() {
                "required"
            } else {
                "none"
            };
            let _ = writeln!(out, "admin port: {} (token: {token})", config.admin.listen);
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
                handler.path.display(),
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
            for (key, value) in &handler.settings {
                let field = FieldPath::default()
                    .key("handlers")
                    .key(name.clone())
                    .key("settings")
                    .key(key.clone());
                let value = self.shown_named(&field, key, &value.to_string());
                let _ = writeln!(out, "  setting {key}={value}");
            }
            if !handler.watch {
                let _ = writeln!(out, "  file not watched");
            }
            if !handler.self_test.is_empty() {
                let _ = writeln!(out, "  self-test: {} case(s)", handler.self_test.len());
            }
        }
        let graph = crate::graph::Graph::of(config);
        let sources: Vec<&str> = graph.sources().into_iter().collect();
        let _ = writeln!(out, "sources (fed from outside): {}", sources.join(", "));
        for stage in &config.stages {
            if self
                .selected
                .as_ref()
                .is_some_and(|selected| !selected.contains(&stage.name))
            {
                let _ = writeln!(out, "stage {}: runs elsewhere (not selected)", stage.name);
                continue;
            }
            let _ = writeln!(
                out,
                "stage {}: {} -> {} (dead letters: {}; group {})",
                stage.name,
                stage.input,
                stage.output,
                stage.dead_letter,
                stage.group_id(kafka)
            );
            match (&stage.handler, &stage.route) {
                (Some(handler), _) => {
                    let _ = writeln!(out, "  every message -> {handler}");
                }
                (None, Some(route)) => {
                    for (value, handler) in &route.to {
                        let _ = writeln!(out, "  {} = {value:?} -> {handler}", route.field);
                    }
                }
                (None, None) => {}
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
                    stage.allowed_topics.join(", ")
                );
            }
            if let Some(parallelism) = stage.parallelism {
                let _ = writeln!(out, "  at most {parallelism} partition(s) at once");
            }
            let retry = stage.retry;
            let _ = writeln!(
                out,
                "  transient errors: {} attempt(s), backoff {}..{} ms",
                retry.max_attempts, retry.initial_backoff_ms, retry.max_backoff_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_serde_paths_from_messages() {
        assert_eq!(
            split_serde_path("stages[0]: missing field `input`"),
            ("stages[0]".to_string(), "missing field `input`".to_string())
        );
        assert_eq!(
            split_serde_path("missing field `kafka`"),
            (String::new(), "missing field `kafka`".to_string())
        );
    }

    #[test]
    fn drops_serde_positions() {
        assert_eq!(
            without_positions("did not find expected key at line 6 column 4, while parsing"),
            "did not find expected key, while parsing"
        );
        assert_eq!(without_positions("x at line y"), "x at line y");
    }

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
