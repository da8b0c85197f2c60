//! `host dlq list CONFIG --stage NAME`: what a stage's dead-letter topic
//! holds, without a running host: its letters counted by kind, handler,
//! version and reason, most frequent first.
//!
//! The topic is read from its beginning to its current end (committed
//! records only) by a consumer that joins no group; only the letters the
//! stage wrote (`stagehost-stage`) are counted, since stages may share a
//! dead-letter topic. `--format json` prints one JSON object per group:
//!
//! ```text
//! {"count":3,"kind":"invalid-input","handler":"add","version":"5d4c3b2a1f0e","reason":"…","first_offset":"0/12","last_offset":"1/40"}
//! ```

use super::topic_read::{self, EndReader};
use crate::config::LoadedConfig;
use crate::pipeline::dead_letter;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

/// What `host dlq` does.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Summarises a stage's dead letters by kind, handler, version and
    /// reason, most frequent first.
    List {
        /// The pipeline config.
        config: PathBuf,
        /// The stage whose dead letters to count.
        #[arg(long, value_name = "NAME")]
        stage: String,
        /// How the summary is printed.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

/// How `host dlq list` prints its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A table for people, with the total first.
    Table,
    /// One JSON object per group.
    Json,
}

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

/// Runs a `host dlq` command. Blocks: call it off the async context.
pub fn dlq(command: &DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            config,
            stage,
            format,
        } => {
            let config = LoadedConfig::load(config)?;
            let summary = list(&config, stage)?;
            let text = match format {
                ListFormat::Table => table(stage, &summary),
                ListFormat::Json => json_lines(&summary),
            };
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // A closed pipe (`… | head`) is where the reader stopped.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => Ok(other?),
            }
        }
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

/// A header's value as text (lossy), if the record has it.
fn header(letter: &BorrowedMessage<'_>, key: &str) -> Option<String> {
    let headers = letter.headers()?;
    headers
        .iter()
        .find(|header| header.key == key)
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

/// The summary as a table: the total, then one row per group.
pub fn table(stage: &str, summary: &Summary) -> String {
    let mut out = format!(
        "{} dead letter(s) of stage `{stage}` in {}\n",
        summary.total(),
        summary.topic
    );
    if summary.others > 0 {
        out.push_str(&format!(
            "({} more record(s) there are other stages' and are not counted)\n",
            summary.others
        ));
    }
    let ranked = summary.ranked();
    if ranked.is_empty() {
        return out;
    }
    let kind_width = ranked
        .iter()
        .map(|(k, _)| k.kind.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let handler_width = ranked
        .iter()
        .map(|(k, _)| k.handler.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(0)
        .max(7);
    out.push_str(&format!(
        "{:>7}  {:kind_width$}  {:handler_width$}  {:12}  reason\n",
        "count", "kind", "handler", "version"
    ));
    for (kind, count) in ranked {
        let version = kind.version.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{:>7}  {:kind_width$}  {:handler_width$}  {:12}  {}\n",
            count.count,
            kind.kind,
            kind.handler.as_deref().unwrap_or("-"),
            &version[..version.len().min(12)],
            one_line(&kind.reason),
        ));
    }
    out
}

/// A reason on one line, cut at 200 characters.
fn one_line(reason: &str) -> String {
    let mut line: String = reason
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if reason.chars().count() > 200 {
        line.push('…');
    }
    line
}

/// The summary as JSON lines, most frequent first.
pub fn json_lines(summary: &Summary) -> String {
    summary
        .ranked()
        .into_iter()
        .map(|(kind, count)| {
            let line = serde_json::json!({
                "count": count.count,
                "kind": kind.kind,
                "handler": kind.handler,
                "version": kind.version,
                "reason": kind.reason,
                "first_offset": format!("{}/{}", count.first.0, count.first.1),
                "last_offset": format!("{}/{}", count.last.0, count.last.1),
            });
            format!("{line}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(
        kind: &str,
        handler: Option<&str>,
        reason: &str,
        count: u64,
    ) -> (LetterKind, LetterCount) {
        (
            LetterKind {
                kind: kind.into(),
                handler: handler.map(Into::into),
                version: handler.map(|_| "5d4c3b2a1f0e9d8c".into()),
                reason: reason.into(),
            },
            LetterCount {
                count,
                first: (0, 1),
                last: (1, 7),
            },
        )
    }

    #[test]
    fn the_table_ranks_groups_most_frequent_first() {
        let summary = Summary {
            topic: "calc-dlq".into(),
            groups: [
                group("no-route", None, "no route for operation `mul`", 1),
                group(
                    "invalid-input",
                    Some("add"),
                    "operand \"x\" is not a number",
                    3,
                ),
            ]
            .into_iter()
            .collect(),
            others: 2,
        };
        let table = table("calculator", &summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "4 dead letter(s) of stage `calculator` in calc-dlq"
        );
        assert!(lines[1].contains("2 more record(s)"), "{table}");
        assert!(
            lines[3].trim_start().starts_with("3  invalid-input  add"),
            "{table}"
        );
        assert!(lines[3].contains("5d4c3b2a1f0e  operand"), "{table}");
        assert!(lines[4].trim_start().starts_with("1  no-route"), "{table}");
        let json = json_lines(&summary);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["count"], 3);
        assert_eq!(first["last_offset"], "1/7");
        let second: serde_json::Value = serde_json::from_str(json.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["handler"], serde_json::Value::Null);
    }
}
