//! `host tail TOPIC`: prints a topic's records exactly as they were
//! produced: by default one JSON line per record, the key, header values and
//! value as the produced text (or base64 when they are not UTF-8); or just
//! the values, or a kcat-like template.
//!
//! With `--count N` (and no `--offset`) it prints the newest N records of the
//! selected partitions, in timestamp order, and exits; otherwise it follows
//! the partitions and prints records as they arrive.

use crate::kafka::headers::{base64, raw_headers};
use crate::kafka::topic_read::{read_error, wait_for_brokers};
use crate::kafka::{BrokerTrouble, CONNECT_WAIT, HostContext};
use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `--count` waits for a record before it gives up on a partition
/// that has not reached its end (without `--idle-timeout`).
const SNAPSHOT_STALL: Duration = Duration::from_secs(30);

/// Where reading starts in each partition (`--offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest record still kept.
    Beginning,
    /// Only records produced from now on.
    End,
    /// This offset (clamped to the partition's watermarks).
    At(i64),
    /// This many records before the end.
    FromEnd(i64),
}

/// Parses `--offset`: `beginning`, `end`, `N` or `-N`.
pub fn parse_offset(text: &str) -> Result<StartOffset, String> {
    let number = |digits: &str| {
        digits
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && !digits.starts_with('+'))
    };
    match text {
        "beginning" | "earliest" | "first" => Ok(StartOffset::Beginning),
        "end" | "latest" | "last" => Ok(StartOffset::End),
        _ => match text.strip_prefix('-') {
            Some(digits) => number(digits).map(StartOffset::FromEnd),
            None => number(text).map(StartOffset::At),
        }
        .ok_or_else(|| {
            format!(
                "`{text}` is not an offset: use beginning, end, N (absolute) or -N (from the end)"
            )
        }),
    }
}

/// How each record is printed (`--format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line: topic, partition, offset, timestamp, key,
    /// headers, value.
    Json,
    /// The value's bytes and a newline.
    Value,
    /// A kcat-like template.
    Template(Vec<Piece>),
}

/// A part of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes printed as they are.
    Text(Vec<u8>),
    /// `%t`
    Topic,
    /// `%p`
    Partition,
    /// `%o`
    Offset,
    /// `%k`: the key's bytes (nothing for a null key).
    Key,
    /// `%s`: the value's bytes (nothing for a null value).
    Value,
    /// `%T`: the timestamp in milliseconds since the epoch, -1 when none.
    Timestamp,
    /// `%h`: the headers as `k=v,k=v` (a null value prints the key alone).
    Headers,
}

/// Parses `--format`: `json`, `value`, or a template with `%t` `%p` `%o`
/// `%k` `%s` `%T` `%h` `%%` and the escapes `\n` `\t` `\r` `\\`.
pub fn parse_format(text: &str) -> Result<Format, String> {
    match text {
        "json" => return Ok(Format::Json),
        "value" => return Ok(Format::Value),
        _ => {}
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars();
    let flush = |literal: &mut String, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(literal).into_bytes()));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('k') => Piece::Key,
                    Some('s') => Piece::Value,
                    Some('T') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    other => {
                        let found = other.map_or_else(|| "%".to_string(), |c| format!("%{c}"));
                        return Err(format!(
                            "`{found}` in the format `{text}` is not one of %t %p %o %k %s %T %h %% \
                             (or use json or value)"
                        ));
                    }
                };
                flush(&mut literal, &mut pieces);
                pieces.push(piece);
            }
            '\\' => match chars.next() {
                Some('n') => literal.push('\n'),
                Some('t') => literal.push('\t'),
                Some('r') => literal.push('\r'),
                Some('\\') => literal.push('\\'),
                Some(other) => {
                    literal.push('\\');
                    literal.push(other);
                }
                None => literal.push('\\'),
            },
            c => literal.push(c),
        }
    }
    flush(&mut literal, &mut pieces);
    Ok(Format::Template(pieces))
}

