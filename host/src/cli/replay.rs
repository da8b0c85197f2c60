//! `host replay CONFIG --stage NAME (--from-offset P:O... | --from-time T)
//! [--to-time T] --to-topic TOPIC`: runs a stage's handlers (or, with
//! `--handler FILE.wasm`, that component instead) over past input and writes
//! what they make to a side topic, without a running host and without
//! touching the stage's consumer group.
//!
//! The input is read by a consumer that joins no group and commits nothing
//! (its partitions assigned, from the offsets asked for), committed records
//! only. Each partition is read up to `--to-time` (the first record at or
//! after it) or else to its end when the replay starts, so a replay ends.
//! A message goes through the stage's own step ([`Stage::run_handler`]):
//! its routing, the handlers' limits and retries, the output rules. Every
//! output goes to the side topic with the headers the live path gives it,
//! plus [`REPLAY_OF`] (the input record) and [`REPLAY_TOPIC`] (where the
//! live stage would have written it). Dead letters are counted by kind and
//! the first few printed; none is written to the stage's dead-letter topic.
//!
//! A stateful stage is refused: its handlers would need the state as it was
//! at the first replayed offset, which the changelog does not keep, and an
//! empty state would give other answers than the live stage gave.
//!
//! Every bad request (an unknown stage, a bad `PARTITION:OFFSET`, a missing
//! partition, a range with no messages, a side topic that would feed the
//! stage) is refused before anything is produced.

use crate::config::{Limits, LoadedConfig, Routing, StagePlan, is_internal_topic};
use crate::control::metrics::Metrics;
use crate::handlers::{ErrorKind, HandlerSpec, Registry, Sandbox};
use crate::kafka::headers::raw_headers;
use crate::kafka::topic_read::{self, EndReader};
use crate::kafka::{
    Bootstrap, Clients, HostContext, HostProducer, StageConsumer, StageContext, consumer_config,
    max_record_bytes, producer_config,
};
use crate::pipeline::dead_letter::{DeadLetter, one_line};
use crate::pipeline::delivery::{delivery_error, describe};
use crate::pipeline::outputs::Record;
use crate::pipeline::step::WorkerHandlers;
use crate::pipeline::{Stage, StageParts};
use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// On every replayed output: `TOPIC/PARTITION/OFFSET` of the input record
/// it was made of.
pub const REPLAY_OF: &str = "stagehost-replay-of";
/// On every replayed output: the topic the live stage would have written it
/// to (its output, a branch's topic, or one of its `allowed_topics`).
pub const REPLAY_TOPIC: &str = "stagehost-replay-topic";

/// Dead letters whose reason the summary prints.
const SAMPLE_LETTERS: usize = 5;
/// Deliveries awaited at most at once before the oldest is waited for.
const IN_FLIGHT: usize = 10_000;
/// How long a read waits for a record before it gives up on a partition
/// that has not reached the end of its range.
const STALL: Duration = Duration::from_secs(30);
/// How long Kafka calls (metadata, offsets, the final flush) may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// `host replay`'s arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("start")
        .required(true)
        .args(["from_offsets", "from_time"])
))]
pub struct ReplayArgs {
    /// The pipeline config.
    pub config: PathBuf,
    /// The stage whose handlers run.
    #[arg(long, value_name = "NAME")]
    pub stage: String,
    /// Run this component in place of the handler(s) the stage routes to:
    /// every message goes to it, with the default limits and no settings.
    #[arg(long, value_name = "FILE.wasm")]
    pub handler: Option<PathBuf>,
    /// Where to start: partition P of the stage's input at offset O
    /// (several allowed: `--from-offset 0:5 1:0`). Only the partitions
    /// named are replayed.
    #[arg(long = "from-offset", value_name = "PARTITION:OFFSET", num_args = 1.., value_parser = parse_start)]
    pub from_offsets: Vec<(i32, i64)>,
    /// Where to start: in every partition of the stage's input, its first
    /// record at or after TIME (RFC 3339 such as `2026-12-03T10:00:00Z`, or
    /// a duration ago such as `2h` or `30m ago`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from_time: Option<u64>,
    /// Where to stop: before each partition's first record at or after TIME
    /// (same forms as `--from-time`). Default: each partition's end when the
    /// replay starts.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to_time: Option<u64>,
    /// The side topic the outputs go to (created like the stage's topics
    /// when missing and `kafka.topics.create` is on). Not the stage's input
    /// or dead-letter topic.
    #[arg(long, value_name = "TOPIC")]
    pub to_topic: String,
    /// How the summary is printed.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub format: SummaryFormat,
}

