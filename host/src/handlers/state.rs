//! The guest's view of state: the `state` import, answered through a
//! [`StateAccess`] that the message path lends an instance for one call
//! (the pipeline owns the store, the changelog and the per-message rules).

use super::bindings::StateEntry;
use super::bindings::stagehost::handler::state::Host;
use super::sandbox::GuestState;

/// Most entries one `scan` returns.
pub const MAX_SCAN: u32 = 1000;

/// What a call may do with its stage's state for the message it handles.
pub trait StateAccess: Send {
    /// The value under `key`, if any and not expired.
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>>;
    /// Stores `value` under `key`, expiring `ttl_ms` after the message's time.
    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: Option<u64>);
    /// Removes the entry under `key`.
    fn delete(&mut self, key: Vec<u8>);
    /// Up to `limit` live entries whose keys start with `prefix`, in key
    /// order, after `start_after` when given.
    fn scan(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// Why a state call trapped: the call's stage has no state.
fn no_state() -> wasmtime::Error {
    wasmtime::Error::msg(
        "the handler called `state`, but its stage has no state (add `state:` to the stage in the config)",
    )
}

impl Host for GuestState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        let state = self.state.as_mut().ok_or_else(no_state)?;
        Ok(state.get(&key))
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: Option<u64>) -> wasmtime::Result<()> {
        let state = self.state.as_mut().ok_or_else(no_state)?;
        state.set(key, value, ttl_ms);
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        let state = self.state.as_mut().ok_or_else(no_state)?;
        state.delete(key);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<StateEntry>> {
        let state = self.state.as_mut().ok_or_else(no_state)?;
        let limit = limit.min(MAX_SCAN) as usize;
        Ok(state
            .scan(&prefix, start_after.as_deref(), limit)
            .into_iter()
            .map(|(key, value)| StateEntry { key, value })
            .collect())
    }
}
