//! The control plane: what keeps the stages running and lets people steer
//! them.
//!
//! - [`host`]: the supervisor, [`Host::start`] and [`Host::run`];
//! - [`stages`]: the running stages, matched to the config in force;
//! - [`reload`]: hot swaps from files, uploads, rollbacks and SIGHUP;
//! - [`admin`]: the admin HTTP API;
//! - [`console`]: the live console the admin port serves at `/`;
//! - [`dead_letter_topic`]: a stage's dead letters counted and redriven;
//! - [`versions`]: every version a handler served, kept on disk, and pins;
//! - [`handlers`]: what the API and the reloader share;
//! - [`metrics`]: the Prometheus registry;
//! - [`trial_metrics`]: the series of running canaries and shadows.

pub mod admin;
pub mod console;
pub mod dead_letter_topic;
pub mod handlers;
pub mod host;
pub mod metrics;
pub mod reload;
pub mod stages;
pub mod topics;
pub mod trial_metrics;
pub mod versions;

pub use host::{Host, Ready};
