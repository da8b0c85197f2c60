//! The config file as written: serde types with a `///` doc per field and
//! `deny_unknown_fields`, defaults filled in by serde, durations and sizes
//! read with their units ([`units`]). Only this module's loader sees them;
//! the rest of the host gets the checked and resolved
//! [`Pipeline`](super::Pipeline).

use super::units;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The `brokers` value that starts librdkafka's in-memory mock cluster.
pub(crate) const EMBEDDED_BROKERS: &str = "embedded";

/// A whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// How to reach Kafka and how the host's clients behave.
    pub(crate) kafka: KafkaConfig,
    /// Handler components by name.
    pub(crate) handlers: BTreeMap<String, HandlerConfig>,
    /// Stages: each consumes one topic and routes its messages to handlers.
    /// A stage's input may be another stage's output, so stages form a graph.
    pub(crate) stages: Vec<StageConfig>,
    /// Topics fed from outside the graph. When set, every stage input must be
    /// one of these or produced by a stage (`host check` names any other as
    /// dangling); when absent, every input no stage produces is a source.
    #[serde(default)]
    pub(crate) sources: Option<Vec<String>>,
    /// The admin HTTP port: handler API, `/metrics`, `/healthz`.
    #[serde(default)]
    pub(crate) admin: AdminConfig,
    /// Where the host keeps what outlives a process: every handler version
    /// that served, and pins (relative to the config's folder).
    #[serde(default = "default_data_dir")]
    pub(crate) data_dir: PathBuf,
    /// Where stateful stages keep their local stores (default
    /// `<data_dir>/state`).
    #[serde(default)]
    pub(crate) state_dir: Option<PathBuf>,
}

