//! What a stateful message costs in process, without Kafka: the
//! `running-total` component (one `get` and one `set` per message) with
//! different state lent to its instance, and the local store's get + set on
//! its own.
//!
//! ```sh
//! make plugins
//! cargo bench -p stagehost --bench state_cost
//! ```
//!
//! The pipeline's store (`host/src/pipeline/state/store.rs`) is crate
//! private, so the redb figures come from a copy of its layout here: one
//! redb database, table `entries` (key -> 8 bytes of big-endian expiry and
//! the value), table `meta` (`bytes`), commits with `Durability::None`; a
//! `get` opens a read transaction. Two ways of writing, as the two delivery
//! modes do: one write transaction per message (at-least-once applies a
//! message's changes at once), and one per `BATCH` messages with the
//! uncommitted changes in an overlay that `get` reads first (exactly-once
//! applies a transaction's changes when it commits).
//!
//! Rows:
//! - wasm, no-op state: `get` answers nothing, `set` drops the value (the
//!   handler, the two host calls, and its JSON work; every total stays 1);
//! - wasm, MemoryState: `stagehost::handlers::state::MemoryState` (a BTreeMap);
//! - wasm, redb (per message / batched): the copy of the store as state;
//! - redb alone: get + set of the same keys and values, no wasm.
//!
//! Env: `MESSAGES` (200000), `KEYS` (1000 distinct keys, as in
//! scripts/bench/state-e2e.sh), `BATCH` (1000), `ROUNDS` (5: best of).
//! Figures are printed, never asserted.

