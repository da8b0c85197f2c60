//! Per-key state of a stage with `state:`: for each input partition, a
//! local store ([`store`]) and that partition of a compacted changelog
//! topic, which is the state's truth; [`access`] is what a handler call
//! sees of it.
//!
//! - A partition's store is opened, and caught up with its changelog from
//!   its checkpoint, before its first message is handled, and again after
//!   the partition was revoked (another host may have changed it meanwhile);
//!   at-least-once waits for the partition's changelog records in flight
//!   first, exactly-once ends the open transaction first, so the changelog
//!   read back holds every change the store holds.
//! - Every message's changes become changelog records (the key, the value or
//!   a tombstone, and a `stagehost-expires-at` header for an entry with a
//!   time to live) sent with the message's outputs: acknowledged before its
//!   offset is stored (at-least-once), or in the same transaction as its
//!   outputs and offset (exactly-once).
//! - At-least-once applies a message's changes to the store at once;
//!   exactly-once keeps them aside until the transaction commits and drops
//!   them when it aborts, so the store only ever holds committed changes.
//! - The checkpoint is where the last catch-up ended; after a crash the
//!   store comes back as of some earlier commit, and the changelog from the
//!   checkpoint on (committed records only) brings it to exactly what the
//!   changelog holds.

pub(crate) mod access;
pub(crate) mod store;

use super::outputs::Record;
use access::{MessageChanges, PartitionState, SharedPartition, lock};
use anyhow::Context as _;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{AlreadyOpen, Change, Entry, PartitionStore};

use super::metrics::StageMetrics;
use crate::config::StatePlan;
use crate::kafka::headers::{RecordHeaders, raw_headers};
use crate::kafka::{HostContext, PartitionEpochs};

/// The changelog header holding an entry's expiry (ms since the epoch).
pub const EXPIRES_AT: &str = "stagehost-expires-at";
/// Changelog records applied to a store per local transaction while restoring.
const RESTORE_BATCH: usize = 10_000;
/// How often a long restore logs how far it got.
const RESTORE_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a restore may go without a record before it fails.
const RESTORE_STALL: Duration = Duration::from_secs(60);
/// How often a partition's checkpoint moves up to its changelog's end while
/// the stage runs, so that a restart after a crash reads only the tail.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a watermark request may take.
const WATERMARKS_TIMEOUT: Duration = Duration::from_secs(10);

/// A stateful stage's partitions' state.
pub struct StageState {
    stage: String,
    plan: StatePlan,
    partitions: Mutex<BTreeMap<i32, SharedPartition>>,
    /// Reads the changelog (committed records only, to the end).
    restorer: Mutex<BaseConsumer<HostContext>>,
    /// The stage consumer's assignment epochs, per partition.
    epochs: Arc<PartitionEpochs>,
    metrics: StageMetrics,
}

impl StageState {
    /// The state of `stage`, kept as `plan` says; `restorer` reads the
    /// changelog and `epochs` tells when a partition was revoked.
    pub fn new(
        stage: &str,
        plan: StatePlan,
        restorer: BaseConsumer<HostContext>,
        epochs: Arc<PartitionEpochs>,
        metrics: StageMetrics,
    ) -> Self {
        Self {
            stage: stage.to_string(),
            plan,
            partitions: Mutex::new(BTreeMap::new()),
            restorer: Mutex::new(restorer),
            epochs,
            metrics,
        }
    }