/// How `host replay` prints its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// `PARTITION:OFFSET` of `--from-offset`.
pub fn parse_start(text: &str) -> Result<(i32, i64), String> {
    let bad = |why: &str| format!("`{text}` is not PARTITION:OFFSET (such as 0:5): {why}");
    let (partition, offset) = text.split_once(':').ok_or_else(|| bad("there is no `:`"))?;
    let partition: i32 = partition
        .trim()
        .parse()
        .map_err(|_| bad("the partition is not a number from 0"))?;
    let offset: i64 = offset
        .trim()
        .parse()
        .map_err(|_| bad("the offset is not a number from 0"))?;
    if partition < 0 || offset < 0 {
        return Err(bad("partitions and offsets start at 0"));
    }
    Ok((partition, offset))
}

/// A time of `--from-time` or `--to-time` as ms since the Unix epoch.
fn parse_time(text: &str) -> Result<u64, String> {
    parse_time_at(text, SystemTime::now())
}

/// [`parse_time`] with `now` as the time a duration counts back from.
pub fn parse_time_at(text: &str, now: SystemTime) -> Result<u64, String> {
    let text = text.trim();
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => {
            let ago = text.strip_suffix("ago").unwrap_or(text).trim_end();
            let duration = humantime::parse_duration(ago).map_err(|_| {
                format!(
                    "`{text}` is not a time: expected RFC 3339 (2026-12-03T10:00:00Z) or a duration ago (2h, 30m ago)"
                )
            })?;
            now.checked_sub(duration)
                .ok_or_else(|| format!("`{text}` ago is before the Unix epoch"))?
        }
    };
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before the Unix epoch"))?;
    Ok(since.as_millis() as u64)
}

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// These partitions at these offsets.
    Offsets(BTreeMap<i32, i64>),
    /// Every partition at its first record at or after this time (ms).
    Time(u64),
}

impl Start {
    /// The start the arguments ask for, or why it is not one.
    pub fn of(
        offsets: &[(i32, i64)],
        time: Option<u64>,
        to_time: Option<u64>,
    ) -> anyhow::Result<Self> {
        let start = match (offsets.is_empty(), time) {
            (false, None) => {
                let mut chosen = BTreeMap::new();
                for &(partition, offset) in offsets {
                    if let Some(before) = chosen.insert(partition, offset) {
                        anyhow::bail!(
                            "--from-offset names partition {partition} twice ({partition}:{before} and {partition}:{offset})"
                        );
                    }
                }
                Start::Offsets(chosen)
            }
            (true, Some(time)) => Start::Time(time),
            (true, None) => anyhow::bail!("say where to start: --from-offset or --from-time"),
            (false, Some(_)) => {
                anyhow::bail!("--from-offset and --from-time both say where to start: give one")
            }
        };
        if let (Start::Time(from), Some(to)) = (&start, to_time) {
            anyhow::ensure!(
                to > *from,
                "--to-time ({}) is not after --from-time ({}): the range has no messages",
                show_time(to),
                show_time(*from)
            );
        }
        Ok(start)
    }
}

/// ms since the epoch as RFC 3339.
fn show_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The offsets of one partition a replay reads: `start` up to, not
/// including, `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The input partition.
    pub partition: i32,
    /// The first offset read.
    pub start: i64,
    /// The offset the read stops before.
    pub end: i64,
}

impl Range {
    fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Why a request gives no message to replay, naming each partition's
/// range.
pub fn empty_range_error(topic: &str, ranges: &[Range], to_time: Option<u64>) -> String {
    let each: Vec<String> = ranges
        .iter()
        .map(|range| match to_time {
            None => format!(
                "partition {} has none from offset {} up to its end at offset {}",
                range.partition, range.start, range.end
            ),
            Some(_) => format!(
                "partition {} has none from offset {} up to offset {}",
                range.partition, range.start, range.end
            ),
        })
        .collect();
    let until = match to_time {
        Some(to) => format!(
            " (each partition's first record at or after {}, or its end)",
            show_time(to)
        ),
        None => String::new(),
    };
    format!(
        "the range has no messages to replay in `{topic}`: {}{until}",
        each.join("; ")
    )
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The stage.
    pub stage: String,
    /// Its input topic.
    pub input: String,
    /// Where the outputs went.
    pub to_topic: String,
    /// The handler run in place of the stage's, if any.
    pub handler: Option<String>,
    /// The partitions read, each from its start to its end.
    pub ranges: Vec<Range>,
    /// Input messages run.
    pub messages: u64,
    /// Outputs written to the side topic.
    pub outputs: u64,
    /// Dead letters by kind (none written anywhere).
    pub dead_letters: BTreeMap<ErrorKind, u64>,
    /// The first dead letters: partition, offset, kind, handler, reason.
    pub first_letters: Vec<Letter>,
}

/// One dead letter of a replay, as the summary shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The input partition.
    pub partition: i32,
    /// The input offset.
    pub offset: i64,
    /// What went wrong.
    pub kind: ErrorKind,
    /// The handler, when one was chosen.
    pub handler: Option<String>,
    /// The reason, one line.
    pub reason: String,
}

