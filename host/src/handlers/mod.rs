//! Handlers: the sandboxed WebAssembly components and how a message finds
//! one.
//!
//! - [`bindings`]: the host side of `wit/stage-handler.wit` (the one `bindgen!`);
//! - [`sandbox`]: the engine, compiled components and reusable instances
//!   within per-handler limits;
//! - [`failure`]: the dead-letter kinds and what a handler call can end with;
//! - [`registry`]: the live table of versions and routes, loaded from a config;
//! - [`routing`]: a message's handler from its stage's routing;
//! - [`self_test`]: the checks a new version passes before it serves.

pub mod bindings;
pub mod canary;
pub mod failure;
pub mod registry;
pub mod routing;
pub mod sandbox;
pub mod self_test;
pub mod shadow;
pub mod state;

pub use failure::{ErrorKind, HandlerFailure};
pub use registry::{Registry, SharedRegistry, handler_spec};
pub use routing::RouteError;
pub use sandbox::{
    HandlerComponent, HandlerInstance, HandlerSpec, LoadError, Sandbox, run_guest, version_of,
};
pub use self_test::{self_test, validate};