/// What `host tail` reads and how it prints it.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Only these partitions (all when empty).
    pub partitions: Vec<i32>,
    /// Where to start; `None`: the beginning, or with `count` the newest
    /// `count` records.
    pub offset: Option<StartOffset>,
    /// Without `offset`: print the newest this many records and exit; with
    /// it: stop after this many records.
    pub count: Option<usize>,
    /// Stop after this long without a new record.
    pub idle_timeout: Option<Duration>,
    /// How each record is printed.
    pub format: Format,
}

/// `host tail`: prints a topic's records (see the module documentation).
pub fn tail(brokers: &str, topic: &str, options: &TailOptions) -> anyhow::Result<()> {
    let trouble = Arc::new(BrokerTrouble::default());
    let consumer: BaseConsumer<TailContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "stagehost-tail")
        .set("client.id", "stagehost-tail")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // What the pipeline's readers see: no aborted transactions.
        .set("isolation.level", "read_committed")
        .create_with_context(TailContext(HostContext::new(trouble.clone())))
        .context("creating the Kafka consumer")?;
    wait_for_brokers(consumer.client(), &trouble, brokers)?;
    let partitions = partitions(&consumer, brokers, topic, &options.partitions)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let printed = match (options.count, options.offset) {
        (Some(count), None) => newest(&consumer, topic, &partitions, count, options, &mut out),
        _ => follow(&consumer, topic, &partitions, options, &mut out),
    };
    match printed {
        // A closed pipe (`host tail … | head`) is where the reader stopped.
        Err(err) if is_broken_pipe(&err) => Ok(()),
        other => other,
    }
}

/// The context of `host tail`'s consumer: the host's own (librdkafka's
/// complaints folded into few lines), as a consumer's.
struct TailContext(HostContext);

impl ClientContext for TailContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ConsumerContext for TailContext {}

/// The partitions of `topic` to read: `wanted`, or all of them. Fails when
/// the topic or a wanted partition does not exist.
fn partitions(
    consumer: &BaseConsumer<TailContext>,
    brokers: &str,
    topic: &str,
    wanted: &[i32],
) -> anyhow::Result<Vec<i32>> {
    let started = Instant::now();
    let mut all = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading the metadata of `{topic}` from {brokers}"))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let error = found.and_then(|t| t.error()).map(RDKafkaErrorCode::from);
        match (found, error) {
            (None, _) | (_, Some(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                anyhow::bail!("topic `{topic}` does not exist on {brokers}")
            }
            // A topic just created may have no leaders for a moment.
            (Some(_), Some(RDKafkaErrorCode::LeaderNotAvailable))
                if started.elapsed() < CONNECT_WAIT =>
            {
                continue;
            }
            (Some(_), Some(code)) => {
                anyhow::bail!("reading the metadata of `{topic}` from {brokers}: {code}")
            }
            (Some(found), None) => {
                break found
                    .partitions()
                    .iter()
                    .map(|p| p.id())
                    .collect::<Vec<_>>();
            }
        }
    };
    all.sort_unstable();
    anyhow::ensure!(
        !all.is_empty(),
        "topic `{topic}` on {brokers} has no partitions"
    );
    let mut selected = Vec::new();
    for partition in wanted {
        anyhow::ensure!(
            all.contains(partition),
            "topic `{topic}` on {brokers} has no partition {partition} (it has {})",
            match all.len() {
                1 => "partition 0".to_string(),
                n => format!("partitions 0 to {}", n - 1),
            }
        );
        if !selected.contains(partition) {
            selected.push(*partition);
        }
    }
    Ok(if selected.is_empty() { all } else { selected })
}

/// A partition's low and high watermarks.
fn watermarks(
    consumer: &BaseConsumer<TailContext>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .with_context(|| format!("reading the offsets of `{topic}` partition {partition}"))
}

