//! `host handlers list|show|upload|rollback|pin|delete` and `host logs`:
//! the admin API's handler routes from the command line.

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
    /// Validates a component and swaps it in (it stays until the file changes).
    Upload {
        /// The handler.
        name: String,
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Goes back one version (again for the one before), and pins it.
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
        HandlersCommand::Upload { name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let info = client
                .request("PUT", &format!("/handlers/{name}"), &bytes)
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
