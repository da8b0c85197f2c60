//! `host state dump CONFIG --stage NAME`: prints a stateful stage's state as
//! its changelog topic holds it, without a running host.
//!
//! The changelog (see [`crate::pipeline::state`]) is read from the
//! beginning to its current end by a `read_committed` consumer that joins no
//! group, with the config's Kafka client properties. The latest record per
//! (partition, key) wins, a null value deletes, and an entry whose
//! `stagehost-expires-at` has passed is left out. Each entry is one JSON
//! line, in partition and key order:
//!
//! ```text
//! {"partition":0,"key":"alice","value":"{\"count\":3,\"total\":12}","expires_at":null}
//! ```
//!
//! The key and value are the stored text, or `{"base64": …}` when they are
//! not UTF-8; `expires_at` is in ms since the Unix epoch.

use crate::config::{LoadedConfig, StagePlan};
use crate::kafka::headers::bytes_json;
use crate::kafka::topic_read::EndReader;
use crate::pipeline::state::expires_at;
use rdkafka::message::{BorrowedMessage, Message as _};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// How `host state dump` prints entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DumpFormat {
    /// One JSON object per entry: partition, key, value, expires_at.
    Json,
}

/// What `host state` does.
#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Prints a stateful stage's live entries, read from its changelog
    /// topic: one JSON line per entry (partition, key, value, expires_at).
    Dump {
        /// The pipeline config.
        config: PathBuf,
        /// The stage whose state to print (it must have `state:`).
        #[arg(long, value_name = "NAME")]
        stage: String,
        /// Only this partition (repeat for several; default: all).
        #[arg(long = "partition", value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        partitions: Vec<i32>,
        /// How entries are printed.
        #[arg(long, value_enum, default_value_t = DumpFormat::Json)]
        format: DumpFormat,
    },
}

/// Runs a `host state` command. Blocks: call it off the async context.
pub fn state(command: &StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Dump {
            config,
            stage,
            partitions,
            format: DumpFormat::Json,
        } => {
            let entries = dump(config, stage, partitions)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for ((partition, key), entry) in &entries {
                match writeln!(out, "{}", entry_line(*partition, key, entry)) {
                    // A closed pipe (`… | head`) is where the reader stopped.
                    Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    other => other?,
                }
            }
            out.flush().or_else(|err| match err.kind() {
                std::io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(err),
            })?;
            Ok(())
        }
    }
}

/// A live entry: its value and when it expires (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored value.
    pub value: Vec<u8>,
    /// When it expires, if it does.
    pub expires_at: Option<u64>,
}

/// The entries by (partition, key).
pub type Entries = BTreeMap<(i32, Vec<u8>), Entry>;

/// The stage `name` of the config, which must have state.
fn stateful_stage<'a>(config: &'a LoadedConfig, name: &str) -> anyhow::Result<&'a StagePlan> {
    let stage = crate::kafka::topic_read::stage(config, name)?;
    anyhow::ensure!(
        stage.state.is_some(),
        "stage `{name}` of {} has no `state:`: it keeps no state to dump",
        config.path.display()
    );
    Ok(stage)
}

/// Reads the changelog of stage `name` in the config at `path` (only
/// `partitions`, when any are given) and returns its live entries.
pub fn dump(path: &Path, name: &str, partitions: &[i32]) -> anyhow::Result<Entries> {
    let config = LoadedConfig::load(path)?;
    let stage = stateful_stage(&config, name)?;
    let changelog = &stage.state.as_ref().expect("a stateful stage").changelog;
    let reader = EndReader::connect(
        &config,
        &format!("stagehost-state-dump-{name}"),
        &format!("ask the running host instead (GET /state/{name}/KEY on its admin port)"),
    )?;
    let selected = reader.partitions(
        changelog,
        partitions,
        "the host creates the changelog when the stage first runs",
    )?;
    let mut entries = Entries::new();
    // What the host restores from: committed records only.
    reader.read_to_end(changelog, &selected, |message| apply(&mut entries, message))?;
    let now = now_ms();
    entries.retain(|_, entry| entry.expires_at.is_none_or(|at| at > now));
    Ok(entries)
}