impl Summary {
    /// Dead letters in all.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    fn count(&mut self, partition: i32, offset: i64, letter: &DeadLetter) {
        *self.dead_letters.entry(letter.kind).or_default() += 1;
        if self.first_letters.len() < SAMPLE_LETTERS {
            self.first_letters.push(Letter {
                partition,
                offset,
                kind: letter.kind,
                handler: letter.handler.as_ref().map(|(name, _)| name.clone()),
                reason: one_line(&letter.reason, 200),
            });
        }
    }

    /// The summary for people.
    pub fn text(&self) -> String {
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .map(|range| {
                format!(
                    "partition {} offsets {}..{}",
                    range.partition, range.start, range.end
                )
            })
            .collect();
        let with = self
            .handler
            .as_ref()
            .map(|handler| format!(" with {handler} in place of its handlers"))
            .unwrap_or_default();
        let mut out = format!(
            "replayed stage `{}`{with} over {} ({}) into {}\n",
            self.stage,
            self.input,
            ranges.join(", "),
            self.to_topic
        );
        out.push_str(&format!("messages:     {}\n", self.messages));
        out.push_str(&format!("outputs:      {}\n", self.outputs));
        out.push_str(&format!(
            "dead letters: {} (not written to the dead-letter topic)\n",
            self.dead_letter_total()
        ));
        let mut kinds: Vec<(&ErrorKind, &u64)> = self.dead_letters.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (kind, count) in kinds {
            out.push_str(&format!("  {:>7}  {}\n", count, kind.as_str()));
        }
        if !self.first_letters.is_empty() {
            out.push_str("first dead letters:\n");
            for letter in &self.first_letters {
                out.push_str(&format!(
                    "  {}/{}/{}  {}  {}: {}\n",
                    self.input,
                    letter.partition,
                    letter.offset,
                    letter.kind.as_str(),
                    letter.handler.as_deref().unwrap_or("-"),
                    letter.reason
                ));
            }
        }
        out
    }

    /// The summary as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let kinds: serde_json::Map<String, serde_json::Value> = self
            .dead_letters
            .iter()
            .map(|(kind, count)| (kind.as_str().to_string(), (*count).into()))
            .collect();
        serde_json::json!({
            "stage": self.stage,
            "input": self.input,
            "to_topic": self.to_topic,
            "handler": self.handler,
            "ranges": self.ranges.iter().map(|range| serde_json::json!({
                "partition": range.partition,
                "start": range.start,
                "end": range.end,
            })).collect::<Vec<_>>(),
            "messages": self.messages,
            "outputs": self.outputs,
            "dead_letters": kinds,
            "first_dead_letters": self.first_letters.iter().map(|letter| serde_json::json!({
                "source": format!("{}/{}/{}", self.input, letter.partition, letter.offset),
                "kind": letter.kind.as_str(),
                "handler": letter.handler,
                "reason": letter.reason,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Runs `host replay` and prints its summary. Blocks: call it off the async
/// context, within a tokio runtime (handlers and deliveries run on it).
pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let summary = replay(args)?;
    let text = match args.format {
        SummaryFormat::Text => summary.text(),
        SummaryFormat::Json => format!("{}\n", summary.json()),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`… | head`) is where the reader stopped.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Replays the range `args` asks for and says what it did.
pub fn replay(args: &ReplayArgs) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Handle::current();
    let config = LoadedConfig::load(&args.config)?;
    let stage = topic_read::stage(&config, &args.stage)?.clone();
    check_stage(&stage, &args.to_topic)?;
    let start = Start::of(&args.from_offsets, args.from_time, args.to_time)?;
    if let Some(wasm) = &args.handler {
        std::fs::metadata(wasm).with_context(|| format!("--handler {}", wasm.display()))?;
    }

    // A group of its own only because librdkafka wants one: the reader is
    // assigned its partitions and commits nothing.
    let group = replay_group(&stage.name);
    let reader = EndReader::connect(
        &config,
        &group,
        "replay needs the brokers the topics are kept on",
    )?;
    let ranges = chosen_ranges(&reader, &stage.input, &start, args.to_time)?;
    let side_exists = topic_exists(&reader, &args.to_topic)?;
    anyhow::ensure!(
        side_exists || config.pipeline.kafka.topics.create,
        "the topic `{}` does not exist on {} and kafka.topics.create is off in {}: create it first",
        args.to_topic,
        reader.brokers,
        config.path.display()
    );

    // Nothing is changed before this point.
    let (registry, handler, _sandbox) = load_handlers(&config, &stage, args.handler.as_deref())?;
    if !side_exists {
        let bootstrap = runtime.block_on(Bootstrap::connect(
            &config.pipeline.kafka.brokers,
            crate::kafka::embedded_listen()?,
        ))?;
        let clients = Clients::new(&bootstrap, &config.pipeline.kafka);
        runtime.block_on(crate::kafka::ensure_topics(&clients, &[&args.to_topic]))?;
    }
    let (runner, producer) = runner(&config, &stage, &reader, &group, registry)?;
    let mut summary = Summary {
        stage: stage.name.clone(),
        input: stage.input.clone(),
        to_topic: args.to_topic.clone(),
        handler,
        ranges,
        ..Summary::default()
    };
    run_ranges(&runtime, &reader, &runner, &mut summary)?;
    producer
        .flush(KAFKA_TIMEOUT)
        .with_context(|| format!("flushing the outputs to `{}`", args.to_topic))?;
    // Only control records (transaction markers) in the range.
    anyhow::ensure!(
        summary.messages > 0,
        "{}",
        empty_range_error(&stage.input, &summary.ranges, args.to_time)
    );
    Ok(summary)
}

/// The ranges of the input's partitions that `start` and `to_time` choose,
/// the empty ones left out; an error when all are empty.
fn chosen_ranges(
    reader: &EndReader,
    input: &str,
    start: &Start,
    to_time: Option<u64>,
) -> anyhow::Result<Vec<Range>> {
    let wanted: Vec<i32> = match start {
        Start::Offsets(offsets) => offsets.keys().copied().collect(),
        Start::Time(_) => Vec::new(),
    };
    let partitions = reader.partitions(input, &wanted, "nothing was ever sent to the stage")?;
    let ranges = ranges(reader, input, &partitions, start, to_time)?;
    anyhow::ensure!(
        !ranges.iter().all(Range::is_empty),
        "{}",
        empty_range_error(input, &ranges, to_time)
    );
    Ok(ranges
        .into_iter()
        .filter(|range| !range.is_empty())
        .collect())
}

/// The stage's own message step, on `registry`, producing with an
/// idempotent producer of its own (also returned, to be flushed).
fn runner(
    config: &LoadedConfig,
    stage: &StagePlan,
    reader: &EndReader,
    group: &str,
    registry: Registry,
) -> anyhow::Result<(Arc<Stage>, HostProducer)> {
    let trouble = reader.consumer.context().trouble().clone();
    let properties = &config.pipeline.kafka.properties;
    let producer: HostProducer = producer_config(&reader.brokers, properties)
        .create_with_context(HostContext::new(trouble.clone()))
        .context("creating the Kafka producer (check kafka.properties and kafka.producer)")?;
    // `Stage` owns a consumer; this one is never subscribed nor assigned,
    // in the replay's own group, and commits nothing.
    let idle: StageConsumer = consumer_config(&reader.brokers, properties, group, group, true)
        .create_with_context(StageContext::new(
            &stage.name,
            &stage.input,
            Box::new(|_: &[u8]| {}),
            trouble,
            Arc::new(tokio::sync::watch::channel(false).0),
        ))
        .context("creating the Kafka consumer (check kafka.properties and kafka.consumer)")?;
    let runner = Stage::new(StageParts {
        plan: stage.clone(),
        registry: Arc::new(arc_swap::ArcSwap::from_pointee(registry)),
        producer: producer.clone(),
        consumer: idle,
        metrics: Metrics::new().stage(&stage.name),
        drain_timeout: KAFKA_TIMEOUT,
        transactions: None,
        max_record_bytes: max_record_bytes(properties),
        state: None,
    });
    Ok((runner, producer))
}

/// Reads `summary.ranges` of the input and runs each message through
/// `runner`, its outputs to `summary.to_topic`, counting into `summary`;
/// returns once every output is acknowledged.
fn run_ranges(
    runtime: &tokio::runtime::Handle,
    reader: &EndReader,
    runner: &Stage,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let (input, to_topic) = (summary.input.clone(), summary.to_topic.clone());
    let total: u64 = summary
        .ranges
        .iter()
        .map(|range| (range.end - range.start) as u64)
        .sum();
    let mut progress = Progress::new(std::io::stderr().is_terminal(), total);
    let mut deliveries = Deliveries::default();
    let mut handlers = WorkerHandlers::default();
    let consumer = &reader.consumer;
    let mut assignment = TopicPartitionList::new();
    for range in &summary.ranges {
        assignment.add_partition_offset(&input, range.partition, Offset::Offset(range.start))?;
    }
    consumer.assign(&assignment)?;
    let mut open: BTreeMap<i32, i64> = summary
        .ranges
        .iter()
        .map(|range| (range.partition, range.end))
        .collect();
    let mut progressed = Instant::now();
    while !open.is_empty() {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            if progressed.elapsed() >= STALL {
                let waiting: Vec<String> = open.keys().map(i32::to_string).collect();
                anyhow::bail!(
                    "reading `{input}`: no record for {} s before partition(s) {} reached the end of the range",
                    STALL.as_secs(),
                    waiting.join(", ")
                );
            }
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            // With read_committed, the end of what is committed.
            Err(KafkaError::PartitionEOF(partition)) => {
                finish_partition(consumer, &input, partition, &mut open);
                continue;
            }
            Err(err) => {
                crate::kafka::topic_read::read_error(consumer.context().trouble(), &input, err)?;
                continue;
            }
        };
        progressed = Instant::now();
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = open.get(&partition) else {
            continue;
        };
        if offset >= end {
            finish_partition(consumer, &input, partition, &mut open);
            continue;
        }
        if offset + 1 >= end {
            finish_partition(consumer, &input, partition, &mut open);
        }
        let message = message.detach();
        summary.messages += 1;
        match runtime.block_on(runner.run_handler(&message, &mut handlers))? {
            Ok(records) => {
                for record in records {
                    let record = side_record(record, &to_topic, &input, partition, offset);
                    let sent = runtime
                        .block_on(runner.enqueue_owned(record))
                        .map_err(|err| {
                            anyhow::anyhow!(
                                "producing to `{to_topic}`: {} ({} output(s) written before)",
                                describe(&err),
                                deliveries.acknowledged
                            )
                        })?;
                    deliveries.push(runtime, sent, &to_topic)?;
                    summary.outputs += 1;
                }
            }
            Err(letter) => summary.count(partition, offset, &letter),
        }
        progress.draw(summary);
    }
    deliveries.finish(runtime, &to_topic)?;
    progress.done(summary);
    Ok(())
}

/// Refuses a stage or side topic a replay cannot take.
fn check_stage(stage: &StagePlan, to_topic: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        stage.state.is_none(),
        "stage `{}` keeps state (`state:`): a replay would need its state as it was at the \
         first replayed offset, which the changelog does not keep, and an empty state would \
         give other answers than the stage gave; replay is for stateless stages",
        stage.name
    );
    anyhow::ensure!(
        to_topic != stage.input,
        "--to-topic `{to_topic}` is the input of stage `{}`: the replay would feed itself",
        stage.name
    );
    anyhow::ensure!(
        to_topic != stage.dead_letter,
        "--to-topic `{to_topic}` is the dead-letter topic of stage `{}`: replayed outputs \
         would read as dead letters there",
        stage.name
    );
    anyhow::ensure!(
        !is_internal_topic(to_topic),
        "--to-topic `{to_topic}` is an internal Kafka topic (its name starts with `__`)"
    );
    Ok(())
}

/// A consumer group name no other replay uses.
fn replay_group(stage: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("stagehost-replay-{stage}-{:x}{nanos:x}", std::process::id())
}

/// Each partition's range: from the start asked for to `to_time` or its
/// end now. An offset older than the partition's first is an error: those
/// records are gone.
fn ranges(
    reader: &EndReader,
    topic: &str,
    partitions: &[i32],
    start: &Start,
    to_time: Option<u64>,
) -> anyhow::Result<Vec<Range>> {
    let consumer = &reader.consumer;
    let at_times = |time: u64| -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let mut asked = TopicPartitionList::new();
        for &partition in partitions {
            asked.add_partition_offset(topic, partition, Offset::Offset(time as i64))?;
        }
        let found = consumer
            .offsets_for_times(asked, KAFKA_TIMEOUT)
            .with_context(|| format!("finding the offsets of `{topic}` at {}", show_time(time)))?;
        Ok(partitions
            .iter()
            .map(|&partition| {
                let offset =
                    found.find_partition(topic, partition).and_then(|element| {
                        match element.offset() {
                            Offset::Offset(offset) => Some(offset),
                            _ => None,
                        }
                    });
                (partition, offset)
            })
            .collect())
    };
    let from_times = match start {
        Start::Time(time) => Some(at_times(*time)?),
        Start::Offsets(_) => None,
    };
    let to_times = to_time.map(at_times).transpose()?;
    let mut ranges = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
            .with_context(|| format!("reading the offsets of `{topic}` partition {partition}"))?;
        let start = match start {
            Start::Offsets(offsets) => {
                let offset = offsets[&partition];
                anyhow::ensure!(
                    offset >= low,
                    "--from-offset {partition}:{offset}: partition {partition} of `{topic}` starts at offset {low} now (older records were deleted)"
                );
                offset
            }
            // No record at or after the time: nothing to read there.
            Start::Time(_) => from_times
                .as_ref()
                .and_then(|found| found[&partition])
                .unwrap_or(high),
        };
        let end = match &to_times {
            Some(found) => found[&partition].unwrap_or(high).min(high),
            None => high,
        };
        ranges.push(Range {
            partition,
            start,
            end,
        });
    }
    Ok(ranges)
}

