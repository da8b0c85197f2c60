//! `host handlers list|show|upload|promote|shadow|discard|rollback|pin|delete`
//! and `host logs`: the admin API's handler routes from the command line.

use super::admin_client::{AdminArgs, AdminClient, cell, print};
use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Duration;

/// What `host handlers` does.
#[derive(Debug, clap::Subcommand)]
pub enum HandlersCommand {
    /// Every handler's serving version.
    List,
    /// One handler: its version, pin and history.
    Show {
        /// The handler.
        name: String,
    },
    /// Validates a component and swaps it in (it stays until the file
    /// changes), or with `--canary` starts it on a share of the keys, or
    /// with `--shadow` beside the serving version on a copy of every message.
    Upload {
        /// The handler.
        name: String,
        /// The `.wasm` component.
        file: PathBuf,
        /// Start it as a canary on this percent (1-99) of the keys; it is
        /// promoted or rolled back by itself (see the options below).
        #[arg(long, value_name = "PERCENT")]
        canary: Option<i64>,
        /// Start it as a shadow: it runs on a copy of every message, and what
        /// it makes is compared with the serving version's, never produced.
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
        /// Roll the canary back when its dead-letter rate exceeds the stable
        /// version's by more than this many percentage points [default: 5].
        #[arg(long, requires = "canary")]
        margin_percent: Option<f64>,
        /// Judge the canary only after this many of its messages [default: 100].
        #[arg(long, requires = "canary")]
        min_messages: Option<u64>,
        /// Promote the canary after this many of its messages [default: 1000].
        #[arg(long, requires = "canary")]
        promote_after_messages: Option<u64>,
        /// Promote the canary after this long (e.g. `10m`), if sooner.
        #[arg(long, requires = "canary")]
        promote_after: Option<String>,
    },
    /// Makes the running canary or shadow the serving version.
    Promote {
        /// The handler.
        name: String,
    },
    /// The running (else the last) shadow: agreements, differences, and the
    /// last differences with both versions' outputs.
    Shadow {
        /// The handler.
        name: String,
    },
    /// Discards the running shadow.
    Discard {
        /// The handler.
        name: String,
    },
    /// Goes back one version (again for the one before), and pins it; with
    /// a canary running, ends the canary instead.
    Rollback {
        /// The handler.
        name: String,
    },
    /// Pins a kept version (the serving one by default) through re-reads and restarts.
    Pin {
        /// The handler.
        name: String,
        /// The version (default: the serving one).
        #[arg(long)]
        version: Option<String>,
    },
    /// Takes a handler no route uses out of service.
    Delete {
        /// The handler.
        name: String,
    },
}

fn info_row(info: &serde_json::Value) -> Vec<String> {
    vec![
        cell(&info["name"]),
        cell(&info["version"]),
        cell(&info["pinned"]),
        cell(&info["previous_version"]),
        cell(&info["loaded_at"]),
        cell(&info["source"]),
    ]
}

const INFO_COLUMNS: [&str; 6] = ["name", "version", "pinned", "previous", "loaded", "source"];

