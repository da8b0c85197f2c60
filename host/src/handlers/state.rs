//! The guest's view of state: the `state` import, answered through a
//! [`StateAccess`] that the message path lends an instance for one call
//! (the pipeline owns the store, the changelog and the per-message rules).

use super::bindings::StateEntry;
use super::bindings::stagehost::handler::state::Host;
use super::sandbox::GuestState;
use std::any::Any;
use std::collections::BTreeMap;

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
    /// The access as [`Any`], for the lender to take its own type back.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// State in memory, for calls with no stage behind them (self-tests and
/// `host test`): the same answers as a stage's store, kept while it lives.
/// Expiry is measured against `now_ms`, the time of the message at hand.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    /// Key -> (expires at, in ms since the epoch; value).
    entries: BTreeMap<Vec<u8>, (Option<u64>, Vec<u8>)>,
    /// The time of the message being handled, in ms since the epoch.
    pub now_ms: u64,
}

impl MemoryState {
    fn live(&self, expires: Option<u64>) -> bool {
        expires.is_none_or(|at| at > self.now_ms)
    }

    /// The live entries, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .filter(|(_, (expires, _))| self.live(*expires))
            .map(|(key, (_, value))| (key.as_slice(), value.as_slice()))
    }
}

impl StateAccess for MemoryState {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let (expires, value) = self.entries.get(key)?;
        self.live(*expires).then(|| value.clone())
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: Option<u64>) {
        let expires = ttl_ms.map(|ttl| self.now_ms.saturating_add(ttl));
        self.entries.insert(key, (expires, value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.entries.remove(&key);
    }

    fn scan(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let from = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_vec()),
            _ => std::ops::Bound::Included(prefix.to_vec()),
        };
        self.entries
            .range((from, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, (expires, _))| self.live(*expires))
            .take(limit)
            .map(|(key, (_, value))| (key.clone(), value.clone()))
            .collect()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
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
