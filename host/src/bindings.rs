//! The host side of `wit/stage-handler.wit`: the one `bindgen!` in the host.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stage-handler",
});

pub use self::stagehost::handler::log::Level;
pub use self::stagehost::handler::types::Header;