/// Takes one changelog record into `entries`: the latest per key wins, a
/// null value deletes; a record without a key is not a change.
fn apply(entries: &mut Entries, message: &BorrowedMessage<'_>) {
    let Some(key) = message.key() else {
        return;
    };
    let slot = (message.partition(), key.to_vec());
    let Some(value) = message.payload() else {
        entries.remove(&slot);
        return;
    };
    entries.insert(
        slot,
        Entry {
            value: value.to_vec(),
            expires_at: expires_at(message),
        },
    );
}

/// One entry's line: `{"partition":P,"key":K,"value":V,"expires_at":T|null}`
/// (in that order).
pub fn entry_line(partition: i32, key: &[u8], entry: &Entry) -> String {
    format!(
        r#"{{"partition":{partition},"key":{},"value":{},"expires_at":{}}}"#,
        bytes_json(key),
        bytes_json(&entry.value),
        entry.expires_at.map_or(Value::Null, Value::from)
    )
}

/// Now, in ms since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_json_line_with_text_or_base64() {
        let entry = Entry {
            value: br#"{"total":3}"#.to_vec(),
            expires_at: None,
        };
        let line = entry_line(2, b"alice", &entry);
        assert_eq!(
            line,
            r#"{"partition":2,"key":"alice","value":"{\"total\":3}","expires_at":null}"#
        );
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["value"], r#"{"total":3}"#);
        let binary = Entry {
            value: vec![0xff, 0x00],
            expires_at: Some(1_700_000_000_000),
        };
        assert_eq!(
            entry_line(0, &[0xfe], &binary),
            r#"{"partition":0,"key":{"base64":"/g=="},"value":{"base64":"/wA="},"expires_at":1700000000000}"#
        );
    }

    /// Runs `check` on the config `yaml`, written with an empty `h.wasm`
    /// beside it.
    fn with_config<T>(yaml: &str, check: impl FnOnce(&Path) -> T) -> T {
        let dir = std::env::temp_dir().join(format!("state-dump-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("h.wasm"), b"").unwrap();
        let path = dir.join("config.yml");
        std::fs::write(&path, yaml).unwrap();
        let result = check(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn config(yaml: &str) -> LoadedConfig {
        with_config(yaml, |path| LoadedConfig::load(path).unwrap())
    }

    #[test]
    fn an_embedded_brokers_changelog_is_not_reachable() {
        let refused = with_config(
            "kafka: {brokers: embedded}\nhandlers: {h: {path: h.wasm}}\nstages:\n\
             - {name: totals, input: d, output: e, dead_letter: f, handler: h, state: {}}\n",
            |path| dump(path, "totals", &[]),
        );
        let refused = refused.unwrap_err().to_string();
        assert!(
            refused.contains("embedded broker") && refused.contains("GET /state/totals/KEY"),
            "{refused}"
        );
    }

    #[test]
    fn only_a_stage_with_state_is_dumped() {
        let loaded = config(
            "kafka: {brokers: 127.0.0.1:9092}\nhandlers: {h: {path: h.wasm}}\nstages:\n\
             - {name: plain, input: a, output: b, dead_letter: c, handler: h}\n\
             - {name: totals, input: d, output: e, dead_letter: f, handler: h, state: {}}\n",
        );
        assert_eq!(stateful_stage(&loaded, "totals").unwrap().name, "totals");
        let plain = stateful_stage(&loaded, "plain").unwrap_err().to_string();
        assert!(
            plain.contains("stage `plain`") && plain.contains("no `state:`"),
            "{plain}"
        );
        let missing = stateful_stage(&loaded, "nope").unwrap_err().to_string();
        assert!(
            missing.contains("no stage `nope` (it has: plain, totals)"),
            "{missing}"
        );
    }
}