/// The `admin` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminConfig {
    /// Serve the admin port at all.
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// Address to listen on. Port 0 picks a free port (logged at start).
    #[serde(default = "default_admin_listen")]
    pub(crate) listen: String,
    /// Bearer token required on every request; mandatory when `listen` is not
    /// a loopback address.
    #[serde(default)]
    pub(crate) token: Option<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".stagehost")
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
pub(crate) struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`, or a list of addresses),
    /// or `embedded` for the in-memory development broker.
    pub(crate) brokers: BrokersConfig,
    /// Consumer group prefix; each stage consumes as `<group>.<stage name>`
    /// unless the stage sets its own `group`.
    #[serde(default = "default_group")]
    pub(crate) group: String,
    /// librdkafka properties for every client (e.g. `security.protocol`).
    #[serde(default)]
    pub(crate) properties: BTreeMap<String, Scalar>,
    /// librdkafka properties for consumers only.
    #[serde(default)]
    pub(crate) consumer: BTreeMap<String, Scalar>,
    /// librdkafka properties for producers only.
    #[serde(default)]
    pub(crate) producer: BTreeMap<String, Scalar>,
    /// Whether and how the host creates missing topics at start.
    #[serde(default)]
    pub(crate) topics: TopicDefaults,
    /// The delivery guarantee: `at-least-once` (the default) or
    /// `exactly-once` (Kafka transactions).
    #[serde(default)]
    pub(crate) delivery: Delivery,
    /// Transaction settings, used in `exactly-once` mode.
    #[serde(default)]
    pub(crate) transactions: TransactionConfig,
}

/// `kafka.brokers` as written: one string (comma-separated addresses, or
/// `embedded`) or a list of addresses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "a string of addresses like `host:9092,host2:9092`, a list of addresses, or `embedded`"
)]
pub(crate) enum BrokersConfig {
    /// `host:port,host:port` or `embedded`.
    Text(String),
    /// `[host:port, host:port]`.
    List(Vec<String>),
}

/// The delivery guarantee of every stage.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Delivery {
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
pub(crate) struct TransactionConfig {
    /// Prefix of the stages' `transactional.id`s (`<id>.<stage>`). It must
    /// be unique per host process and stable across its restarts, so that a
    /// restarted host fences off the unfinished transactions of the one that
    /// crashed. Default: `stagehost-<hostname>`.
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// How often a stage commits its open transaction, in milliseconds (or with a unit, `100ms`, `1s`):
    /// the longest time an output waits before `read_committed` consumers
    /// can see it.
    #[serde(
        default = "default_commit_interval_ms",
        deserialize_with = "units::deserialize_millis"
    )]
    pub(crate) commit_interval_ms: u64,
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

fn default_group() -> String {
    "stagehost".to_string()
}

/// How missing topics are created at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicDefaults {
    /// Create missing input, output and dead-letter topics at start.
    #[serde(default = "yes")]
    pub(crate) create: bool,
    /// Partitions for topics the host creates.
    #[serde(default = "default_partitions")]
    pub(crate) partitions: i32,
    /// Replication factor for topics the host creates; `None` takes the
    /// brokers' `default.replication.factor`.
    #[serde(default)]
    pub(crate) replication_factor: Option<i32>,
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
pub(crate) enum Scalar {
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
pub(crate) struct HandlerConfig {
    /// Path of the `.wasm` component, relative to the config file.
    pub(crate) path: PathBuf,
    /// Settings passed to the handler's `init` export.
    #[serde(default)]
    pub(crate) settings: BTreeMap<String, Scalar>,
    /// Sandbox limits.
    #[serde(default)]
    pub(crate) limits: Limits,
    /// Reload the handler when its file changes on disk.
    #[serde(default = "yes")]
    pub(crate) watch: bool,
    /// Cases a new version must pass before it replaces the running one.
    #[serde(default)]
    pub(crate) self_test: Vec<SelfTestCase>,
}

/// One self-test case: a JSON input and what the handler must answer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelfTestCase {
    /// The message value, as JSON.
    pub(crate) input: serde_json::Value,
    /// The message key (a stateful handler keeps its state under it).
    #[serde(default)]
    pub(crate) key: Option<String>,
    /// State entries (key -> JSON value) set before the case, for a handler
    /// that imports `state`.
    #[serde(default)]
    pub(crate) state: BTreeMap<String, serde_json::Value>,
    /// State entries the case must leave (key -> JSON value, `null`: absent).
    #[serde(default)]
    pub(crate) expect_state: BTreeMap<String, serde_json::Value>,
    /// The one output value expected, as JSON (compared as JSON values).
    #[serde(default)]
    pub(crate) output: Option<serde_json::Value>,
    /// The error kind expected instead: `invalid-input` or `transient`.
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// Per-handler sandbox limits.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory the handler may grow to, in MiB (or `1GiB`).
    #[serde(
        default = "default_memory_mib",
        deserialize_with = "units::deserialize_mebibytes"
    )]
    pub memory_mib: u64,
    /// Longest wall time one call may take, in milliseconds (or `2s`): the time the
    /// guest runs and the time it waits in host calls (clocks, polls,
    /// stdio) alike. At the limit the call is abandoned and its instance
    /// dropped.
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "units::deserialize_millis"
    )]
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
    #[serde(
        default = "default_max_output_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub max_output_bytes: u64,
    /// The budget for what the guest writes to stdout and stderr and sends
    /// to `log`, shared by the three.
    #[serde(default)]
    pub log: LogLimits,
    /// Most bytes of state (keys and values) per input partition, for a
    /// stage with state; a message that would pass it is dead-lettered as
    /// `state-limit` and its changes are not kept.
    #[serde(
        default = "default_state_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub state_bytes: u64,
    /// Most state changes (sets and deletes) one message may make.
    #[serde(default = "default_state_writes")]
    pub state_writes: u32,
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
fn default_state_bytes() -> u64 {
    Limits::DEFAULT.state_bytes
}
fn default_state_writes() -> u32 {
    Limits::DEFAULT.state_writes
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
        state_bytes: 256 << 20,
        state_writes: 100,
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
    #[serde(
        default = "default_bytes_per_second",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub bytes_per_second: u64,
    /// Bytes that may come at once after a quiet spell.
    #[serde(
        default = "default_burst_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub burst_bytes: u64,
    /// Longest line kept; the rest of a longer line is cut (and counted).
    #[serde(
        default = "default_max_line_bytes",
        deserialize_with = "units::deserialize_bytes_u32"
    )]
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
pub(crate) struct StageConfig {
    /// Stage name, unique in the file; used in logs, headers and the group id.
    pub(crate) name: String,
    /// Topic the stage consumes.
    pub(crate) input: String,
    /// Topic the handlers' outputs go to unless an output names its own.
    pub(crate) output: String,
    /// Topic for messages that could not be processed, with the reason.
    pub(crate) dead_letter: String,
    /// Named branches: branch name → topic. A handler output whose topic is a
    /// branch name goes to that branch's topic.
    #[serde(default)]
    pub(crate) branches: BTreeMap<String, String>,
    /// Other topics the stage's handlers may name in an output, besides
    /// `output` and the `branches`. A handler output to any other topic, or
    /// to an internal topic (a name starting with `__`), turns its message
    /// into one `forbidden-topic` dead letter and none of its outputs is
    /// produced.
    #[serde(default)]
    pub(crate) allowed_topics: Vec<String>,
    /// Per-key state for the stage's handlers, per input partition, kept in
    /// a local store and a compacted changelog topic. The stage's messages
    /// must be keyed.
    #[serde(default)]
    pub(crate) state: Option<StateConfig>,
    /// Partitions handled at once by this stage in this host; `None` handles
    /// every assigned partition concurrently. Order within a partition is kept.
    #[serde(default)]
    pub(crate) parallelism: Option<usize>,
    /// Most messages of one partition handed to a handler in one call (when
    /// it exports `handle-batch`); a batch is only what has already been
    /// fetched, never waited for. `1` calls `handle` for each message.
    #[serde(default)]
    pub(crate) max_batch: Option<usize>,
    /// Which of an input's headers its outputs carry: `all` (the default),
    /// `none`, or a list of header names. The handler's own headers and the
    /// host's `stagehost-*` ones go on top.
    #[serde(default)]
    pub(crate) propagate_headers: Option<PropagateHeadersConfig>,
    /// Consumer group for this stage (default `<kafka.group>.<name>`).
    #[serde(default)]
    pub(crate) group: Option<String>,
    /// The one handler for every message (instead of `route`).
    #[serde(default)]
    pub(crate) handler: Option<String>,
    /// Routing by a field of the JSON message (instead of `handler`).
    #[serde(default)]
    pub(crate) route: Option<RouteConfig>,
    /// Retries for a handler's `transient` errors.
    #[serde(default)]
    pub(crate) retry: RetryConfig,
}

/// A stage's `propagate_headers` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "`all`, `none`, or a list of header names like `[traceparent, correlation-id]`"
)]
pub(crate) enum PropagateHeadersConfig {
    /// `all` or `none`.
    Word(String),
    /// The names of the headers to pass on.
    Names(Vec<String>),
}

/// A stage's `state` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateConfig {
    /// The changelog topic (default `<group>-changelog`), compacted, with as
    /// many partitions as the input; the host creates it.
    #[serde(default)]
    pub(crate) changelog: Option<String>,
}

/// Routing by a JSON field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// Top-level field whose string value selects the handler, or a JSON
    /// pointer such as `/meta/op`.
    #[serde(default = "default_route_field")]
    pub(crate) field: String,
    /// Field value → handler name.
    pub(crate) to: BTreeMap<String, String>,
}

fn default_route_field() -> String {
    "operation".to_string()
}

/// Bounded exponential backoff for transient handler errors.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryConfig {
    /// Attempts in all, the first included; then the message is dead-lettered.
    #[serde(default = "default_attempts")]
    pub(crate) max_attempts: u32,
    /// Wait before the second attempt, in milliseconds (or `1s`); doubled each time.
    #[serde(
        default = "default_initial_backoff",
        deserialize_with = "units::deserialize_millis"
    )]
    pub(crate) initial_backoff_ms: u64,
    /// Longest wait between attempts, in milliseconds (or `2s`).
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "units::deserialize_millis"
    )]
    pub(crate) max_backoff_ms: u64,
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
