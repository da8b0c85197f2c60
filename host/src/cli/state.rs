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

use crate::config::{Brokers, LoadedConfig, StagePlan};
use crate::kafka::headers::bytes_json;
use crate::kafka::{BrokerTrouble, HostContext, consumer_config};
use crate::pipeline::state::expires_at;
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the dump waits for a record before it gives up on a partition
/// that has not reached its end.
const STALL: Duration = Duration::from_secs(30);

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
    let stages = &config.pipeline.stages;
    let stage = stages
        .iter()
        .find(|stage| stage.name == name)
        .with_context(|| {
            let names: Vec<&str> = stages.iter().map(|stage| stage.name.as_str()).collect();
            format!(
                "{} has no stage `{name}` (it has: {})",
                config.path.display(),
                names.join(", ")
            )
        })?;
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
    let kafka = &config.pipeline.kafka;
    let bootstrap = match &kafka.brokers {
        Brokers::Servers(servers) => servers.as_str(),
        Brokers::Embedded => anyhow::bail!(
            "{} uses the embedded broker, whose changelog lives only inside `host run`: \
             ask the running host instead (GET /state/{name}/KEY on its admin port)",
            config.path.display()
        ),
    };
    let trouble = Arc::new(BrokerTrouble::default());
    let client_id = format!("stagehost-state-dump-{name}");
    // A group id only because librdkafka wants one: the consumer is
    // assigned its partitions and joins no group, commits nothing.
    let mut settings = consumer_config(bootstrap, &kafka.properties, &client_id, &client_id, true);
    settings
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // What the host restores from: no aborted transactions.
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer<HostContext> = settings
        .create_with_context(HostContext::new(trouble.clone()))
        .context("creating the Kafka consumer (check kafka.properties and kafka.consumer)")?;
    super::tail::wait_for_brokers(consumer.client(), &trouble, bootstrap)?;
    let selected = changelog_partitions(&consumer, bootstrap, changelog, partitions)?;
    read_changelog(&consumer, changelog, &selected, now_ms())
}

/// The partitions of `topic` to read: `wanted`, or all of them. Fails when
/// the topic or a wanted partition does not exist.
fn changelog_partitions(
    consumer: &BaseConsumer<HostContext>,
    brokers: &str,
    topic: &str,
    wanted: &[i32],
) -> anyhow::Result<Vec<i32>> {
    let started = Instant::now();
    let all: BTreeSet<i32> = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading the metadata of `{topic}` from {brokers}"))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match (
            found,
            found.and_then(|t| t.error()).map(RDKafkaErrorCode::from),
        ) {
            (None, _) | (_, Some(RDKafkaErrorCode::UnknownTopicOrPartition)) => anyhow::bail!(
                "the changelog topic `{topic}` does not exist on {brokers} \
                 (the host creates it when the stage first runs)"
            ),
            // A topic just created may have no leaders for a moment.
            (Some(_), Some(RDKafkaErrorCode::LeaderNotAvailable))
                if started.elapsed() < crate::kafka::CONNECT_WAIT =>
            {
                continue;
            }
            (Some(_), Some(code)) => {
                anyhow::bail!("reading the metadata of `{topic}` from {brokers}: {code}")
            }
            (Some(found), None) => break found.partitions().iter().map(|p| p.id()).collect(),
        }
    };
    for partition in wanted {
        anyhow::ensure!(
            all.contains(partition),
            "the changelog topic `{topic}` on {brokers} has no partition {partition} (it has {})",
            match all.len() {
                1 => "partition 0".to_string(),
                n => format!("partitions 0 to {}", n - 1),
            }
        );
    }
    Ok(match wanted.is_empty() {
        true => all.into_iter().collect(),
        false => wanted
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    })
}

/// Reads `partitions` of the changelog `topic` from their beginning to
/// their end (the end of what is committed) and keeps the entries live at
/// `now_ms`.
fn read_changelog(
    consumer: &BaseConsumer<HostContext>,
    topic: &str,
    partitions: &[i32],
    now_ms: u64,
) -> anyhow::Result<Entries> {
    let mut assignment = TopicPartitionList::new();
    let mut reading = BTreeSet::new();
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("reading the offsets of `{topic}` partition {partition}"))?;
        if low < high {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            reading.insert(partition);
        }
    }
    let mut entries = Entries::new();
    if reading.is_empty() {
        return Ok(entries);
    }
    consumer.assign(&assignment)?;
    let mut progressed = Instant::now();
    while !reading.is_empty() {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            if progressed.elapsed() >= STALL {
                let waiting: Vec<String> = reading.iter().map(i32::to_string).collect();
                anyhow::bail!(
                    "reading `{topic}`: no record for {} s before partition(s) {} reached their end",
                    STALL.as_secs(),
                    waiting.join(", ")
                );
            }
            continue;
        };
        match polled {
            Ok(message) => {
                progressed = Instant::now();
                apply(&mut entries, &message);
            }
            // With read_committed, the end of what is committed.
            Err(KafkaError::PartitionEOF(partition)) => {
                reading.remove(&partition);
            }
            Err(err) => super::tail::read_error(consumer.context().trouble(), topic, err)?,
        }
    }
    entries.retain(|_, entry| entry.expires_at.is_none_or(|at| at > now_ms));
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