use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use stagehost::config::Limits;
use stagehost::handlers::bindings::Message;
use stagehost::handlers::state::{MemoryState, StateAccess};
use stagehost::handlers::{HandlerSpec, Sandbox, run_guest};
use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The store's layout: 8 bytes of expiry (0: never), then the value.
fn encode(value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + value.len());
    bytes.extend_from_slice(&0u64.to_be_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// A copy of the pipeline's partition store, as far as get + set go.
struct RedbState {
    db: Arc<Database>,
    /// Changes not yet committed (batched mode).
    overlay: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Messages per write transaction; 1: at once.
    batch: u64,
    pending: u64,
    bytes: u64,
}

impl RedbState {
    fn new(dir: &Path, batch: u64) -> anyhow::Result<Self> {
        let path = dir.join(format!("state-{batch}.redb"));
        let _ = std::fs::remove_file(&path);
        Ok(Self {
            db: Arc::new(Database::builder().create(&path)?),
            overlay: BTreeMap::new(),
            batch,
            pending: 0,
            bytes: 0,
        })
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(value) = self.overlay.get(key) {
            return Some(value.clone());
        }
        let read = self.db.begin_read().ok()?;
        let entries = read.open_table(ENTRIES).ok()?;
        let found = entries.get(key).ok()??;
        Some(found.value()[8..].to_vec())
    }

    fn apply(&mut self, changes: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<()> {
        let mut write = self.db.begin_write()?;
        write.set_durability(Durability::None)?;
        {
            let mut entries = write.open_table(ENTRIES)?;
            for (key, value) in changes {
                let old = entries.insert(key.as_slice(), encode(value).as_slice())?;
                if let Some(old) = old {
                    self.bytes = self
                        .bytes
                        .saturating_sub((key.len() + old.value().len() - 8) as u64);
                }
                self.bytes += (key.len() + value.len()) as u64;
            }
            let mut meta = write.open_table(META)?;
            meta.insert("bytes", self.bytes)?;
        }
        write.commit()?;
        Ok(())
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if self.batch <= 1 {
            self.apply(&[(key, value)]).expect("redb apply");
        } else {
            self.overlay.insert(key, value);
        }
    }

    /// One message done: commits the overlay every `batch` messages.
    fn message_done(&mut self) {
        self.pending += 1;
        if self.batch > 1 && self.pending >= self.batch {
            let changes: Vec<_> = std::mem::take(&mut self.overlay).into_iter().collect();
            self.apply(&changes).expect("redb apply");
            self.pending = 0;
        }
    }
}

impl StateAccess for RedbState {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        RedbState::get(self, key)
    }
    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, _ttl_ms: Option<u64>) {
        RedbState::set(self, key, value);
        // running-total sets once per message.
        self.message_done();
    }
    fn delete(&mut self, _key: Vec<u8>) {}
    fn scan(&mut self, _: &[u8], _: Option<&[u8]>, _: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// State that holds nothing.
struct NoState;

impl StateAccess for NoState {
    fn get(&mut self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn set(&mut self, _key: Vec<u8>, value: Vec<u8>, _ttl_ms: Option<u64>) {
        std::hint::black_box(value);
    }
    fn delete(&mut self, _key: Vec<u8>) {}
    fn scan(&mut self, _: &[u8], _: Option<&[u8]>, _: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

fn key(n: u64, keys: u64) -> Vec<u8> {
    format!("acct-{}", n % keys).into_bytes()
}

fn message(n: u64, keys: u64) -> Message {
    let key = key(n, keys);
    Message {
        topic: "amounts".into(),
        partition: 0,
        offset: n as i64,
        value: format!(
            r#"{{"account": "{}", "amount": {}}}"#,
            String::from_utf8_lossy(&key),
            n % 100 + 1
        )
        .into_bytes(),
        key: Some(key),
        headers: Vec::new(),
        timestamp: Some(1_700_000_000_000 + n as i64),
    }
}

fn main() -> anyhow::Result<()> {
    let messages = env("MESSAGES", 200_000);
    let keys = env("KEYS", 1000).max(1);
    let batch = env("BATCH", 1000).max(2);
    let rounds = env("ROUNDS", 5).max(1);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("stagehost-state-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/running_total.wasm");
    let bytes = std::fs::read(&path).map_err(|err| {
        anyhow::anyhow!(
            "{}: {err} (build the plugins with `make plugins`)",
            path.display()
        )
    })?;
    let sandbox = Sandbox::new(false)?;
    let component = sandbox.load(
        HandlerSpec {
            name: "running-total".into(),
            source: path.display().to_string(),
            limits: Limits::default(),
            settings: Vec::new(),
        },
        &bytes,
    )?;
    let inputs: Vec<Message> = (0..messages).map(|n| message(n, keys)).collect();

    println!(
        "running-total, {messages} messages over {keys} keys, best of {rounds} rounds; batch {batch}"
    );
    println!("{:<34} {:>12} {:>14}", "path", "ns/message", "messages/s");
    let report = |name: &str, best: Duration| {
        let ns = best.as_nanos() as f64 / messages as f64;
        println!("{name:<34} {ns:>12.0} {:>14.0}", 1e9 / ns);
    };

    // The component with each kind of state.
    type MakeState = Box<dyn Fn() -> anyhow::Result<Box<dyn StateAccess>>>;
    let states: Vec<(&str, MakeState)> = vec![
        (
            "wasm, no-op state",
            Box::new(|| Ok(Box::new(NoState) as Box<dyn StateAccess>)),
        ),
        (
            "wasm, MemoryState",
            Box::new(|| Ok(Box::new(MemoryState::default()) as Box<dyn StateAccess>)),
        ),
        ("wasm, redb (txn per message)", {
            let dir = dir.clone();
            Box::new(move || Ok(Box::new(RedbState::new(&dir, 1)?) as Box<dyn StateAccess>))
        }),
        ("wasm, redb (txn per batch)", {
            let dir = dir.clone();
            Box::new(move || Ok(Box::new(RedbState::new(&dir, batch)?) as Box<dyn StateAccess>))
        }),
    ];
    for (name, make) in &states {
        let mut best = Duration::MAX;
        for _ in 0..rounds {
            let state = make()?;
            let elapsed = run_guest(async {
                let mut instance = component.instantiate().await?;
                instance.lend_state(state);
                let started = Instant::now();
                for input in &inputs {
                    std::hint::black_box(instance.handle(input).await?);
                }
                let elapsed = started.elapsed();
                // The last total, checked once (not for the no-op state).
                let last = instance.handle(&message(messages, keys)).await?;
                std::hint::black_box(last);
                anyhow::Ok(elapsed)
            })?;
            best = best.min(elapsed);
        }
        report(name, best);
    }

    // The store alone: the guest's get + set (the same keys and JSON values).
    for (name, per) in [
        ("redb get+set (txn per message)", 1),
        ("redb get+set (txn per batch)", batch),
    ] {
        let mut best = Duration::MAX;
        for _ in 0..rounds {
            let mut state = RedbState::new(&dir, per)?;
            // Keys and values made before the clock starts.
            let changes: Vec<(Vec<u8>, Vec<u8>)> = (0..messages)
                .map(|n| {
                    let value = format!(r#"{{"count":{},"total":{}}}"#, n / keys + 1, n * 50);
                    (key(n, keys), value.into_bytes())
                })
                .collect();
            let started = Instant::now();
            for (key, value) in changes {
                std::hint::black_box(state.get(&key));
                StateAccess::set(&mut state, key, value, None);
            }
            best = best.min(started.elapsed());
        }
        report(name, best);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
