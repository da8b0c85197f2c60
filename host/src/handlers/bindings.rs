//! The host side of `wit/stage-handler.wit` (package version 0.2.0): the
//! one `bindgen!` in the host, the borrowed message type the host lowers
//! straight into a guest, and the imports of components built for the
//! 0.1.0 package (`wit/0.1.0/`), which keep working unchanged.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stage-handler",
    // Guest calls are async so they run on the tokio workers without
    // blocking them: a long call yields at every epoch tick.
    exports: { default: async },
    // A state call from a stage without state traps its call.
    imports: {
        "stagehost:handler/state.get": trappable,
        "stagehost:handler/state.set": trappable,
        "stagehost:handler/state.delete": trappable,
        "stagehost:handler/state.scan": trappable,
    },
});

pub use self::stagehost::handler::log::Level;
pub use self::stagehost::handler::state::Entry as StateEntry;
pub use self::stagehost::handler::types::Header;

use wasmtime::component::{ComponentType, Lower};

/// The interfaces of the 0.1.0 package a component may import: the same
/// `types` (records compare by shape) and `log`.
pub const LEGACY_TYPES: &str = "stagehost:handler/types@0.1.0";
/// See [`LEGACY_TYPES`].
pub const LEGACY_LOG: &str = "stagehost:handler/log@0.1.0";
/// The name of the state interface a stateful component imports.
pub const STATE: &str = "stagehost:handler/state@0.2.0";

/// The world's `message`, borrowed: lowered into the guest straight from
/// the consumed record's buffers, without an owned copy on the host first.
/// Its fields are those of `message` in `wit/stage-handler.wit`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub struct MessageRef<'a> {
    /// Topic the message was consumed from.
    pub topic: &'a str,
    /// Partition the message was consumed from.
    pub partition: i32,
    /// Offset of the message within its partition.
    pub offset: i64,
    /// Record key, if the producer set one.
    pub key: Option<&'a [u8]>,
    /// Record value; empty for a null value.
    pub value: &'a [u8],
    /// Record headers in the order they were sent.
    pub headers: &'a [HeaderRef<'a>],
    /// Record timestamp in milliseconds since the Unix epoch, if known.
    pub timestamp: Option<i64>,
}

/// The world's `header`, borrowed (see [`MessageRef`]).
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub struct HeaderRef<'a> {
    /// Header name.
    pub key: &'a str,
    /// Header value as raw bytes.
    pub value: &'a [u8],
}

impl Message {
    /// The header list of [`Message::borrowed`].
    pub fn header_refs(&self) -> Vec<HeaderRef<'_>> {
        self.headers
            .iter()
            .map(|header| HeaderRef {
                key: &header.key,
                value: &header.value,
            })
            .collect()
    }

    /// This message, borrowed, with `headers` from [`Message::header_refs`].
    pub fn borrowed<'a>(&'a self, headers: &'a [HeaderRef<'a>]) -> MessageRef<'a> {
        MessageRef {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            value: &self.value,
            headers,
            timestamp: self.timestamp,
        }
    }
}
