//! The pipeline a config describes, checked and resolved: defaults filled
//! in, paths made absolute, names resolved, and every either-or written as
//! an enum, so that no layer consults the file again. Each layer takes its
//! part: the Kafka clients their [`KafkaSettings`], the sandbox its
//! [`HandlerPlan`]s, each stage its [`StagePlan`].

use super::Limits;
use super::file::Scalar;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

/// What `host run` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// How to reach Kafka and how the host's clients behave.
    pub kafka: KafkaSettings,
    /// The admin port.
    pub admin: AdminSettings,
    /// Handlers by name.
    pub handlers: BTreeMap<String, HandlerPlan>,
    /// Stages, in the file's order.
    pub stages: Vec<StagePlan>,
    /// Topics fed from outside the graph, when the config lists them (in
    /// its order).
    pub sources: Option<Vec<String>>,
    /// Where the host keeps versions and pins, absolute.
    pub data_dir: PathBuf,
}

/// Where the brokers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brokers {
    /// librdkafka's in-memory mock cluster, inside the host (development only).
    Embedded,
    /// Bootstrap servers, `host:port,host:port`.
    Servers(String),
}

/// The `kafka` section, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// Where the brokers are.
    pub brokers: Brokers,
    /// librdkafka properties, by client kind.
    pub properties: ClientProperties,
    /// Whether and how missing topics are created.
    pub topics: TopicCreation,
    /// The delivery guarantee of every stage.
    pub delivery: Delivery,
}

/// The user's librdkafka properties, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientProperties {
    /// For every client.
    pub all: BTreeMap<String, String>,
    /// For consumers only.
    pub consumer: BTreeMap<String, String>,
    /// For producers only.
    pub producer: BTreeMap<String, String>,
}

impl ClientProperties {
    /// A producer property as set, by `producer` or for all clients.
    pub fn producer_property(&self, key: &str) -> Option<&str> {
        self.producer
            .get(key)
            .or_else(|| self.all.get(key))
            .map(String::as_str)
    }

    pub(super) fn from_scalars(
        all: &BTreeMap<String, Scalar>,
        consumer: &BTreeMap<String, Scalar>,
        producer: &BTreeMap<String, Scalar>,
    ) -> Self {
        let text = |map: &BTreeMap<String, Scalar>| {
            map.iter()
                .map(|(key, value)| (key.clone(), value.to_string()))
                .collect()
        };
        Self {
            all: text(all),
            consumer: text(consumer),
            producer: text(producer),
        }
    }
}

/// How missing topics are created at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicCreation {
    /// Create missing input, output and dead-letter topics.
    pub create: bool,
    /// Partitions of the topics the host creates.
    pub partitions: i32,
    /// Their replication factor; `None` takes the brokers' default.
    pub replication_factor: Option<i32>,
}

/// The delivery guarantee of every stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An input offset is committed only after all its outputs (or its dead
    /// letter) are acknowledged.
    AtLeastOnce,
    /// Outputs, dead letters and input offsets are committed together in
    /// Kafka transactions.
    ExactlyOnce(Transactions),
}

/// Transaction settings (exactly-once mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transactions {
    /// Prefix of the stages' `transactional.id`s.
    pub id_prefix: String,
    /// How often a stage commits its open transaction.
    pub commit_interval: Duration,
}

impl Transactions {
    /// The `transactional.id` of a stage.
    pub fn id(&self, stage: &str) -> String {
        format!("{}.{stage}", self.id_prefix)
    }
}

/// The admin port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens; `None` when it is turned off.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry, if one is set.
    pub token: Option<String>,
}

/// One handler, ready for the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerPlan {
    /// Its name in the config.
    pub name: String,
    /// The component file, absolute.
    pub path: PathBuf,
    /// The path as the config writes it (relative to the config's folder).
    pub written_path: PathBuf,
    /// Sandbox limits.
    pub limits: Limits,
    /// Settings for `init`, as text.
    pub settings: Vec<(String, String)>,
    /// Reload when the file changes.
    pub watch: bool,
    /// Cases a new version must pass before it serves.
    pub self_test: Vec<SelfTestCase>,
}

/// One self-test case: a JSON input and what the handler must answer; for
/// a handler that imports `state`, the state it starts from and the
/// entries it must leave.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTestCase {
    /// The message value, as JSON.
    pub input: serde_json::Value,
    /// The message key, if any.
    pub key: Option<String>,
    /// Entries set in the state before the case (key -> JSON value).
    pub state: BTreeMap<String, serde_json::Value>,
    /// Entries the case must leave (key -> JSON value; `None`: absent).
    pub expect_state: BTreeMap<String, Option<serde_json::Value>>,
    /// The answer it must give.
    pub expect: Expect,
}