/// Whether `topic` exists.
fn topic_exists(reader: &EndReader, topic: &str) -> anyhow::Result<bool> {
    let metadata = reader
        .consumer
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .with_context(|| format!("reading the metadata of `{topic}` from {}", reader.brokers))?;
    Ok(metadata
        .topics()
        .iter()
        .any(|found| found.name() == topic && found.error().is_none()))
}

/// Stops reading a partition whose range is done.
fn finish_partition(
    consumer: &rdkafka::consumer::BaseConsumer<HostContext>,
    topic: &str,
    partition: i32,
    open: &mut BTreeMap<i32, i64>,
) {
    if open.remove(&partition).is_none() {
        return;
    }
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    // Only saves fetching what is not read: a failure changes nothing.
    let _ = consumer.pause(&list);
}

/// The registry the replay runs: the stage's handlers from the config, or
/// only `wasm` with every message routed to it (and its name). The sandbox
/// must live as long as the registry is used: it ticks the time limits.
fn load_handlers(
    config: &LoadedConfig,
    stage: &StagePlan,
    wasm: Option<&Path>,
) -> anyhow::Result<(Registry, Option<String>, Arc<Sandbox>)> {
    let mut config = config.clone();
    let Some(wasm) = wasm else {
        // Only the handlers this stage routes to are compiled.
        let used: BTreeSet<&str> = stage.routing.handlers().collect();
        config
            .pipeline
            .handlers
            .retain(|name, _| used.contains(name.as_str()));
        let sandbox = Sandbox::for_pipeline(&config.pipeline)?;
        let registry = Registry::load(&config, &sandbox, None)?;
        return Ok((registry, None, sandbox));
    };
    let name = wasm
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .filter(|stem| !stem.is_empty())
        .unwrap_or_else(|| "handler".into());
    for plan in &mut config.pipeline.stages {
        if plan.name == stage.name {
            plan.routing = Routing::Single(name.clone());
        }
    }
    config.pipeline.handlers.clear();
    let limits = Limits::default();
    let sandbox = Sandbox::new(limits.fuel.is_some())?;
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let component = sandbox
        .load(
            HandlerSpec {
                name: name.clone(),
                source: wasm.display().to_string(),
                limits,
                settings: Vec::new(),
            },
            &bytes,
        )
        .with_context(|| format!("--handler {}", wasm.display()))?;
    let registry = Registry::load(&config, &sandbox, None)?.with_handler(component);
    Ok((registry, Some(name), sandbox))
}

