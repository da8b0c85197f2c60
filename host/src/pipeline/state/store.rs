//! One input partition's state on local disk: a redb database per stage
//! and partition, holding the entries and, in the same transactions, the
//! changelog offset the entries are known to include (the checkpoint).
//!
//! Commits are not synced one by one ([`Durability::None`]): after a crash
//! the database comes back as of some earlier commit, entries and checkpoint
//! together, and the changelog from that checkpoint on brings it up to date
//! (every changelog record sets a key to a value, so applying one again is
//! harmless). Restores and clean closes commit durably.

use anyhow::Context as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Key -> 8 bytes of expiry (big-endian ms since the epoch; 0: never) and
/// the value.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// `checkpoint` -> changelog offset; `bytes` -> the entries' size.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The entries that expire: 8 bytes of expiry (big-endian) and the key, in
/// expiry order, so that the expired ones are found without a full scan.
const EXPIRING: TableDefinition<&[u8], ()> = TableDefinition::new("expiring");

/// The [`EXPIRING`] key of an entry.
fn expiring_key(expires: u64, key: &[u8]) -> Vec<u8> {
    let mut index = Vec::with_capacity(8 + key.len());
    index.extend_from_slice(&expires.to_be_bytes());
    index.extend_from_slice(key);
    index
}

/// The store is open in another process (another host on the same
/// `state_dir`).
#[derive(Debug, thiserror::Error)]
#[error("the state store {} is open in another process", .0.display())]
pub(crate) struct AlreadyOpen(pub(crate) PathBuf);

/// A value and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Ms since the epoch after which the entry is gone; `None`: never.
    pub(crate) expires: Option<u64>,
    pub(crate) value: Vec<u8>,
}

impl Entry {
    /// Whether the entry still holds at `now_ms`.
    pub(crate) fn live_at(&self, now_ms: u64) -> bool {
        self.expires.is_none_or(|at| at > now_ms)
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.value.len());
        bytes.extend_from_slice(&self.expires.unwrap_or(0).to_be_bytes());
        bytes.extend_from_slice(&self.value);
        bytes
    }

    fn decode(bytes: &[u8]) -> Self {
        let (expiry, value) = bytes.split_at(8.min(bytes.len()));
        let mut at = [0; 8];
        at[..expiry.len()].copy_from_slice(expiry);
        let at = u64::from_be_bytes(at);
        Entry {
            expires: (at != 0).then_some(at),
            value: value.to_vec(),
        }
    }
}

/// The size an entry counts for against `limits.state_bytes`.
pub(crate) fn entry_size(key: &[u8], entry: &Entry) -> u64 {
    (key.len() + entry.value.len()) as u64
}

/// One change: a key set to an entry, or removed.
pub(crate) type Change = (Vec<u8>, Option<Entry>);

/// A partition's store.
pub(crate) struct PartitionStore {
    db: Database,
    path: PathBuf,
    /// The entries' size, as stored.
    bytes: u64,
}