/// Runs one `host handlers` command.
pub async fn handlers(command: HandlersCommand, args: &AdminArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    match command {
        HandlersCommand::List => {
            let list = client.request("GET", "/handlers", b"").await?;
            let rows = list
                .as_array()
                .into_iter()
                .flatten()
                .map(info_row)
                .collect();
            print(args.json, &list, &INFO_COLUMNS, rows);
        }
        HandlersCommand::Show { name } => {
            let info = client
                .request("GET", &format!("/handlers/{name}"), b"")
                .await?;
            if args.json {
                println!("{info}");
                return Ok(());
            }
            print(false, &info, &INFO_COLUMNS, vec![info_row(&info)]);
            for (title, canary) in [
                ("canary", &info["canary"]),
                ("last canary", &info["last_canary"]),
            ] {
                if canary.is_object() {
                    println!("{}", canary_line(title, canary));
                }
            }
            if info["shadow"].is_object() {
                println!(
                    "shadow: {}: {} agreements, {} differences (host handlers shadow {})",
                    cell(&info["shadow"]["version"]),
                    cell(&info["shadow"]["agreements"]),
                    cell(&info["shadow"]["differences"]),
                    cell(&info["name"]),
                );
            }
            println!();
            let history: Vec<Vec<String>> = info["history"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|served| {
                    vec![
                        cell(&served["at"]),
                        cell(&served["version"]),
                        cell(&served["how"]),
                        cell(&served["source"]),
                    ]
                })
                .collect();
            print(false, &info, &["at", "version", "how", "source"], history);
        }
        HandlersCommand::Upload {
            name,
            file,
            canary,
            shadow,
            margin_percent,
            min_messages,
            promote_after_messages,
            promote_after,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut query: Vec<String> = Vec::new();
            if let Some(percent) = canary {
                query.push(format!("canary={percent}"));
            }
            if shadow {
                query.push("shadow=true".to_string());
            }
            let rules = [
                ("margin_percent", margin_percent.map(|m| m.to_string())),
                ("min_messages", min_messages.map(|n| n.to_string())),
                (
                    "promote_after_messages",
                    promote_after_messages.map(|n| n.to_string()),
                ),
                ("promote_after", promote_after),
            ];
            for (key, value) in rules {
                if let Some(value) = value {
                    query.push(format!("{key}={}", query_text(&value)));
                }
            }
            let query = match query.is_empty() {
                true => String::new(),
                false => format!("?{}", query.join("&")),
            };
            let info = client
                .request("PUT", &format!("/handlers/{name}{query}"), &bytes)
                .await?;
            print(args.json, &info, &INFO_COLUMNS, vec![info_row(&info)]);
            if let (false, Some(canary)) = (args.json, info["canary"].as_object()) {
                println!(
                    "canary {} on {}% of the keys",
                    cell(&canary["version"]),
                    cell(&canary["percent"])
                );
            }
        }
        HandlersCommand::Promote { name } => {
            let info = client
                .request("POST", &format!("/handlers/{name}/promote"), b"")
                .await?;
            print(args.json, &info, &INFO_COLUMNS, vec![info_row(&info)]);
        }
        HandlersCommand::Shadow { name } => {
            let report = client
                .request("GET", &format!("/handlers/{name}/shadow"), b"")
                .await?;
            if args.json {
                println!("{report}");
                return Ok(());
            }
            let outcome = match report["outcome"].as_str() {
                Some(outcome) => format!("; {outcome}"),
                None => String::new(),
            };
            println!(
                "shadow {} beside {}: {} agreements, {} differences{outcome}",
                cell(&report["version"]),
                cell(&report["serving_version"]),
                cell(&report["agreements"]),
                cell(&report["differences"]),
            );
            for difference in report["recent_differences"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "  partition {} offset {}:\n    serving: {}\n    shadow:  {}",
                    cell(&difference["partition"]),
                    cell(&difference["offset"]),
                    difference["serving"],
                    difference["shadow"],
                );
            }
        }
        HandlersCommand::Discard { name } => {
            let info = client
                .request("DELETE", &format!("/handlers/{name}/shadow"), b"")
                .await?;
            print(args.json, &info, &INFO_COLUMNS, vec![info_row(&info)]);
        }
        HandlersCommand::Rollback { name } => {
            let info = client
                .request("POST", &format!("/handlers/{name}/rollback"), b"")
                .await?;
            print(args.json, &info, &INFO_COLUMNS, vec![info_row(&info)]);
        }
        HandlersCommand::Pin { name, version } => {
            let query = version.map(|v| format!("?version={v}")).unwrap_or_default();
            let info = client
                .request("POST", &format!("/handlers/{name}/pin{query}"), b"")
                .await?;
            print(args.json, &info, &INFO_COLUMNS, vec![info_row(&info)]);
        }
        HandlersCommand::Delete { name } => {
            let answer = client
                .request("DELETE", &format!("/handlers/{name}"), b"")
                .await?;
            match args.json {
                true => println!("{answer}"),
                false => println!("removed {name}"),
            }
        }
    }
    Ok(())
}

/// One line of a canary's state: its version and share, both sides'
/// messages and dead letters, and how it ended.
fn canary_line(title: &str, canary: &serde_json::Value) -> String {
    let outcome = match canary["outcome"].as_str() {
        Some(outcome) => format!("; {outcome}"),
        None => String::new(),
    };
    format!(
        "{title}: {} on {}% of the keys: {} messages, {} dead letters; stable {}: {} messages, {} dead letters{outcome}",
        cell(&canary["version"]),
        cell(&canary["percent"]),
        cell(&canary["messages"]),
        cell(&canary["dead_letters"]),
        cell(&canary["stable_version"]),
        cell(&canary["stable_messages"]),
        cell(&canary["stable_dead_letters"]),
    )
}

/// `text` fit for a URL query: everything but unreserved characters
/// percent-encoded.
fn query_text(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// `host logs HANDLER [--follow]`: the handler's recent guest output kept by
/// the host, and with `--follow` what comes after, until interrupted.
pub async fn logs(name: &str, follow: bool, args: &AdminArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    let mut after = 0u64;
    loop {
        let lines = client
            .request("GET", &format!("/handlers/{name}/logs?after={after}"), b"")
            .await?;
        for line in lines.as_array().into_iter().flatten() {
            after = after.max(line["seq"].as_u64().unwrap_or(after));
            if args.json {
                println!("{line}");
                continue;
            }
            let place = match (line["partition"].as_i64(), line["offset"].as_i64()) {
                (Some(partition), Some(offset)) => format!(" [{partition}@{offset}]"),
                _ if line["self_test"] == true => " [self-test]".into(),
                _ => String::new(),
            };
            println!(
                "{} {:5} {}{place}: {}",
                cell(&line["time"]),
                cell(&line["level"]),
                cell(&line["stream"]),
                cell(&line["text"])
            );
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `host topics`: each running stage's input partitions, watermarks and lag.
pub async fn topics(args: &AdminArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    let list = client.request("GET", "/topics", b"").await?;
    let rows = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|topic| {
            [
                "stage",
                "topic",
                "partition",
                "low",
                "high",
                "committed",
                "lag",
            ]
            .iter()
            .map(|key| cell(&topic[*key]))
            .collect()
        })
        .collect();
    print(
        args.json,
        &list,
        &[
            "stage",
            "topic",
            "partition",
            "low",
            "high",
            "committed",
            "lag",
        ],
        rows,
    );
    Ok(())
}
