//! Stagehost: consumes Kafka topics, routes each message to a sandboxed
//! WebAssembly component, and produces what it returns downstream.
//!
//! The crate is in layers; each imports only from the layers below it:
//!
//! ```text
//! cli        the command line: one file per command; `main` only dispatches
//!  └ control   the supervisor (Host::start, Host::run), admin API and console, reload
//!     │          (swaps, canaries, shadows), dead-letter redrive, metrics
//!     └ pipeline  one stage's message path: the per-message step, at least once, exactly once,
//!        │          and the state of stateful stages (stores, changelogs, restores)
//!        ├ handlers  bindings, sandbox, registry (with canaries and shadows), routing,
//!        │          self-test, the guest's view of state
//!        └ kafka     clients, their contexts, headers, topics, reading a topic to its end,
//!                   the embedded broker
//!           └ config    parsing, error locations, secrets, the resolved pipeline, the graph
//! ```
//!
//! A message's path: a stage's consumer ([`kafka`]) hands it to
//! [`pipeline::step`], which routes it and runs its handler in the sandbox
//! ([`handlers`]); the outputs or the dead letter go to the producer, and
//! [`pipeline::pending`] stores its offset once they are acknowledged.

pub mod cli;
pub mod config;
pub mod control;
pub mod handlers;
pub mod kafka;
pub mod pipeline;

pub use control::{Host, Ready};
