//! A stage's dead-letter topic read and redriven, without a running stage:
//! [`list`] counts its letters by kind, handler, version and reason;
//! [`redrive`] sends the letters a [`RedriveFilter`] takes back to the
//! stage's input, recording each in the compacted ledger topic
//! (`DLQ.redriven`) in the same transaction, so that no letter is sent back
//! twice. `host dlq` and the admin API's `POST /stages/NAME/redrive` both
//! call these.
//!
//! The topic is read from its beginning to its current end (committed
//! records only) by a consumer that joins no group; only the letters the
//! stage wrote (`stagehost-stage`) count, since stages may share a
//! dead-letter topic.

use crate::config::LoadedConfig;
use crate::kafka::headers::raw_headers;
use crate::kafka::topic_read::{self, EndReader};
use crate::pipeline::dead_letter;
use anyhow::Context as _;
use rdkafka::message::{BorrowedMessage, Message as _};
use std::collections::BTreeMap;

/// What one group of dead letters has in common.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LetterKind {
    /// `stagehost-error-kind`.
    pub kind: String,
    /// `stagehost-handler`, when a handler was chosen.
    pub handler: Option<String>,
    /// `stagehost-handler-version`.
    pub version: Option<String>,
    /// `stagehost-error-reason`.
    pub reason: String,
}

/// How many letters a group has, and where its first and last are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterCount {
    /// Letters in the group.
    pub count: u64,
    /// `(partition, offset)` of its first letter in the dead-letter topic.
    pub first: (i32, i64),
    /// `(partition, offset)` of its last letter.
    pub last: (i32, i64),
}

/// The dead letters of one stage, grouped.
#[derive(Debug, Default)]
pub struct Summary {
    /// The dead-letter topic read.
    pub topic: String,
    /// Letters by group.
    pub groups: BTreeMap<LetterKind, LetterCount>,
    /// Records of the topic another stage wrote (not counted).
    pub others: u64,
}

impl Summary {
    /// Letters counted.
    pub fn total(&self) -> u64 {
        self.groups.values().map(|count| count.count).sum()
    }

    /// The groups, most frequent first (then by kind, handler, reason).
    pub fn ranked(&self) -> Vec<(&LetterKind, &LetterCount)> {
        let mut ranked: Vec<_> = self.groups.iter().collect();
        ranked.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        ranked
    }
}

/// Reads the dead-letter topic of stage `name` and groups its letters.
pub fn list(config: &LoadedConfig, name: &str) -> anyhow::Result<Summary> {
    let stage = topic_read::stage(config, name)?;
    let reader = EndReader::connect(
        config,
        &format!("stagehost-dlq-{name}"),
        "read its dead letters with `host tail` while it runs",
    )?;
    let topic = &stage.dead_letter;
    let partitions =
        reader.partitions(topic, &[], "the host creates it when the stage first runs")?;
    let mut summary = Summary {
        topic: topic.clone(),
        ..Summary::default()
    };
    reader.read_to_end(topic, &partitions, |letter| {
        take(&mut summary, name, letter)
    })?;
    Ok(summary)
}

/// A header's value as text (lossy), if the record has it. Keys are read
/// as bytes: any producer may write one that is not UTF-8.
fn header(letter: &BorrowedMessage<'_>, key: &str) -> Option<String> {
    raw_headers(letter.headers()?)
        .into_iter()
        .find(|header| header.key == key.as_bytes())
        .map(|header| String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned())
}

/// Counts one record of the topic into `summary`.
fn take(summary: &mut Summary, stage: &str, letter: &BorrowedMessage<'_>) {
    if header(letter, dead_letter::STAGE).as_deref() != Some(stage) {
        summary.others += 1;
        return;
    }
    let kind = LetterKind {
        kind: header(letter, dead_letter::ERROR_KIND).unwrap_or_else(|| "unknown".into()),
        handler: header(letter, dead_letter::HANDLER),
        version: header(letter, dead_letter::HANDLER_VERSION),
        reason: header(letter, dead_letter::ERROR_REASON).unwrap_or_default(),
    };
    let at = (letter.partition(), letter.offset());
    summary
        .groups
        .entry(kind)
        .and_modify(|count| {
            count.count += 1;
            count.first = count.first.min(at);
            count.last = count.last.max(at);
        })
        .or_insert(LetterCount {
            count: 1,
            first: at,
            last: at,
        });
}

