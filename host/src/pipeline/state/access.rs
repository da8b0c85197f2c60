//! What a handler call sees of its partition's state, in three layers: the
//! changes of the message being handled ([`MessageState`]), over the
//! changes of messages whose transaction is not committed yet (exactly-once
//! only), over the partition's [`PartitionStore`].
//!
//! A message's changes are checked against the handler's limits when its
//! call ends: past `limits.state_writes` or `limits.state_bytes`, none of
//! them is kept and the message is dead-lettered as `state-limit`.

use super::store::{Change, Entry, PartitionStore, entry_size};
use crate::handlers::state::StateAccess;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most expired entries one purge removes.
const PURGE_LIMIT: usize = 100_000;

/// Changes by key, the last one winning.
type Overlay = BTreeMap<Vec<u8>, Option<Entry>>;

/// One input partition's state.
pub(crate) struct PartitionState {
    pub(crate) partition: i32,
    pub(crate) store: PartitionStore,
    /// Changes of messages in the open transaction (exactly-once).
    uncommitted: Overlay,
    /// The entries' size as the next message sees it.
    bytes: u64,
    /// The changelog offset to catch up from: where the last restore ended.
    pub(crate) checkpoint: i64,
    /// The partition's assignment epoch the state was caught up in.
    pub(crate) epoch: u64,
    /// When the checkpoint was last written.
    pub(crate) checkpointed: std::time::Instant,
    /// The latest message time seen (ms since the epoch): entries that
    /// expired by it are purged.
    pub(crate) stream_time: u64,
}

/// A shared partition state.
pub(crate) type SharedPartition = Arc<Mutex<PartitionState>>;

/// Locks a partition's state (a panic while it was held leaves it usable:
/// every change to it is one assignment).
pub(crate) fn lock(partition: &SharedPartition) -> MutexGuard<'_, PartitionState> {
    partition
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PartitionState {
    /// The state of `partition` in `store`, caught up to `checkpoint`.
    pub(crate) fn new(partition: i32, store: PartitionStore, checkpoint: i64, epoch: u64) -> Self {
        Self {
            partition,
            bytes: store.bytes(),
            store,
            uncommitted: Overlay::new(),
            checkpoint,
            epoch,
            checkpointed: std::time::Instant::now(),
            stream_time: 0,
        }
    }

    /// The entries' size as the next message sees it.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry under `key` below the message's own changes.
    fn below(&self, key: &[u8]) -> anyhow::Result<Option<Entry>> {
        match self.uncommitted.get(key) {
            Some(change) => Ok(change.clone()),
            None => self.store.get(key),
        }
    }

    /// Up to `limit` live entries with keys starting with `prefix` (after
    /// `after`), seen through `uncommitted` and then `top`.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
        top: &Overlay,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let overlaid = |key: &[u8]| top.contains_key(key) || self.uncommitted.contains_key(key);
        let page = limit.clamp(16, 1024);
        let mut lower: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut cursor: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
        loop {
            let found = self.store.scan(prefix, cursor.as_deref(), page)?;
            let exhausted = found.len() < page;
            for (key, entry) in found {
                if !overlaid(&key) && entry.live_at(now_ms) {
                    lower.insert(key.clone(), entry.value);
                }
                cursor = Some(key);
            }
            // Overlay keys count only up to where the store has been read.
            let bound = if exhausted { None } else { cursor.clone() };
            let mut merged = lower.clone();
            for (key, change) in self.uncommitted.iter().chain(top.iter()) {
                let in_range = key.starts_with(prefix)
                    && after.is_none_or(|after| key.as_slice() > after)
                    && bound.as_ref().is_none_or(|bound| key <= bound);
                if !in_range {
                    continue;
                }
                match change {
                    Some(entry) if entry.live_at(now_ms) => {
                        merged.insert(key.clone(), entry.value.clone());
                    }
                    _ => {
                        merged.remove(key);
                    }
                }
            }
            if exhausted || merged.len() >= limit {
                return Ok(merged.into_iter().take(limit).collect());
            }
        }
    }

    /// Takes a message's changes: into the store at once (at-least-once),
    /// or into the open transaction's changes (exactly-once).
    pub(crate) fn record(
        &mut self,
        changes: MessageChanges,
        transactional: bool,
    ) -> anyhow::Result<()> {
        self.stream_time = self.stream_time.max(changes.now_ms);
        if transactional {
            self.uncommitted.extend(changes.changes);
            self.bytes = changes.bytes_after;
            return Ok(());
        }
        let changes: Vec<Change> = changes.changes.into_iter().collect();
        self.store.apply(&changes, None, false)?;
        self.bytes = self.store.bytes();
        Ok(())
    }

    /// The open transaction committed: its changes go into the store.
    pub(crate) fn commit(&mut self) -> anyhow::Result<()> {
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change> = std::mem::take(&mut self.uncommitted).into_iter().collect();
        self.store.apply(&changes, None, false)?;
        self.bytes = self.store.bytes();
        Ok(())
    }

    /// Purges entries that expired by the stream time. Only when no
    /// transaction is open (its changes are not in the store yet).
    pub(crate) fn purge_expired(&mut self) -> anyhow::Result<usize> {
        if !self.uncommitted.is_empty() {
            return Ok(0);
        }
        let purged = self.store.purge_expired(self.stream_time, PURGE_LIMIT)?;
        self.bytes = self.store.bytes();
        Ok(purged)
    }

    /// The open transaction was aborted: its changes are dropped.
    pub(crate) fn abort(&mut self) {
        self.uncommitted.clear();
        self.bytes = self.store.bytes();
    }
}

