//! The host side of `wit/stage-handler.wit`: the one `bindgen!` in the host.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stage-handler",
    // Guest calls are async so they run on the tokio workers without
    // blocking them: a long call yields at every epoch tick.
    exports: { default: async },
});

pub use self::stagehost::handler::log::Level;
pub use self::stagehost::handler::types::Header;