/// An output made a side-topic record: to `to_topic`, its headers kept
/// (any replay headers it inherited replaced) plus [`REPLAY_OF`] and
/// [`REPLAY_TOPIC`].
fn side_record(record: Record, to_topic: &str, input: &str, partition: i32, offset: i64) -> Record {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.count() + 2);
    for header in raw_headers(&record.headers) {
        let key = header.key_text();
        if key == REPLAY_OF || key == REPLAY_TOPIC {
            continue;
        }
        headers = headers.insert(Header {
            key: &key,
            value: header.value,
        });
    }
    let of = format!("{input}/{partition}/{offset}");
    headers = headers
        .insert(Header {
            key: REPLAY_OF,
            value: Some(&of),
        })
        .insert(Header {
            key: REPLAY_TOPIC,
            value: Some(&record.topic),
        });
    Record {
        topic: to_topic.to_string(),
        partition: None,
        key: record.key,
        value: record.value,
        headers,
    }
}

/// The outputs handed to the producer and not yet acknowledged.
#[derive(Default)]
struct Deliveries {
    waiting: VecDeque<DeliveryFuture>,
    acknowledged: u64,
}

impl Deliveries {
    /// Adds one; past [`IN_FLIGHT`], waits for the oldest.
    fn push(
        &mut self,
        runtime: &tokio::runtime::Handle,
        sent: DeliveryFuture,
        topic: &str,
    ) -> anyhow::Result<()> {
        self.waiting.push_back(sent);
        while self.waiting.len() > IN_FLIGHT {
            self.wait_oldest(runtime, topic)?;
        }
        Ok(())
    }