/// One message's changes, within the limits.
#[derive(Debug, Default)]
pub(crate) struct MessageChanges {
    pub(crate) changes: Overlay,
    /// The partition's state size once they are applied.
    pub(crate) bytes_after: u64,
    /// The message's time.
    pub(crate) now_ms: u64,
}

/// Why a message's changes are not kept.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A limit would be passed (`state-limit`).
    Limit(String),
    /// The store failed.
    Store(String),
}

/// The limits a handler's state changes keep to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateLimits {
    pub(crate) bytes: u64,
    pub(crate) writes: u32,
}

/// The state one call sees and changes: lent to the instance for the call,
/// then taken back with [`MessageState::finish`].
pub(crate) struct MessageState {
    partition: SharedPartition,
    changes: Overlay,
    /// The message's time: what expiry is measured against.
    now_ms: u64,
    writes: u64,
    limits: StateLimits,
    /// The first store failure of the call.
    failure: Option<String>,
}

impl MessageState {
    /// The state a message at `now_ms` sees in `partition`.
    pub(crate) fn new(partition: SharedPartition, now_ms: u64, limits: StateLimits) -> Self {
        Self {
            partition,
            changes: Overlay::new(),
            now_ms,
            writes: 0,
            limits,
            failure: None,
        }
    }

    fn note(&mut self, outcome: anyhow::Result<()>) {
        if let Err(err) = outcome
            && self.failure.is_none()
        {
            self.failure = Some(format!("the state store failed: {err:#}"));
        }
    }

    fn change(&mut self, key: Vec<u8>, entry: Option<Entry>) {
        self.writes += 1;
        // Past the limit the message is refused anyway: keep nothing more.
        if self.writes <= u64::from(self.limits.writes) {
            self.changes.insert(key, entry);
        }
    }

    /// The call's changes, checked against the limits.
    pub(crate) fn finish(self) -> Result<MessageChanges, Refusal> {
        if let Some(failure) = self.failure {
            return Err(Refusal::Store(failure));
        }
        let partition = lock(&self.partition);
        if self.writes > u64::from(self.limits.writes) {
            return Err(Refusal::Limit(format!(
                "the message made {} state changes; limits.state_writes allows {}",
                self.writes, self.limits.writes
            )));
        }
        let mut bytes = partition.bytes();
        for (key, change) in &self.changes {
            let old = partition
                .below(key)
                .map_err(|err| Refusal::Store(format!("the state store failed: {err:#}")))?;
            if let Some(old) = old {
                bytes = bytes.saturating_sub(entry_size(key, &old));
            }
            if let Some(new) = change {
                bytes += entry_size(key, new);
            }
        }
        if bytes > self.limits.bytes && bytes > partition.bytes() {
            return Err(Refusal::Limit(format!(
                "the state of partition {} would hold {bytes} bytes; limits.state_bytes allows {}",
                partition.partition, self.limits.bytes
            )));
        }
        drop(partition);
        Ok(MessageChanges {
            changes: self.changes,
            bytes_after: bytes,
            now_ms: self.now_ms,
        })
    }
}