/// Prints the newest `count` records of the partitions, in timestamp order
/// (ties by partition and offset): reads each partition from
/// max(low, high - count) up to the high watermark it had at the start.
/// Offsets that hold no record to show (transaction markers, aborted
/// records) can leave a partition short: it is then read further back, in
/// widening windows, until it has `count` records or its start is reached.
fn newest(
    consumer: &BaseConsumer<TailContext>,
    topic: &str,
    partitions: &[i32],
    count: usize,
    options: &TailOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let wanted = i64::try_from(count).unwrap_or(i64::MAX);
    // Partition -> the window of offsets to read next, and what it holds.
    let mut windows = BTreeMap::new();
    for &partition in partitions {
        let (low, high) = watermarks(consumer, topic, partition)?;
        let start = low.max(high.saturating_sub(wanted));
        if start < high && count > 0 {
            windows.insert(
                partition,
                Window {
                    low,
                    start,
                    end: high,
                    found: 0,
                },
            );
        }
    }
    let mut records = Vec::new();
    let mut pending: Vec<i32> = windows.keys().copied().collect();
    while !pending.is_empty() {
        read_windows(
            consumer,
            topic,
            &pending,
            &mut windows,
            options,
            &mut records,
        )?;
        pending.clear();
        for (&partition, window) in &mut windows {
            if window.found < count && window.start > window.low {
                let width = (window.end - window.start).saturating_mul(2).max(wanted);
                window.end = window.start;
                window.start = window.low.max(window.start.saturating_sub(width));
                pending.push(partition);
            }
        }
    }
    records.sort_by_key(|r| (r.timestamp.unwrap_or(i64::MIN), r.partition, r.offset));
    let skip = records.len().saturating_sub(count);
    let mut line = Vec::new();
    for record in &records[skip..] {
        line.clear();
        record.render(topic, &options.format, &mut line);
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}

/// The offsets of a partition `host tail --count` reads next.
struct Window {
    /// The partition's low watermark.
    low: i64,
    /// The first offset to read.
    start: i64,
    /// The offset after the last one to read.
    end: i64,
    /// Records found in this partition so far (all windows).
    found: usize,
}

/// Reads the windows of `partitions` into `records`. A partition is done at
/// the first record at or past its window's end, or at the end of the
/// partition.
fn read_windows(
    consumer: &BaseConsumer<TailContext>,
    topic: &str,
    partitions: &[i32],
    windows: &mut BTreeMap<i32, Window>,
    options: &TailOptions,
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    // Partition -> the end of its window, while it is being read.
    let mut ends = BTreeMap::new();
    for &partition in partitions {
        let window = &windows[&partition];
        assignment.add_partition_offset(topic, partition, Offset::Offset(window.start))?;
        ends.insert(partition, window.end);
    }
    consumer.assign(&assignment)?;
    let stall = options.idle_timeout.unwrap_or(SNAPSHOT_STALL);
    let mut last = Instant::now();
    while !ends.is_empty() {
        if last.elapsed() >= stall {
            if options.idle_timeout.is_some() {
                // Idle: take what came, and read no further back.
                for partition in ends.keys() {
                    if let Some(window) = windows.get_mut(partition) {
                        window.low = window.start;
                    }
                }
                break;
            }
            let waiting: Vec<String> = ends.keys().map(i32::to_string).collect();
            anyhow::bail!(
                "reading `{topic}`: no record for {} s before partition(s) {} reached their end",
                stall.as_secs(),
                waiting.join(", ")
            );
        }
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                ends.remove(&partition);
                continue;
            }
            Err(err) => {
                read_error(consumer.context().0.trouble(), topic, err)?;
                continue;
            }
        };
        last = Instant::now();
        let partition = message.partition();
        let Some(&end) = ends.get(&partition) else {
            continue;
        };
        if message.offset() >= end {
            ends.remove(&partition);
            continue;
        }
        if message.offset() + 1 >= end {
            ends.remove(&partition);
        }
        if let Some(window) = windows.get_mut(&partition) {
            window.found += 1;
        }
        records.push(Record::of(&message));
    }
    Ok(())
}