    /// Waits for every one.
    fn finish(&mut self, runtime: &tokio::runtime::Handle, topic: &str) -> anyhow::Result<()> {
        while !self.waiting.is_empty() {
            self.wait_oldest(runtime, topic)?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self, runtime: &tokio::runtime::Handle, topic: &str) -> anyhow::Result<()> {
        let Some(oldest) = self.waiting.pop_front() else {
            return Ok(());
        };
        if let Some(err) = delivery_error(runtime.block_on(oldest)) {
            anyhow::bail!(
                "the brokers refused an output for `{topic}`: {} ({} output(s) written before)",
                describe(&err),
                self.acknowledged
            );
        }
        self.acknowledged += 1;
        Ok(())
    }
}

/// A progress bar on stderr, when it is a terminal: one line redrawn in
/// place.
struct Progress {
    shown: bool,
    total: u64,
    drawn: Option<Instant>,
}

/// How often the bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    fn new(shown: bool, total: u64) -> Self {
        Self {
            shown,
            total,
            drawn: None,
        }
    }

    fn draw(&mut self, summary: &Summary) {
        if !self.shown || self.drawn.is_some_and(|at| at.elapsed() < REDRAW) {
            return;
        }
        self.drawn = Some(Instant::now());
        let line = progress_line(
            summary.messages,
            self.total,
            summary.outputs,
            summary.dead_letter_total(),
        );
        eprint!("\r{line}\x1b[K");
    }

    fn done(&mut self, summary: &Summary) {
        if self.shown {
            // The range's end may hold transaction markers: done is done.
            let done = summary.messages;
            let line = progress_line(done, done, summary.outputs, summary.dead_letter_total());
            eprintln!("\r{line}\x1b[K");
        }
    }
}