impl Default for SelfTestCase {
    /// A case of input `null` that expects the output `null`, with no key
    /// and no state (for struct update syntax).
    fn default() -> Self {
        Self {
            input: serde_json::Value::Null,
            key: None,
            state: BTreeMap::new(),
            expect_state: BTreeMap::new(),
            expect: Expect::Output(serde_json::Value::Null),
        }
    }
}

impl SelfTestCase {
    /// Whether the case sets or checks state.
    pub fn uses_state(&self) -> bool {
        !self.state.is_empty() || !self.expect_state.is_empty()
    }
}

/// What a self-test case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Exactly one output with this value (compared as JSON).
    Output(serde_json::Value),
    /// An error of this kind.
    Error(ExpectedError),
}

/// The handler errors a self-test case may expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedError {
    /// `invalid-input`.
    InvalidInput,
    /// `transient`.
    Transient,
}

impl ExpectedError {
    /// The error kind's name, as a handler failure reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedError::InvalidInput => "invalid-input",
            ExpectedError::Transient => "transient",
        }
    }
}

/// Messages per handler call when a stage does not say (`max_batch`): large
/// enough that the fixed cost of entering the sandbox is spread thin, small
/// enough that a batch rerun one message at a time after a trap is quick.
pub const DEFAULT_MAX_BATCH: NonZeroUsize = NonZeroUsize::new(64).unwrap();
/// The largest `max_batch` a stage may ask for.
pub const MAX_MAX_BATCH: usize = 1024;

/// Which of an input's headers a stage's outputs carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeaderPropagation {
    /// Every header of the input.
    #[default]
    All,
    /// None: an output has only the handler's and the host's headers.
    None,
    /// The input's headers with these names.
    Only(BTreeSet<String>),
}

impl HeaderPropagation {
    /// Whether an input header named `key` goes on to the outputs.
    pub fn passes(&self, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Only(names) => names.contains(key),
        }
    }
}

impl fmt::Display for HeaderPropagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::None => f.write_str("none"),
            Self::Only(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                write!(f, "[{}]", names.join(", "))
            }
        }
    }
}

/// One stage, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Its name, unique in the config.
    pub name: String,
    /// The topic it consumes.
    pub input: String,
    /// Where outputs go unless they name a branch or topic.
    pub output: String,
    /// Where messages that could not be processed go.
    pub dead_letter: String,
    /// Branch name -> topic.
    pub branches: BTreeMap<String, String>,
    /// Other topics its handlers may write to.
    pub allowed_topics: BTreeSet<String>,
    /// Partitions handled at once; `None` handles all at once.
    pub parallelism: Option<NonZeroUsize>,
    /// Most messages of one partition per handler call (`handle-batch`).
    pub max_batch: NonZeroUsize,
    /// Which input headers its outputs carry.
    pub propagate_headers: HeaderPropagation,
    /// The consumer group it joins.
    pub group: String,
    /// How a message finds its handler.
    pub routing: Routing,
    /// Retries of a handler's transient errors.
    pub retry: RetryPolicy,
    /// Per-key state, when the stage has it.
    pub state: Option<StatePlan>,
}

/// A stage's state, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePlan {
    /// The compacted changelog topic.
    pub changelog: String,
    /// The folder of the stage's local stores (one per input partition).
    pub dir: PathBuf,
}

impl StagePlan {
    /// Every topic this stage writes: its output, its branches and its dead
    /// letters.
    pub fn written_topics(&self) -> impl Iterator<Item = &str> {
        [self.output.as_str(), self.dead_letter.as_str()]
            .into_iter()
            .chain(self.branches.values().map(String::as_str))
    }
}

/// How a stage picks a message's handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Every message goes to this handler.
    Single(String),
    /// The string value of a JSON field picks the handler.
    ByField {
        /// A top-level field name, or a JSON pointer starting with `/`.
        field: String,
        /// Field value -> handler name.
        to: BTreeMap<String, String>,
    },
}

impl Routing {
    /// The handler names this routing can send to.
    pub fn handlers(&self) -> impl Iterator<Item = &str> {
        let (single, many) = match self {
            Routing::Single(handler) => (Some(handler.as_str()), None),
            Routing::ByField { to, .. } => (None, Some(to.values().map(String::as_str))),
        };
        single.into_iter().chain(many.into_iter().flatten())
    }
}

/// Bounded exponential backoff for transient handler errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: NonZeroU32,
    /// Wait before the second attempt; doubled each time.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}