/// A `--since` / `?since=` time: RFC 3339, as ms since the Unix epoch.
pub fn letter_time(text: &str) -> Result<u64, String> {
    let at = humantime::parse_rfc3339_weak(text)
        .map_err(|err| format!("`{text}` is not a time like 2026-12-03T10:00:00Z: {err}"))?;
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64))
}

/// Which letters `host dlq redrive` sends back.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    /// Kinds to take; empty takes every kind.
    pub kinds: Vec<String>,
    /// The handler to take letters of.
    pub handler: Option<String>,
    /// The earliest letter time, ms since the epoch.
    pub since: Option<u64>,
}

impl RedriveFilter {
    fn takes(&self, letter: &BorrowedMessage<'_>) -> bool {
        let kind = header(letter, dead_letter::ERROR_KIND).unwrap_or_default();
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self
                .handler
                .as_ref()
                .is_none_or(|wanted| header(letter, dead_letter::HANDLER).as_ref() == Some(wanted))
            && self.since.is_none_or(|since| {
                letter
                    .timestamp()
                    .to_millis()
                    .is_some_and(|at| at >= 0 && at as u64 >= since)
            })
    }
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// The stage.
    pub stage: String,
    /// Where the letters went.
    pub input: String,
    /// Letters sent back (or that would be, on a dry run).
    pub sent: u64,
    /// Matching letters left alone because an earlier run redrove them.
    pub already: u64,
    /// Whether nothing was sent.
    pub dry_run: bool,
}

impl std::fmt::Display for Redriven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would redrive"
        } else {
            "redrove"
        };
        write!(
            f,
            "{verb} {} dead letter(s) of stage `{}` to {} ({} redriven before, left alone)",
            self.sent, self.stage, self.input, self.already
        )
    }
}

/// The topic where redrives record the letters they sent back: compacted,
/// keyed by `PARTITION/OFFSET` of the letter.
pub fn ledger_topic(dead_letter: &str) -> String {
    format!("{dead_letter}.redriven")
}

/// Letters sent back in one transaction at most.
const REDRIVE_TRANSACTION: usize = 1000;

/// Sends the letters of stage `name` that `filter` takes, and no earlier
/// run sent, back to the stage's input; records each in the ledger topic in
/// the same transaction.
pub fn redrive(
    config: &LoadedConfig,
    name: &str,
    filter: &RedriveFilter,
    dry_run: bool,
) -> anyhow::Result<Redriven> {
    let stage = topic_read::stage(config, name)?;
    let reader = EndReader::connect(
        config,
        &format!("stagehost-dlq-redrive-{name}"),
        "redrive while it runs is not supported",
    )?;
    let dead_letters = &stage.dead_letter;
    let ledger = ledger_topic(dead_letters);
    if !dry_run {
        ensure_ledger(config, &reader.brokers, &ledger)?;
    }
    let mut done = std::collections::HashSet::new();
    // Made above unless on a dry run, where a missing ledger means that no
    // letter was redriven yet; otherwise failing to read it is an error,
    // never a reason to send a letter again.
    let ledger_partitions = match reader.partitions(&ledger, &[], "no letter was redriven yet") {
        Ok(partitions) => partitions,
        Err(_) if dry_run => Vec::new(),
        Err(err) => return Err(err),
    };
    reader.read_to_end(&ledger, &ledger_partitions, |mark| {
        if let Some(key) = mark.key() {
            done.insert(key.to_vec());
        }
    })?;
    let partitions = reader.partitions(
        dead_letters,
        &[],
        "the host creates it when the stage first runs",
    )?;
    let mut chosen = Vec::new();
    let mut already = 0;
    reader.read_to_end(dead_letters, &partitions, |letter| {
        if header(letter, dead_letter::STAGE).as_deref() != Some(name) || !filter.takes(letter) {
            return;
        }
        let mark = format!("{}/{}", letter.partition(), letter.offset()).into_bytes();
        if done.contains(&mark) {
            already += 1;
            return;
        }
        chosen.push((mark, redriven_record(letter)));
    })?;
    let result = Redriven {
        stage: name.to_string(),
        input: stage.input.clone(),
        sent: chosen.len() as u64,
        already,
        dry_run,
    };
    if dry_run || chosen.is_empty() {
        return Ok(result);
    }
    send_back(config, &reader.brokers, stage, &ledger, chosen)?;
    Ok(result)
}

