//! Guest-side kit for writing Stagehost stage handlers.
//!
//! A stage handler is a WebAssembly component implementing the
//! `stagehost:handler/stage-handler` world (`wit/stage-handler.wit` in the
//! repository). This crate is the only place that runs
//! `wit_bindgen::generate!` for that world; handler crates depend on it and
//! never see the generated code.
//!
//! # JSON handlers
//!
//! Most handlers read one JSON document and produce one. Write a function from
//! [`Value`] to `Result<Value, HandlerError>` and hand it to [`json_handler!`]:
//!
//! ```no_run
//! use stagehost_guest::{json_handler, HandlerError, Value};
//!
//! fn double(input: Value) -> Result<Value, HandlerError> {
//!     let n = input
//!         .as_i64()
//!         .ok_or_else(|| HandlerError::invalid_input("expected an integer"))?;
//!     Ok(Value::from(n * 2))
//! }
//!
//! json_handler!(double);
//! ```
//!
//! The macro accepts any settings in `init`, parses the message value as JSON
//! (bad JSON is an `invalid-input` error), calls the function and produces its
//! result as one record to the stage's output topic, keeping the input key.
//!
//! # Full control
//!
//! Handlers that need the raw message, several outputs, other topics, keys or
//! headers implement [`Guest`] themselves and export it with
//! [`export_handler!`]:
//!
//! ```no_run
//! use stagehost_guest::{export_handler, Guest, HandlerError, Message, Output, Settings};
//!
//! struct Splitter;
//!
//! impl Guest for Splitter {
//!     fn init(_settings: Settings) -> Result<(), String> {
//!         Ok(())
//!     }
//!
//!     fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {
//!         Ok(msg
//!             .value
//!             .split(|b| *b == b'\n')
//!             .map(|line| Output::new(line).with_header("part", "yes"))
//!             .collect())
//!     }
//! }
//!
//! export_handler!(Splitter);
//! ```
//!
//! # Memory
//!
//! Built for `wasm32`, the kit is the handler's global allocator: small
//! blocks come from per-size free lists, larger ones from the standard
//! allocator (see [`alloc`]). Turn off the default `size-classes` feature to
//! use another.
//!
//! # Building
//!
//! Handler crates are `cdylib`s built with
//! `cargo build --target wasm32-wasip2 --release` (a component, via
//! `wasm-component-ld`) or `cargo component build --release`
//! (`wasm32-wasip1` plus the preview-1 adapter). The kit and handler logic
//! also compile for the native target so that plain `cargo test` works; there
//! the [`log`] functions print to stderr instead of calling the host.

#![warn(missing_docs)]

// Lets the generated `export!` macro's default path (`stagehost_guest::bindings`)
// resolve inside this crate too.
extern crate self as stagehost_guest;

/// Bindings generated from `wit/stage-handler.wit`. Not part of the public API:
/// use the re-exports at the crate root, [`log`] and the macros instead.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "stage-handler",
        pub_export_macro: true,
        default_bindings_module: "stagehost_guest::bindings",
        additional_derives: [PartialEq, Eq, Clone],
    });
}

pub mod alloc;
pub mod log;
mod message;
pub mod state;

/// Small blocks from free lists, the rest from the standard allocator
/// (see [`alloc`]); off with `default-features = false`.
#[cfg(all(
    feature = "size-classes",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static GLOBAL: alloc::SizeClasses<std::alloc::System> = alloc::SizeClasses::new(std::alloc::System);

pub use message::handle_json;

/// The trait a handler component implements: the world's `init`, `handle`
/// and `handle-batch` exports (the last one defaults to `handle` for each
/// message). Implement it for a unit struct and export that with
/// [`export_handler!`], or let [`json_handler!`] do both.
pub trait Guest {
    /// Called once per instance with the handler's settings.
    fn init(settings: Settings) -> Result<(), String>;

    /// Processes one message.
    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError>;

    /// Processes several messages in order, one result each: by default
    /// `handle` on each.
    fn handle_batch(msgs: Vec<Message>) -> Vec<Result<Vec<Output>, HandlerError>> {
        msgs.into_iter().map(Self::handle).collect()
    }
}

/// The exports of a [`Guest`], as the generated bindings want them. Used by
/// [`export_handler!`]; not for direct use.
#[doc(hidden)]
pub struct Exported<T>(core::marker::PhantomData<T>);

impl<T: Guest> bindings::Guest for Exported<T> {
    fn init(settings: Settings) -> Result<(), String> {
        T::init(settings)
    }

    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {
        T::handle(msg)
    }