impl PartitionStore {
    /// Opens (or creates) the store at `path`, and its checkpoint: `None`
    /// when the store is new or was cleared.
    pub(crate) fn open(path: &Path) -> anyhow::Result<(Self, Option<i64>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
        }
        let db = match Database::builder().create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(AlreadyOpen(path.to_path_buf()).into());
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("opening the state store {}", path.display()));
            }
        };
        let mut store = Self {
            db,
            path: path.to_path_buf(),
            bytes: 0,
        };
        let (checkpoint, bytes) = store.read_meta()?;
        store.bytes = bytes;
        Ok((store, checkpoint))
    }

    fn read_meta(&self) -> anyhow::Result<(Option<i64>, u64)> {
        let read = self.db.begin_read()?;
        let meta = match read.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, 0)),
            Err(err) => return Err(err.into()),
        };
        let checkpoint = meta.get("checkpoint")?.map(|v| v.value() as i64);
        let bytes = meta.get("bytes")?.map_or(0, |v| v.value());
        Ok((checkpoint, bytes))
    }

    /// Where the store lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The entries' size.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry under `key`, expired or not.
    pub(crate) fn get(&self, key: &[u8]) -> anyhow::Result<Option<Entry>> {
        let read = self.db.begin_read()?;
        let entries = match read.open_table(ENTRIES) {
            Ok(entries) => entries,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        Ok(entries.get(key)?.map(|v| Entry::decode(v.value())))
    }

    /// Up to `limit` entries (expired or not) whose keys start with
    /// `prefix`, after `start_after` when given, in key order.
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Entry)>> {
        let read = self.db.begin_read()?;
        let entries = match read.open_table(ENTRIES) {
            Ok(entries) => entries,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        let from = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut found = Vec::new();
        for item in entries.range::<&[u8]>((from, Bound::Unbounded))? {
            let (key, value) = item?;
            if !key.value().starts_with(prefix) || found.len() >= limit {
                break;
            }
            found.push((key.value().to_vec(), Entry::decode(value.value())));
        }
        Ok(found)
    }

    /// Applies `changes` in one transaction, and sets the checkpoint when
    /// given; `durable` syncs the commit to disk.
    pub(crate) fn apply(
        &mut self,
        changes: &[Change],
        checkpoint: Option<i64>,
        durable: bool,
    ) -> anyhow::Result<()> {
        let mut write = self.db.begin_write()?;
        write.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut bytes = self.bytes;
        {
            let mut entries = write.open_table(ENTRIES)?;
            let mut expiring = write.open_table(EXPIRING)?;
            for (key, change) in changes {
                let old = match change {
                    Some(entry) => entries.insert(key.as_slice(), entry.encode().as_slice())?,
                    None => entries.remove(key.as_slice())?,
                }
                .map(|old| Entry::decode(old.value()));
                if let Some(old) = old {
                    bytes = bytes.saturating_sub(entry_size(key, &old));
                    if let Some(at) = old.expires {
                        expiring.remove(expiring_key(at, key).as_slice())?;
                    }
                }
                if let Some(entry) = change {
                    bytes += entry_size(key, entry);
                    if let Some(at) = entry.expires {
                        expiring.insert(expiring_key(at, key).as_slice(), ())?;
                    }
                }
            }
            let mut meta = write.open_table(META)?;
            meta.insert("bytes", bytes)?;
            if let Some(checkpoint) = checkpoint {
                meta.insert("checkpoint", checkpoint.max(0) as u64)?;
            }
        }
        write.commit()?;
        self.bytes = bytes;
        Ok(())
    }

    /// Removes up to `limit` entries that expired at or before `now_ms`
    /// (they are invisible already; this frees their room). The changelog
    /// keeps their last records: a restore applies them again, and the next
    /// purge removes them again. Returns how many went.
    pub(crate) fn purge_expired(&mut self, now_ms: u64, limit: usize) -> anyhow::Result<usize> {
        let mut write = self.db.begin_write()?;
        write.set_durability(Durability::None)?;
        let mut bytes = self.bytes;
        let mut purged = 0;
        {
            let mut expiring = write.open_table(EXPIRING)?;
            let mut entries = write.open_table(ENTRIES)?;
            let end = (now_ms.saturating_add(1)).to_be_bytes();
            let due: Vec<Vec<u8>> = expiring
                .range::<&[u8]>(..end.as_slice())?
                .take(limit)
                .map(|item| item.map(|(index, _)| index.value().to_vec()))
                .collect::<Result<_, _>>()?;
            for index in due {
                expiring.remove(index.as_slice())?;
                let key = &index[8..];
                if let Some(old) = entries.remove(key)? {
                    bytes = bytes.saturating_sub(entry_size(key, &Entry::decode(old.value())));
                }
                purged += 1;
            }
            write.open_table(META)?.insert("bytes", bytes)?;
        }
        write.commit()?;
        self.bytes = bytes;
        Ok(purged)
    }

    /// Removes every entry and the checkpoint (durably): the store then
    /// holds nothing, to be restored from the changelog's beginning.
    pub(crate) fn clear(&mut self) -> anyhow::Result<()> {
        let write = self.db.begin_write()?;
        write.delete_table(ENTRIES)?;
        write.delete_table(META)?;
        write.delete_table(EXPIRING)?;
        write.commit()?;
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty directory of this test's own.
    fn test_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stagehost-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(value: &str) -> Option<Entry> {
        Some(Entry {
            expires: None,
            value: value.as_bytes().to_vec(),
        })
    }

    #[test]
    fn changes_and_checkpoint_survive_a_reopen() {
        let path = test_dir("reopen").join("0.redb");
        let (mut store, checkpoint) = PartitionStore::open(&path).unwrap();
        assert_eq!(checkpoint, None);
        store
            .apply(
                &[(b"a".to_vec(), entry("1")), (b"b".to_vec(), entry("22"))],
                Some(7),
                true,
            )
            .unwrap();
        store.apply(&[(b"a".to_vec(), None)], None, true).unwrap();
        assert_eq!(store.bytes(), 3);
        drop(store);
        let (store, checkpoint) = PartitionStore::open(&path).unwrap();
        assert_eq!(checkpoint, Some(7));
        assert_eq!(store.bytes(), 3);
        assert_eq!(store.get(b"a").unwrap(), None);
        assert_eq!(store.get(b"b").unwrap(), entry("22"));
    }

    #[test]
    fn scan_keeps_to_its_prefix_and_page() {
        let (mut store, _) = PartitionStore::open(&test_dir("scan").join("0.redb")).unwrap();
        let changes: Vec<Change> = ["a1", "a2", "a3", "b1"]
            .iter()
            .map(|key| (key.as_bytes().to_vec(), entry(key)))
            .collect();
        store.apply(&changes, None, false).unwrap();
        let keys = |found: Vec<(Vec<u8>, Entry)>| -> Vec<String> {
            found
                .into_iter()
                .map(|(key, _)| String::from_utf8(key).unwrap())
                .collect()
        };
        assert_eq!(keys(store.scan(b"a", None, 2).unwrap()), ["a1", "a2"]);
        assert_eq!(keys(store.scan(b"a", Some(b"a2"), 10).unwrap()), ["a3"]);
        assert_eq!(keys(store.scan(b"b", None, 10).unwrap()), ["b1"]);
        store.clear().unwrap();
        assert!(store.scan(b"", None, 10).unwrap().is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn expired_entries_are_purged_and_free_their_room() {
        let (mut store, _) = PartitionStore::open(&test_dir("purge").join("0.redb")).unwrap();
        let expiring = |value: &str, at: u64| {
            Some(Entry {
                expires: Some(at),
                value: value.as_bytes().to_vec(),
            })
        };
        store
            .apply(
                &[
                    (b"a".to_vec(), expiring("1", 100)),
                    (b"b".to_vec(), expiring("1", 200)),
                    (b"c".to_vec(), entry("1")),
                ],
                None,
                false,
            )
            .unwrap();
        // `b` set again with a later expiry: its old one no longer counts.
        store
            .apply(&[(b"b".to_vec(), expiring("2", 300))], None, false)
            .unwrap();
        assert_eq!(store.bytes(), 6);
        assert_eq!(store.purge_expired(250, 100).unwrap(), 1);
        assert_eq!(store.get(b"a").unwrap(), None);
        assert!(store.get(b"b").unwrap().is_some());
        assert_eq!(store.bytes(), 4);
        assert_eq!(store.purge_expired(1000, 100).unwrap(), 1);
        assert_eq!(store.get(b"c").unwrap(), entry("1"));
        assert_eq!(store.bytes(), 2);
        assert_eq!(store.purge_expired(u64::MAX, 100).unwrap(), 0);
    }

    #[test]
    fn an_entry_expires_after_its_time() {
        let entry = Entry {
            expires: Some(1000),
            value: b"v".to_vec(),
        };
        assert_eq!(Entry::decode(&entry.encode()), entry);
        assert!(entry.live_at(999));
        assert!(!entry.live_at(1000));
    }
}