/// Prints the partitions' records as they arrive, from `options.offset`,
/// until `options.count` were printed or nothing came for
/// `options.idle_timeout`.
fn follow(
    consumer: &BaseConsumer<TailContext>,
    topic: &str,
    partitions: &[i32],
    options: &TailOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    for &partition in partitions {
        let start = match options.offset.unwrap_or(StartOffset::Beginning) {
            StartOffset::Beginning => Offset::Beginning,
            StartOffset::End => Offset::End,
            StartOffset::At(offset) => {
                let (low, high) = watermarks(consumer, topic, partition)?;
                Offset::Offset(offset.clamp(low, high))
            }
            StartOffset::FromEnd(back) => {
                let (low, high) = watermarks(consumer, topic, partition)?;
                Offset::Offset(low.max(high.saturating_sub(back)))
            }
        };
        assignment.add_partition_offset(topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    let mut printed = 0;
    let mut last = Instant::now();
    let mut line = Vec::new();
    while options.count.is_none_or(|count| printed < count) {
        if options
            .idle_timeout
            .is_some_and(|idle| last.elapsed() >= idle)
        {
            break;
        }
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(err) => {
                read_error(consumer.context().0.trouble(), topic, err)?;
                continue;
            }
        };
        last = Instant::now();
        line.clear();
        Record::of(&message).render(topic, &options.format, &mut line);
        out.write_all(&line)?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|err| err.kind() == std::io::ErrorKind::BrokenPipe)
}

/// One record, copied out of the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    partition: i32,
    offset: i64,
    /// Milliseconds since the epoch.
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    /// In order, duplicates kept; a `None` value is a null one.
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    value: Option<Vec<u8>>,
}

