//! The config: `config.yml` read, checked and resolved before the first
//! message is read. Every error names the file, the line and the field.
//!
//! - [`file`]: the file as written (serde types, defaults);
//! - [`LoadedConfig`]: reading it, secrets put in place ([`secrets`]), and
//!   the checks that resolve it ([`validate`]) into a [`Pipeline`];
//! - [`pipeline`]: the resolved types every other layer takes its part of;
//! - [`graph`]: the stages as a dependency graph;
//! - [`describe`]: the plan `host check` prints;
//! - [`locate`]: finding a field's line in the text;
//! - [`units`]: durations and sizes written with units (`2s`, `64KiB`);
//! - [`duplicates`]: duplicate keys refused, naming both lines;
//! - [`hints`]: what a YAML syntax error or an unknown name most likely means.

mod describe;
mod duplicates;
mod error;
pub(crate) mod file;
pub mod graph;
mod hints;
mod load;
mod locate;
pub mod pipeline;
mod secrets;
mod units;
mod validate;

pub use error::ConfigError;
pub use file::{Limits, LogLimits};
pub use load::LoadedConfig;
pub use locate::{FieldPath, Segment};
pub use pipeline::{
    AdminSettings, Brokers, ClientProperties, DEFAULT_MAX_BATCH, Delivery, Expect, ExpectedError,
    HandlerPlan, HeaderPropagation, KafkaSettings, MAX_MAX_BATCH, Pipeline, RetryPolicy, Routing,
    SelfTestCase, StagePlan, StatePlan, TopicCreation, Transactions,
};
pub use secrets::{References, looks_secret};
pub use validate::{check_topic, is_internal_topic};