/// The bar's line: `[=====>    ] done/total messages, outputs, dead letters`.
pub fn progress_line(done: u64, total: u64, outputs: u64, letters: u64) -> String {
    const WIDTH: u64 = 30;
    let total = total.max(done).max(1);
    let filled = (done * WIDTH / total) as usize;
    let mut bar = "=".repeat(filled);
    if filled < WIDTH as usize {
        bar.push('>');
    }
    format!(
        "[{bar:<width$}] {done}/{total} messages, {outputs} outputs, {letters} dead letters",
        width = WIDTH as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_partition_colon_offset() {
        assert_eq!(parse_start("0:5"), Ok((0, 5)));
        assert_eq!(parse_start("12:0"), Ok((12, 0)));
        for bad in ["0", "0:", ":5", "a:1", "0:x", "-1:0", "0:-2", "0:1:2", ""] {
            let err = parse_start(bad).unwrap_err();
            assert!(err.contains("PARTITION:OFFSET"), "{bad}: {err}");
        }
        assert!(parse_start("0-5").unwrap_err().contains("no `:`"));
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse_time_at("2026-12-03T10:00:00Z", now),
            Ok(1_796_292_000_000)
        );
        assert_eq!(
            parse_time_at("2026-12-03T10:00:00.250Z", now),
            Ok(1_796_292_000_250)
        );
        let hours_ago = 1_800_000_000_000 - 2 * 3_600_000;
        assert_eq!(parse_time_at("2h", now), Ok(hours_ago));
        assert_eq!(parse_time_at("2h ago", now), Ok(hours_ago));
        assert_eq!(
            parse_time_at("1h 30m", now),
            Ok(1_800_000_000_000 - 5_400_000)
        );
        assert!(
            parse_time_at("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(parse_time_at("100000000h", now).is_err());
    }

    #[test]
    fn a_start_is_offsets_or_a_time_and_each_partition_once() {
        assert_eq!(
            Start::of(&[(1, 0), (0, 5)], None, None).unwrap(),
            Start::Offsets([(0, 5), (1, 0)].into_iter().collect())
        );
        assert_eq!(Start::of(&[], Some(7), None).unwrap(), Start::Time(7));
        let twice = Start::of(&[(0, 1), (0, 2)], None, None).unwrap_err();
        assert!(twice.to_string().contains("partition 0 twice"), "{twice}");
        assert!(Start::of(&[], None, None).is_err());
        assert!(Start::of(&[(0, 1)], Some(7), None).is_err());
        let backwards = Start::of(&[], Some(7_000), Some(7_000)).unwrap_err();
        assert!(backwards.to_string().contains("not after"), "{backwards}");
        assert!(Start::of(&[(0, 1)], None, Some(1)).is_ok());
    }

    #[test]
    fn an_empty_range_names_each_partition() {
        let ranges = [
            Range {
                partition: 0,
                start: 5,
                end: 5,
            },
            Range {
                partition: 2,
                start: 9,
                end: 3,
            },
        ];
        assert_eq!(
            empty_range_error("calc-requests", &ranges, None),
            "the range has no messages to replay in `calc-requests`: partition 0 has none from \
             offset 5 up to its end at offset 5; partition 2 has none from offset 9 up to its end \
             at offset 3"
        );
        assert!(
            empty_range_error("t", &ranges[..1], Some(0))
                .ends_with("up to offset 5 (each partition's first record at or after 1970-01-01T00:00:00.000Z, or its end)")
        );
    }

    #[test]
    fn side_records_say_what_they_replay_and_where_they_would_have_gone() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace-id",
                value: Some("t-1"),
            })
            .insert(Header {
                key: REPLAY_OF,
                value: Some("older/0/0"),
            })
            .insert(Header {
                key: "stagehost-handler",
                value: Some("add"),
            });
        let record = Record {
            topic: "calc-results".into(),
            partition: None,
            key: Some(b"k".to_vec()),
            value: Some(b"{}".to_vec()),
            headers,
        };
        let side = side_record(record, "side", "calc-requests", 1, 42);
        assert_eq!(side.topic, "side");
        assert_eq!(side.key.as_deref(), Some(&b"k"[..]));
        let pairs: Vec<(String, String)> = raw_headers(&side.headers)
            .iter()
            .map(|header| {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default());
                (header.key_text().into_owned(), value.into_owned())
            })
            .collect();
        let expected = [
            ("trace-id", "t-1"),
            ("stagehost-handler", "add"),
            (REPLAY_OF, "calc-requests/1/42"),
            (REPLAY_TOPIC, "calc-results"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn the_summary_counts_dead_letters_by_kind() {
        let mut summary = Summary {
            stage: "calculator".into(),
            input: "calc-requests".into(),
            to_topic: "side".into(),
            ranges: vec![Range {
                partition: 0,
                start: 2,
                end: 5,
            }],
            messages: 3,
            outputs: 1,
            ..Summary::default()
        };
        let letter = |kind, reason: &str| DeadLetter {
            kind,
            reason: reason.into(),
            handler: Some(("add".into(), "5d4c3b2a1f0e".into())),
        };
        summary.count(
            0,
            3,
            &letter(ErrorKind::InvalidInput, "operator_1:\nnot a number"),
        );
        summary.count(0, 4, &letter(ErrorKind::Trap, "boom"));
        summary.count(0, 5, &letter(ErrorKind::Trap, "boom"));
        assert_eq!(summary.dead_letter_total(), 3);
        let text = summary.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "replayed stage `calculator` over calc-requests (partition 0 offsets 2..5) into side"
        );
        assert_eq!(lines[1], "messages:     3");
        assert_eq!(lines[2], "outputs:      1");
        assert!(lines[3].starts_with("dead letters: 3"), "{text}");
        // Most frequent first.
        assert_eq!(lines[4], "        2  trap");
        assert_eq!(lines[5], "        1  invalid-input");
        assert_eq!(
            lines[7],
            "  calc-requests/0/3  invalid-input  add: operator_1: not a number"
        );
        let json = summary.json();
        assert_eq!(json["dead_letters"]["invalid-input"], 1);
        assert_eq!(json["ranges"][0]["end"], 5);
        assert_eq!(json["first_dead_letters"][1]["source"], "calc-requests/0/4");
        for offset in 0..10 {
            summary.count(0, offset, &letter(ErrorKind::Trap, "boom"));
        }
        assert_eq!(summary.first_letters.len(), SAMPLE_LETTERS);
        assert_eq!(summary.dead_letters[&ErrorKind::Trap], 12);
    }

    #[test]
    fn the_progress_line_fills_with_the_messages_done() {
        assert_eq!(
            progress_line(0, 10, 0, 0),
            format!(
                "[>{}] 0/10 messages, 0 outputs, 0 dead letters",
                " ".repeat(29)
            )
        );
        assert_eq!(
            progress_line(5, 10, 4, 1),
            format!(
                "[{}>{}] 5/10 messages, 4 outputs, 1 dead letters",
                "=".repeat(15),
                " ".repeat(14)
            )
        );
        assert!(progress_line(12, 10, 0, 0).starts_with(&format!("[{}]", "=".repeat(30))));
    }
}