impl Record {
    fn of(message: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(raw_headers)
                .unwrap_or_default()
                .into_iter()
                .map(|header| (header.key.to_vec(), header.value.map(<[u8]>::to_vec)))
                .collect(),
            value: message.payload().map(<[u8]>::to_vec),
        }
    }

    /// Appends the record as `format` prints it, newline included (for a
    /// template, whatever the template says).
    fn render(&self, topic: &str, format: &Format, out: &mut Vec<u8>) {
        match format {
            Format::Json => {
                let mut line = String::new();
                line.push_str("{\"topic\":");
                line.push_str(&serde_json::Value::from(topic).to_string());
                line.push_str(&format!(
                    ",\"partition\":{},\"offset\":{},\"timestamp\":",
                    self.partition, self.offset
                ));
                match self.timestamp {
                    Some(millis) => {
                        line.push('"');
                        line.push_str(&rfc3339_millis(millis));
                        line.push('"');
                    }
                    None => line.push_str("null"),
                }
                line.push_str(",\"key\":");
                json_bytes(&mut line, self.key.as_deref());
                line.push_str(",\"headers\":[");
                for (index, (key, value)) in self.headers.iter().enumerate() {
                    if index > 0 {
                        line.push(',');
                    }
                    line.push('[');
                    json_bytes(&mut line, Some(key));
                    line.push(',');
                    json_bytes(&mut line, value.as_deref());
                    line.push(']');
                }
                line.push_str("],\"value\":");
                json_bytes(&mut line, self.value.as_deref());
                line.push_str("}\n");
                out.extend_from_slice(line.as_bytes());
            }
            Format::Value => {
                out.extend_from_slice(self.value.as_deref().unwrap_or_default());
                out.push(b'\n');
            }
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.extend_from_slice(text),
                        Piece::Topic => out.extend_from_slice(topic.as_bytes()),
                        Piece::Partition => {
                            out.extend_from_slice(self.partition.to_string().as_bytes())
                        }
                        Piece::Offset => out.extend_from_slice(self.offset.to_string().as_bytes()),
                        Piece::Key => {
                            out.extend_from_slice(self.key.as_deref().unwrap_or_default())
                        }
                        Piece::Value => {
                            out.extend_from_slice(self.value.as_deref().unwrap_or_default())
                        }
                        Piece::Timestamp => out
                            .extend_from_slice(self.timestamp.unwrap_or(-1).to_string().as_bytes()),
                        Piece::Headers => {
                            for (index, (key, value)) in self.headers.iter().enumerate() {
                                if index > 0 {
                                    out.push(b',');
                                }
                                out.extend_from_slice(key);
                                if let Some(value) = value {
                                    out.push(b'=');
                                    out.extend_from_slice(value);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Appends bytes as JSON: `null`, the text as a JSON string when it is
/// UTF-8, or else `{"base64": "..."}`.
fn json_bytes(out: &mut String, bytes: Option<&[u8]>) {
    match bytes.map(|bytes| (bytes, std::str::from_utf8(bytes))) {
        None => out.push_str("null"),
        Some((_, Ok(text))) => out.push_str(&serde_json::Value::from(text).to_string()),
        Some((bytes, Err(_))) => {
            out.push_str("{\"base64\":\"");
            out.push_str(&base64(bytes));
            out.push_str("\"}");
        }
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC with milliseconds:
/// `2025-01-02T03:04:05.678Z`.
fn rfc3339_millis(millis: i64) -> String {
    let seconds = millis.div_euclid(1000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        millis.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("beginning"), Ok(StartOffset::Beginning));
        assert_eq!(parse_offset("end"), Ok(StartOffset::End));
        assert_eq!(parse_offset("0"), Ok(StartOffset::At(0)));
        assert_eq!(parse_offset("17"), Ok(StartOffset::At(17)));
        assert_eq!(parse_offset("-3"), Ok(StartOffset::FromEnd(3)));
        for bad in ["", "-", "+3", "--3", "x", "1.5", "-end"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_parse() {
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert_eq!(parse_format("value"), Ok(Format::Value));
        assert_eq!(
            parse_format(r"%p:%o:%s\n"),
            Ok(Format::Template(vec![
                Piece::Partition,
                Piece::Text(b":".to_vec()),
                Piece::Offset,
                Piece::Text(b":".to_vec()),
                Piece::Value,
                Piece::Text(b"\n".to_vec()),
            ]))
        );
        assert_eq!(
            parse_format(r"100%% %t\t\\x\q"),
            Ok(Format::Template(vec![
                Piece::Text(b"100% ".to_vec()),
                Piece::Topic,
                Piece::Text(b"\t\\x\\q".to_vec()),
            ]))
        );
        assert!(parse_format("%x").is_err());
        assert!(parse_format("tail%").is_err());
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[0xff, 0x00, 0x80], "/wCA"),
        ] {
            assert_eq!(base64(bytes), text);
        }
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(
            rfc3339_millis(1_735_787_045_678),
            "2025-01-02T03:04:05.678Z"
        );
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }

    fn record() -> Record {
        Record {
            partition: 2,
            offset: 7,
            timestamp: Some(1_735_787_045_678),
            key: Some(b"k".to_vec()),
            headers: vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"a".to_vec(), Some(vec![0xff])),
                (vec![0xfe], None),
            ],
            value: Some(br#"{"x": 1,  "y":2}"#.to_vec()),
        }
    }

    #[test]
    fn json_lines_keep_the_bytes() {
        let mut out = Vec::new();
        record().render("t", &Format::Json, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"topic":"t","partition":2,"offset":7,"timestamp":"2025-01-02T03:04:05.678Z","#,
                r#""key":"k","headers":[["a","1"],["a",{"base64":"/w=="}],[{"base64":"/g=="},null]],"#,
                r#""value":"{\"x\": 1,  \"y\":2}"}"#,
                "\n"
            )
        );
        let empty = Record {
            timestamp: None,
            key: None,
            headers: Vec::new(),
            value: None,
            ..record()
        };
        let mut out = Vec::new();
        empty.render("t", &Format::Json, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"topic\":\"t\",\"partition\":2,\"offset\":7,\"timestamp\":null,\"key\":null,\"headers\":[],\"value\":null}\n"
        );
    }

    #[test]
    fn templates_print_raw_bytes() {
        let mut out = Vec::new();
        let format = parse_format(r"%t/%p/%o/%T %k=%s [%h]\n").unwrap();
        record().render("t", &format, &mut out);
        let mut expected =
            b"t/2/7/1735787045678 k={\"x\": 1,  \"y\":2} [a=1,a=\xff,\xfe]\n".to_vec();
        assert_eq!(out, expected);
        out.clear();
        record().render("t", &Format::Value, &mut out);
        expected = b"{\"x\": 1,  \"y\":2}\n".to_vec();
        assert_eq!(out, expected);
    }
}