    /// The stage's changelog topic.
    pub fn changelog(&self) -> &str {
        &self.plan.changelog
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, SharedPartition>> {
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `partition` must be caught up with its changelog before its
    /// next message: never opened here, or revoked since.
    pub(crate) fn needs_catch_up(&self, partition: i32) -> bool {
        let epoch = self.epochs.epoch(partition);
        self.partitions()
            .get(&partition)
            .is_none_or(|shared| lock(shared).epoch != epoch)
    }

    /// The state of `partition`, caught up with its changelog when
    /// [`StageState::needs_catch_up`]. Blocks while it restores.
    pub(crate) fn partition(&self, partition: i32) -> anyhow::Result<SharedPartition> {
        let epoch = self.epochs.epoch(partition);
        let existing = self.partitions().get(&partition).cloned();
        if let Some(shared) = &existing
            && lock(shared).epoch == epoch
        {
            return Ok(shared.clone());
        }
        let shared = tokio::task::block_in_place(|| self.catch_up(partition, existing, epoch))
            .with_context(|| {
                format!(
                    "stage `{}`: restoring the state of partition {partition} from `{}`",
                    self.stage, self.plan.changelog
                )
            })?;
        self.partitions().insert(partition, shared.clone());
        Ok(shared)
    }

    /// Opens the partition's store if needed and applies the changelog from
    /// its checkpoint to the end.
    fn catch_up(
        &self,
        partition: i32,
        existing: Option<SharedPartition>,
        epoch: u64,
    ) -> anyhow::Result<SharedPartition> {
        let started = Instant::now();
        let shared = match existing {
            Some(shared) => shared,
            None => {
                let path = self.plan.dir.join(format!("{partition}.redb"));
                let (mut store, checkpoint) = match PartitionStore::open(&path) {
                    Err(err) if err.is::<AlreadyOpen>() => {
                        // Another host on this state_dir holds it: keep a
                        // copy of this process's own, restored in full.
                        let own = self
                            .plan
                            .dir
                            .join(format!("{partition}.{}.redb", std::process::id()));
                        tracing::warn!(stage = %self.stage, partition, store = %own.display(), "{err}; using a store of this process's own");
                        let _ = std::fs::remove_file(&own);
                        PartitionStore::open(&own)?
                    }
                    opened => opened?,
                };
                if checkpoint.is_none() {
                    store.clear()?;
                }
                Arc::new(Mutex::new(PartitionState::new(
                    partition,
                    store,
                    checkpoint.unwrap_or(-1),
                    epoch,
                )))
            }
        };
        let mut state = lock(&shared);
        let consumer = self
            .restorer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changelog = self.plan.changelog.as_str();
        let (low, high) = consumer.fetch_watermarks(changelog, partition, WATERMARKS_TIMEOUT)?;
        let mut start = if state.checkpoint < 0 {
            low
        } else {
            state.checkpoint
        };
        if start > high {
            tracing::warn!(
                stage = %self.stage,
                partition,
                checkpoint = start,
                end = high,
                "the changelog ends before the store's checkpoint (was it recreated?); restoring from its beginning"
            );
            state.store.clear()?;
            start = low;
        }
        let start = start.max(low);
        let mut end = start;
        let mut records = 0u64;
        if start < high {
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(changelog, partition, Offset::Offset(start))?;
            consumer.assign(&assignment)?;
            let mut batch: Vec<Change> = Vec::new();
            let mut progressed = Instant::now();
            let mut reported = Instant::now();
            loop {
                match consumer.poll(Duration::from_millis(200)) {
                    None => {
                        if progressed.elapsed() > RESTORE_STALL {
                            anyhow::bail!(
                                "no record for {} s at offset {end} of {high}",
                                RESTORE_STALL.as_secs()
                            );
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(err)) => return Err(err.into()),
                    Some(Ok(message)) => {
                        progressed = Instant::now();
                        end = message.offset() + 1;
                        records += 1;
                        if let Some(change) = change_of(&message) {
                            batch.push(change);
                        }
                        if batch.len() >= RESTORE_BATCH {
                            state.store.apply(&batch, None, false)?;
                            batch.clear();
                            if reported.elapsed() >= RESTORE_REPORT_INTERVAL {
                                reported = Instant::now();
                                tracing::info!(stage = %self.stage, partition, at = end, of = high, records, "restoring state");
                            }
                        }
                    }
                }
            }
            // Past the transaction markers after the last record.
            if let Ok(position) = consumer.position()
                && let Some(element) = position.find_partition(changelog, partition)
                && let Offset::Offset(offset) = element.offset()
            {
                end = end.max(offset);
            }
            consumer.unassign()?;
            state.store.apply(&batch, Some(end), true)?;
        } else {
            state.store.apply(&[], Some(start), true)?;
        }
        state.abort();
        state.checkpoint = end;
        state.epoch = epoch;
        let elapsed = started.elapsed();
        self.metrics
            .state_restored(partition, records, elapsed.as_secs_f64(), state.bytes());
        tracing::info!(
            stage = %self.stage,
            partition,
            changelog,
            from = start,
            to = end,
            records,
            bytes = state.bytes(),
            elapsed_ms = elapsed.as_millis() as u64,
            "state caught up"
        );
        drop(state);
        Ok(shared)
    }

    /// The changelog records of one message's changes to `partition`.
    pub(crate) fn changelog_records(
        &self,
        partition: i32,
        changes: &MessageChanges,
    ) -> Vec<Record> {
        changes
            .changes
            .iter()
            .map(|(key, change)| {
                let mut headers = OwnedHeaders::new();
                if let Some(Entry {
                    expires: Some(at), ..
                }) = change
                {
                    headers = headers.insert(Header {
                        key: EXPIRES_AT,
                        value: Some(at.to_string().as_bytes()),
                    });
                }
                Record {
                    topic: self.plan.changelog.clone(),
                    partition: Some(partition),
                    key: Some(key.clone()),
                    value: change.as_ref().map(|entry| entry.value.clone()),
                    headers,
                }
            })
            .collect()
    }

    /// The open transaction committed: every partition's changes go into
    /// its store.
    pub(crate) fn commit(&self) -> anyhow::Result<()> {
        for shared in self.partitions().values() {
            lock(shared).commit()?;
        }
        Ok(())
    }

    /// The open transaction was aborted: every partition's uncommitted
    /// changes are dropped.
    pub(crate) fn abort(&self) {
        for shared in self.partitions().values() {
            lock(shared).abort();
        }
    }

    /// Purges the entries that expired by the stream time and moves the
    /// checkpoint of `partition` (or of every partition held) up to the
    /// changelog's end, durably, once [`CHECKPOINT_INTERVAL`] passed since
    /// the last one. Call it only when the store holds every change
    /// the changelog holds (exactly-once: right after a commit was applied;
    /// at-least-once: any time, since the store takes changes before their
    /// records are sent). A failure is logged; the next restore reads more.
    pub(crate) fn checkpoint_if_due(&self, partition: Option<i32>) {
        let due: Vec<(i32, SharedPartition)> = self
            .partitions()
            .iter()
            .filter(|(held, _)| partition.is_none_or(|wanted| wanted == **held))
            .filter(|(_, shared)| lock(shared).checkpointed.elapsed() >= CHECKPOINT_INTERVAL)
            .map(|(held, shared)| (*held, shared.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        tokio::task::block_in_place(|| {
            let consumer = self
                .restorer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (partition, shared) in due {
                let mut state = lock(&shared);
                state.checkpointed = Instant::now();
                match state.purge_expired() {
                    Ok(0) => {}
                    Ok(purged) => {
                        tracing::debug!(stage = %self.stage, partition, purged, "expired state entries purged")
                    }
                    Err(err) => {
                        tracing::warn!(stage = %self.stage, partition, cause = %format!("{err:#}"), "purging expired state entries failed")
                    }
                }
                let written = consumer
                    .fetch_watermarks(&self.plan.changelog, partition, WATERMARKS_TIMEOUT)
                    .map_err(anyhow::Error::from)
                    .and_then(|(_, high)| {
                        state.store.apply(&[], Some(high), true)?;
                        Ok(high)
                    });
                match written {
                    Ok(high) => {
                        state.checkpoint = high;
                        self.metrics.set_state_bytes(partition, state.bytes());
                    }
                    Err(err) => {
                        tracing::warn!(stage = %self.stage, partition, cause = %format!("{err:#}"), "state checkpoint not written")
                    }
                }
            }
        });
    }

    /// After the stage drained: each partition still held gets a durable
    /// checkpoint at its changelog's end, so the next start reads nothing
    /// again; the stores are closed.
    pub(crate) fn close(&self) {
        let partitions = std::mem::take(&mut *self.partitions());
        let consumer = self
            .restorer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let own_suffix = format!(".{}.redb", std::process::id());
        for (partition, shared) in partitions {
            let mut state = lock(&shared);
            let path = state.store.path().to_path_buf();
            if path.to_string_lossy().ends_with(&own_suffix) {
                // A copy of this process's own: no later start uses it.
                drop(state);
                drop(shared);
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if state.epoch != self.epochs.epoch(partition) {
                continue;
            }
            let checkpointed = consumer
                .fetch_watermarks(&self.plan.changelog, partition, WATERMARKS_TIMEOUT)
                .map_err(anyhow::Error::from)
                .and_then(|(_, high)| state.store.apply(&[], Some(high), true));
            if let Err(err) = checkpointed {
                tracing::warn!(stage = %self.stage, partition, cause = %err, "state checkpoint not written; the next start reads more of the changelog");
            }
        }
    }

    /// The stored value under `key` in each partition held here (for the
    /// admin API): partition, value and expiry.
    pub fn lookup(&self, key: &[u8]) -> Vec<(i32, Vec<u8>, Option<u64>)> {
        let partitions: Vec<(i32, SharedPartition)> = self
            .partitions()
            .iter()
            .map(|(partition, shared)| (*partition, shared.clone()))
            .collect();
        let now = now_ms();
        partitions
            .into_iter()
            .filter_map(|(partition, shared)| {
                let entry = lock(&shared).store.get(key).ok().flatten()?;
                entry
                    .live_at(now)
                    .then_some((partition, entry.value, entry.expires))
            })
            .collect()
    }

    /// Partitions held here, with their entries' size.
    pub fn held(&self) -> Vec<(i32, u64)> {
        self.partitions()
            .iter()
            .map(|(partition, shared)| (*partition, lock(shared).bytes()))
            .collect()
    }
}

/// The change a changelog record makes.
fn change_of<M: rdkafka::Message>(message: &M) -> Option<Change>
where
    M::Headers: RecordHeaders,
{
    let key = message.key()?.to_vec();
    let Some(value) = message.payload() else {
        return Some((key, None));
    };
    Some((
        key,
        Some(Entry {
            expires: expires_at(message),
            value: value.to_vec(),
        }),
    ))
}

/// A changelog record's expiry (its `stagehost-expires-at` header), if any.
pub fn expires_at<M: rdkafka::Message>(message: &M) -> Option<u64>
where
    M::Headers: RecordHeaders,
{
    raw_headers(message.headers()?)
        .iter()
        .find(|header| header.key == EXPIRES_AT.as_bytes())
        .and_then(|header| std::str::from_utf8(header.value?).ok()?.parse().ok())
}

/// Now, in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