impl StateAccess for MessageState {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let entry = match self.changes.get(key) {
            Some(change) => change.clone(),
            None => {
                let found = lock(&self.partition).below(key);
                match found {
                    Ok(entry) => entry,
                    Err(err) => {
                        self.note(Err(err));
                        None
                    }
                }
            }
        };
        entry
            .filter(|entry| entry.live_at(self.now_ms))
            .map(|entry| entry.value)
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: Option<u64>) {
        let expires = ttl_ms.map(|ttl| self.now_ms.saturating_add(ttl.max(1)));
        self.change(key, Some(Entry { expires, value }));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.change(key, None);
    }

    fn scan(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let found =
            lock(&self.partition).scan(prefix, start_after, limit, self.now_ms, &self.changes);
        match found {
            Ok(found) => found,
            Err(err) => {
                self.note(Err(err));
                Vec::new()
            }
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(name: &str) -> SharedPartition {
        let dir =
            std::env::temp_dir().join(format!("stagehost-access-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = PartitionStore::open(&dir.join("0.redb")).unwrap();
        Arc::new(Mutex::new(PartitionState::new(0, store, -1, 0)))
    }

    const LIMITS: StateLimits = StateLimits {
        bytes: 1 << 20,
        writes: 10,
    };

    /// One message at `now` setting `key` to `value` (with a ttl).
    fn set(
        shared: &SharedPartition,
        now: u64,
        key: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> MessageChanges {
        let mut state = MessageState::new(shared.clone(), now, LIMITS);
        state.set(key.into(), value.into(), ttl);
        state.finish().unwrap()
    }

    fn get(shared: &SharedPartition, now: u64, key: &str) -> Option<String> {
        let mut state = MessageState::new(shared.clone(), now, LIMITS);
        state
            .get(key.as_bytes())
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn a_transaction_s_changes_are_seen_kept_on_commit_and_dropped_on_abort() {
        let shared = partition("transactions");
        let changes = set(&shared, 0, "a", "1", None);
        lock(&shared).record(changes, true).unwrap();
        // Later messages of the open transaction see it; the store does not hold it.
        assert_eq!(get(&shared, 0, "a").as_deref(), Some("1"));
        assert_eq!(lock(&shared).store.get(b"a").unwrap(), None);
        lock(&shared).abort();
        assert_eq!(get(&shared, 0, "a"), None);
        assert_eq!(lock(&shared).bytes(), 0);

        let changes = set(&shared, 0, "a", "2", None);
        lock(&shared).record(changes, true).unwrap();
        lock(&shared).commit().unwrap();
        assert_eq!(lock(&shared).store.get(b"a").unwrap().unwrap().value, b"2");
        assert_eq!(lock(&shared).bytes(), 2);
    }

    #[test]
    fn entries_expired_by_the_stream_time_are_purged() {
        let shared = partition("purge");
        let changes = set(&shared, 1000, "old", "1", Some(100));
        lock(&shared).record(changes, false).unwrap();
        let changes = set(&shared, 2000, "new", "1", Some(100));
        lock(&shared).record(changes, false).unwrap();
        assert_eq!(lock(&shared).bytes(), 8);
        // Stream time 2000: `old` (expired at 1100) goes, `new` stays.
        assert_eq!(lock(&shared).purge_expired().unwrap(), 1);
        assert_eq!(lock(&shared).bytes(), 4);
        assert_eq!(get(&shared, 2000, "new").as_deref(), Some("1"));
        // Nothing is purged while a transaction's changes are aside.
        let changes = set(&shared, 5000, "next", "1", None);
        lock(&shared).record(changes, true).unwrap();
        assert_eq!(lock(&shared).purge_expired().unwrap(), 0);
    }

    #[test]
    fn limits_refuse_the_whole_message() {
        let shared = partition("limits");
        let mut state = MessageState::new(
            shared.clone(),
            0,
            StateLimits {
                bytes: 8,
                writes: 2,
            },
        );
        state.set(b"a".to_vec(), b"1".to_vec(), None);
        state.set(b"b".to_vec(), b"1".to_vec(), None);
        state.set(b"c".to_vec(), b"1".to_vec(), None);
        assert!(
            matches!(state.finish(), Err(Refusal::Limit(reason)) if reason.contains("limits.state_writes"))
        );
        let mut state = MessageState::new(
            shared.clone(),
            0,
            StateLimits {
                bytes: 8,
                writes: 2,
            },
        );
        state.set(b"key".to_vec(), b"too long".to_vec(), None);
        assert!(
            matches!(state.finish(), Err(Refusal::Limit(reason)) if reason.contains("limits.state_bytes"))
        );
        // Shrinking is allowed even past the limit.
        let mut state = MessageState::new(
            shared,
            0,
            StateLimits {
                bytes: 8,
                writes: 2,
            },
        );
        state.delete(b"key".to_vec());
        assert!(state.finish().is_ok());
    }

    #[test]
    fn entries_expire_by_message_time_and_scan_merges_the_layers() {
        let shared = partition("scan");
        for (key, ttl) in [("p1", None), ("p2", Some(100)), ("p3", None), ("q1", None)] {
            let changes = set(&shared, 1000, key, key, ttl);
            lock(&shared).record(changes, false).unwrap();
        }
        assert_eq!(get(&shared, 1099, "p2").as_deref(), Some("p2"));
        assert_eq!(get(&shared, 1100, "p2"), None);
        // Uncommitted: p1 deleted, p4 added; the message itself sets p0.
        let mut state = MessageState::new(shared.clone(), 2000, LIMITS);
        state.delete(b"p1".to_vec());
        state.set(b"p4".to_vec(), b"p4".to_vec(), None);
        let changes = state.finish().unwrap();
        lock(&shared).record(changes, true).unwrap();
        let mut state = MessageState::new(shared.clone(), 2000, LIMITS);
        state.set(b"p0".to_vec(), b"p0".to_vec(), None);
        let keys = |found: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
            found
                .into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect()
        };
        assert_eq!(keys(state.scan(b"p", None, 10)), ["p0", "p3", "p4"]);
        assert_eq!(keys(state.scan(b"p", None, 2)), ["p0", "p3"]);
        assert_eq!(keys(state.scan(b"p", Some(b"p0"), 10)), ["p3", "p4"]);
    }
}
