//! `host dlq list CONFIG --stage NAME`: what a stage's dead-letter topic
//! holds, without a running host: its letters counted by kind, handler,
//! version and reason, most frequent first. `host dlq redrive`: sends the
//! letters that match back through the stage.
//!
//! The topic is read from its beginning to its current end (committed
//! records only) by a consumer that joins no group; only the letters the
//! stage wrote (`stagehost-stage`) are counted, since stages may share a
//! dead-letter topic. `--format json` prints one JSON object per group:
//!
//! ```text
//! {"count":3,"kind":"invalid-input","handler":"add","version":"5d4c3b2a1f0e","reason":"…","first_offset":"0/12","last_offset":"1/40"}
//! ```

use crate::config::LoadedConfig;
use crate::control::dead_letter_topic::{RedriveFilter, Summary, letter_time, list, redrive};
use crate::pipeline::dead_letter;
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
    /// Sends a stage's dead letters back to its input with their key, value
    /// and headers (the host's dead-letter headers taken off) plus
    /// `stagehost-redrive-of: TOPIC/PARTITION/OFFSET`. What it redrove is
    /// recorded in Kafka, in one transaction with the messages, so that no
    /// letter is ever redriven twice.
    Redrive {
        /// The pipeline config.
        config: PathBuf,
        /// The stage whose dead letters to send back.
        #[arg(long, value_name = "NAME")]
        stage: String,
        /// Only letters of this kind (repeat for several).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only letters of this handler.
        #[arg(long, value_name = "NAME")]
        handler: Option<String>,
        /// Only letters written at or after this time (RFC 3339, e.g.
        /// `2026-12-03T10:00:00Z`).
        #[arg(long, value_name = "TIME", value_parser = letter_time)]
        since: Option<u64>,
        /// Say what would be redriven, send nothing.
        #[arg(long)]
        dry_run: bool,
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
        DlqCommand::Redrive {
            config,
            stage,
            kinds,
            handler,
            since,
            dry_run,
        } => {
            let config = LoadedConfig::load(config)?;
            let filter = RedriveFilter {
                kinds: kinds.clone(),
                handler: handler.clone(),
                since: *since,
            };
            let done = redrive(&config, stage, &filter, *dry_run)?;
            println!("{done}");
            Ok(())
        }
    }
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
            version.chars().take(12).collect::<String>(),
            dead_letter::one_line(&kind.reason, REASON_CHARS),
        ));
    }
    out
}

/// The most characters of a reason a table row shows.
const REASON_CHARS: usize = 200;

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
    use crate::control::dead_letter_topic::{LetterCount, LetterKind};

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
