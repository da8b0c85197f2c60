//! Per-key state kept by the host (the world's `state` import): scoped to
//! the stage and the input partition of the message being handled, applied
//! together with the message's outputs, and kept in Kafka. The stage needs
//! `state:` in its config, and keyed messages.
//!
//! ```no_run
//! use stagehost_guest::state;
//!
//! let seen = state::get_json(b"count").and_then(|v| v.as_u64()).unwrap_or(0);
//! state::set_json(b"count", &(seen + 1).into());
//! ```
//!
//! Outside WebAssembly (native unit tests) the state is an in-memory map per
//! thread, so handler logic can be tested with plain `cargo test`.

use serde_json::Value;

#[cfg(target_arch = "wasm32")]
use crate::bindings::stagehost::handler::state as host;

/// The value stored under `key`, if any (an expired entry is none).
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    return host::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    return native::get(key);
}

/// Stores `value` under `key`.
pub fn set(key: &[u8], value: &[u8]) {
    set_with_ttl(key, value, None);
}

/// Stores `value` under `key`, expiring `ttl_ms` milliseconds after the
/// message's timestamp when given.
pub fn set_with_ttl(key: &[u8], value: &[u8], ttl_ms: Option<u64>) {
    #[cfg(target_arch = "wasm32")]
    host::set(key, value, ttl_ms);
    #[cfg(not(target_arch = "wasm32"))]
    native::set(key, value, ttl_ms);
}

/// Removes the entry under `key`, if any.
pub fn delete(key: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    host::delete(key);
    #[cfg(not(target_arch = "wasm32"))]
    native::delete(key);
}

/// Up to `limit` (at most 1000) entries whose keys start with `prefix`, in
/// key order, after `start_after` when given.
pub fn scan(prefix: &[u8], start_after: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    #[cfg(target_arch = "wasm32")]
    return host::scan(prefix, start_after, limit)
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect();
    #[cfg(not(target_arch = "wasm32"))]
    return native::scan(prefix, start_after, limit);
}

/// The JSON value under `key`; none when absent or not JSON.
pub fn get_json(key: &[u8]) -> Option<Value> {
    serde_json::from_slice(&get(key)?).ok()
}

/// Stores `value` as JSON under `key`.
pub fn set_json(key: &[u8], value: &Value) {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    set(key, &bytes);
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static STATE: RefCell<BTreeMap<Vec<u8>, Vec<u8>>> = RefCell::default();
    }

    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        STATE.with(|state| state.borrow().get(key).cloned())
    }

    pub fn set(key: &[u8], value: &[u8], _ttl_ms: Option<u64>) {
        STATE.with(|state| state.borrow_mut().insert(key.to_vec(), value.to_vec()));
    }

    pub fn delete(key: &[u8]) {
        STATE.with(|state| state.borrow_mut().remove(key));
    }

    pub fn scan(prefix: &[u8], start_after: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        STATE.with(|state| {
            state
                .borrow()
                .range(prefix.to_vec()..)
                .filter(|(key, _)| start_after.is_none_or(|after| key.as_slice() > after))
                .take_while(|(key, _)| key.starts_with(prefix))
                .take(limit.min(1000) as usize)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
    }
}