    fn handle_batch(msgs: Vec<Message>) -> Vec<Result<Vec<Output>, HandlerError>> {
        T::handle_batch(msgs)
    }
}

/// One Kafka record header (name and raw bytes).
pub use bindings::stagehost::handler::types::Header;

/// The message a handler is asked to process, exactly as consumed.
pub use bindings::stagehost::handler::types::Message;

/// One record the handler asks the host to produce.
pub use bindings::stagehost::handler::types::Output;

/// Why a handler could not process a message: `InvalidInput` is dead-lettered
/// and never retried, `Transient` is retried with backoff.
pub use bindings::stagehost::handler::types::HandlerError;

/// A handler's settings from `config.yml`, as `(name, value)` pairs.
pub use bindings::stagehost::handler::types::Settings;

/// A JSON value, the input and output of a [`json_handler!`] function.
pub use serde_json::Value;

/// The `serde_json` crate, re-exported so handlers need no direct dependency.
pub use serde_json;

/// Builds a [`Value`] from JSON-like syntax (re-export of `serde_json::json!`).
pub use serde_json::json;

impl HandlerError {
    /// An error saying the message itself is bad: the host dead-letters it and
    /// never retries.
    pub fn invalid_input(reason: impl Into<String>) -> Self {
        HandlerError::InvalidInput(reason.into())
    }

    /// An error saying the failure is temporary: the host retries the message
    /// with backoff, then dead-letters it.
    pub fn transient(reason: impl Into<String>) -> Self {
        HandlerError::Transient(reason.into())
    }

    /// The human-readable reason carried by either case.
    pub fn reason(&self) -> &str {
        match self {
            HandlerError::InvalidInput(reason) | HandlerError::Transient(reason) => reason,
        }
    }

    /// Whether this is the `transient` case (the host will retry).
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

/// An `init` that accepts any settings; the default used by [`json_handler!`].
pub fn accept_any_settings(_settings: Settings) -> Result<(), String> {
    Ok(())
}

/// Looks up the first setting called `name`.
pub fn setting<'a>(settings: &'a Settings, name: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Exports a type implementing [`Guest`] as this component's handler.
///
/// Use it once per handler crate (a `cdylib`), with the name of a type in
/// scope: `export_handler!(MyHandler);`.
#[macro_export]
macro_rules! export_handler {
    ($ty:ident) => {
        #[doc(hidden)]
        type StagehostExported = $crate::Exported<$ty>;
        $crate::bindings::export!(StagehostExported with_types_in $crate::bindings);
    };
}

/// Defines and exports a handler from one JSON function.
///
/// `json_handler!(f)` takes a function (any path) of type
/// `fn(Value) -> Result<Value, HandlerError>`. The generated handler:
///
/// - accepts any settings in `init` (pass `init = g` to use your own
///   `fn(Settings) -> Result<(), String>` instead:
///   `json_handler!(f, init = g);`);
/// - parses the message value as JSON, failing with `invalid-input` if it is
///   empty or not valid JSON;
/// - calls `f` and returns its value, serialised as JSON, as one output with
///   no key override, no topic override and no headers. An error from `f` is
///   returned unchanged.
///
/// Use it once per handler crate (a `cdylib`).
#[macro_export]
macro_rules! json_handler {
    ($handler:path $(,)?) => {
        $crate::json_handler!($handler, init = $crate::accept_any_settings);
    };
    ($handler:path, init = $init:path $(,)?) => {
        #[doc(hidden)]
        struct StagehostJsonHandler;

        impl $crate::Guest for StagehostJsonHandler {
            fn init(
                settings: $crate::Settings,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $init(settings)
            }

            fn handle(
                msg: $crate::Message,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Output>, $crate::HandlerError> {
                $crate::handle_json(&msg, $handler)
            }
        }

        $crate::export_handler!(StagehostJsonHandler);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_constructors_pick_the_case() {
        let bad = HandlerError::invalid_input("no");
        assert_eq!(bad, HandlerError::InvalidInput("no".into()));
        assert_eq!(bad.reason(), "no");
        assert!(!bad.is_transient());

        let later = HandlerError::transient(String::from("busy"));
        assert_eq!(later, HandlerError::Transient("busy".into()));
        assert_eq!(later.reason(), "busy");
        assert!(later.is_transient());
    }

    #[test]
    fn settings_lookup_takes_the_first_match() {
        let settings: Settings = vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        assert_eq!(setting(&settings, "a"), Some("1"));
        assert_eq!(setting(&settings, "b"), Some("2"));
        assert_eq!(setting(&settings, "c"), None);
        assert_eq!(accept_any_settings(settings), Ok(()));
    }
}