/// A letter made a message again: its key, value and headers, less the
/// host's dead-letter headers, plus where it came from and how often.
struct Resent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn redriven_record(letter: &BorrowedMessage<'_>) -> Resent {
    let mut headers: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut count: u64 = 0;
    for header in letter.headers().map(raw_headers).unwrap_or_default() {
        let key = header.key_text();
        if key == dead_letter::REDRIVE_COUNT {
            count = std::str::from_utf8(header.value.unwrap_or_default())
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            continue;
        }
        if key == dead_letter::REDRIVE_OF || dead_letter::DEAD_LETTER_HEADERS.contains(&&*key) {
            continue;
        }
        headers.push((key.into_owned(), header.value.map(<[u8]>::to_vec)));
    }
    headers.push((
        dead_letter::REDRIVE_OF.to_string(),
        format!(
            "{}/{}/{}",
            letter.topic(),
            letter.partition(),
            letter.offset()
        )
        .into_bytes()
        .into(),
    ));
    headers.push((
        dead_letter::REDRIVE_COUNT.to_string(),
        Some((count + 1).to_string().into_bytes()),
    ));
    Resent {
        key: letter.key().map(<[u8]>::to_vec),
        value: letter.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Creates the ledger topic (compacted, one partition) if it is missing.
fn ensure_ledger(config: &LoadedConfig, brokers: &str, ledger: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let kafka = &config.pipeline.kafka;
    let admin: AdminClient<crate::kafka::HostContext> =
        crate::kafka::producer_config(brokers, &kafka.properties)
            .create_with_context(crate::kafka::HostContext::new(Default::default()))
            .context("creating the Kafka admin client (check kafka.properties)")?;
    let topic = NewTopic::new(
        ledger,
        1,
        TopicReplication::Fixed(kafka.topics.replication_factor.unwrap_or(-1)),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
    // Called off the async context, on the runtime's blocking pool.
    let results = tokio::runtime::Handle::current()
        .block_on(admin.create_topics([&topic], &options))
        .with_context(|| format!("creating the redrive ledger `{ledger}` on {brokers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                anyhow::bail!("creating the redrive ledger `{topic}` on {brokers}: {code}")
            }
        }
    }
    Ok(())
}

/// Produces the chosen letters to the stage's input and their marks to the
/// ledger, in transactions of at most [`REDRIVE_TRANSACTION`] letters.
fn send_back(
    config: &LoadedConfig,
    brokers: &str,
    stage: &crate::config::StagePlan,
    ledger: &str,
    chosen: Vec<(Vec<u8>, Resent)>,
) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
    let timeout = std::time::Duration::from_secs(60);
    // One id per dead-letter topic: a second redrive of it running at the
    // same time fences the first.
    let settings = crate::kafka::transactional_config(
        brokers,
        &config.pipeline.kafka.properties,
        &format!("stagehost-redrive-{}", stage.dead_letter),
    );
    let producer: ThreadedProducer<DefaultProducerContext> = settings
        .create()
        .context("creating the Kafka producer (check kafka.properties and kafka.producer)")?;
    producer
        .init_transactions(timeout)
        .context("initialising the redrive's transactions")?;
    for part in chosen.chunks(REDRIVE_TRANSACTION) {
        producer.begin_transaction()?;
        for (mark, resent) in part {
            let mut headers = OwnedHeaders::new_with_capacity(resent.headers.len());
            for (key, value) in &resent.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&stage.input).headers(headers);
            if let Some(key) = &resent.key {
                record = record.key(key);
            }
            if let Some(value) = &resent.value {
                record = record.payload(value);
            }
            send_waiting(&producer, record)?;
            let at = crate::control::admin::rfc3339(std::time::SystemTime::now());
            let note = serde_json::json!({ "redriven_at": at, "to": stage.input }).to_string();
            send_waiting(
                &producer,
                BaseRecord::<Vec<u8>, String>::to(ledger)
                    .key(mark)
                    .payload(&note),
            )?;
        }
        producer
            .commit_transaction(timeout)
            .context("committing the redrive's transaction")?;
    }
    Ok(())
}

/// Sends `record`, waiting while the producer's queue is full.
fn send_waiting<K, P>(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> anyhow::Result<()>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err((err, _)) => return Err(err).context("sending a redriven letter"),
        }
    }
}
