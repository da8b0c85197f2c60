//! The config: `config.yml` read, checked and resolved before the first
//! message is read. Every error names the file, the line and the field.
//!
//! - [`file`]: the file as written (serde types, defaults);
//! - [`LoadedConfig`]: reading it, secrets put in place ([`secrets`]), and
//!   the checks that resolve it ([`validate`]) into a [`Pipeline`];
//! - [`pipeline`]: the resolved types every other layer takes its part of;
//! - [`graph`]: the stages as a dependency graph;
//! - [`describe`]: the plan `host check` prints;
//! - [`locate`]: finding a field's line in the text.

mod describe;
mod error;
pub(crate) mod file;
pub mod graph;
mod load;
mod locate;
pub mod pipeline;
mod secrets;
mod validate;

pub use error::ConfigError;
pub use file::{Limits, LogLimits};
pub use load::LoadedConfig;
pub use locate::{FieldPath, Segment};
pub use pipeline::{
    AdminSettings, Brokers, ClientProperties, Delivery, Expect, ExpectedError, HandlerPlan,
    KafkaSettings, Pipeline, RetryPolicy, Routing, SelfTestCase, StagePlan, TopicCreation,
    Transactions,
};
pub use secrets::{References, looks_secret};
pub use validate::{check_topic, is_internal_topic};
