//! The command line: the clap definitions and [`dispatch`]; each command
//! is a file of its own.

mod admin_client;
mod bench;
mod check;
mod dlq;
mod graph;
mod handlers;
mod new_plugin;
mod plugin;
mod replay;
mod run;
mod send;
mod state;
mod tail;
mod test;

pub use bench::BenchOptions;
pub use new_plugin::{Language, Scaffolded, find_kit, new_plugin};

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Runs sandboxed, hot-swappable WebAssembly handlers on Kafka streams.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "STAGEHOST_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Languages `host graph` draws in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A Mermaid flowchart (renders on GitHub and in most Markdown viewers).
    Mermaid,
    /// Graphviz DOT: `host graph CONFIG --format dot | dot -Tsvg -o graph.svg`.
    Dot,
}

/// The host's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the pipeline in a config file until SIGINT or SIGTERM.
    Run {
        /// The pipeline config.
        config: PathBuf,
        /// Run only this stage (repeat for several); other hosts run the
        /// rest of the graph. Without it, every stage runs here.
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
    },
    /// Prints the pipeline's dependency graph as Mermaid or Graphviz DOT.
    Graph {
        /// The pipeline config.
        config: PathBuf,
        /// Output language.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Checks a config and loads every plugin, consuming nothing.
    Check {
        /// The pipeline config.
        config: PathBuf,
        /// Do not contact the brokers (by default the check fails when they
        /// do not answer).
        #[arg(long)]
        offline: bool,
    },
    /// Sends JSON messages to a topic, like the tutorial's program 1.
    Send {
        /// Topic to send to.
        topic: String,
        /// The message; without it, every non-empty line of stdin is one message.
        message: Option<String>,
        /// Record key.
        #[arg(long)]
        key: Option<String>,
        /// A header `K=V` (repeat for several; order and repeats are kept).
        #[arg(long = "header", value_name = "K=V", value_parser = send::parse_header)]
        headers: Vec<(String, String)>,
        /// The partition to send to (default: the partitioner's choice).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        partition: Option<i32>,
        /// Send the text as it is, even if it is not JSON.
        #[arg(long)]
        raw: bool,
        /// Bootstrap servers.
        #[arg(long, env = "STAGEHOST_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
    },
    /// Prints a topic's records exactly as they were produced: one JSON
    /// line each by default (topic, partition, offset, timestamp, key,
    /// headers, value).
    Tail {
        /// Topic to read.
        topic: String,
        /// How each record is printed: `json` (one JSON object per line; the
        /// key, header values and value as the produced text, or
        /// `{"base64": …}` when not UTF-8), `value` (the value's bytes and a
        /// newline), or a template: `%t` topic, `%p` partition, `%o` offset,
        /// `%k` key, `%s` value, `%T` timestamp (ms), `%h` headers (k=v,…),
        /// `%%`, `\n`, `\t`.
        #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = tail::parse_format)]
        format: tail::Format,
        /// Read only this partition (repeat for several; default: all).
        #[arg(long = "partition", value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        partitions: Vec<i32>,
        /// Where to start in each partition: `beginning`, `end`, `N` (that
        /// offset) or `-N` (N records before the end). Default: the
        /// beginning; with `--count`, the newest records.
        #[arg(long, value_name = "OFFSET", allow_hyphen_values = true, value_parser = tail::parse_offset)]
        offset: Option<tail::StartOffset>,
        /// Same as `--offset end`.
        #[arg(long, conflicts_with = "offset")]
        from_end: bool,
        /// Print the newest N records of the selected partitions, oldest
        /// first, and exit; with `--offset` (or `--from-end`), the first N
        /// records from there.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// Stop after this many seconds without a new record.
        #[arg(long, value_name = "S")]
        idle_timeout: Option<u64>,
        /// Bootstrap servers.
        #[arg(long, env = "STAGEHOST_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
    },
    /// Measures the sandbox's cost in process, without Kafka: route ->
    /// handler -> output records, wasm against the same logic built natively.
    Bench {
        /// The pipeline config whose handlers are measured.
        #[arg(default_value = "config.yml")]
        config: PathBuf,
        /// Messages per path.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Messages for the fresh-instance-per-message path.
        #[arg(long, default_value_t = 20_000)]
        fresh_messages: u64,
        /// The routing field's value the messages carry.
        #[arg(long, default_value = "sum")]
        operation: String,
        /// Bytes per message: the tutorial's request, padded with a `pad`
        /// string field (which the handler echoes) when this is larger.
        #[arg(long, default_value_t = 0)]
        size: usize,
        /// Only the wasm paths: no native baseline and no comparison (for a
        /// profile of the sandbox alone).
        #[arg(long)]
        wasm_only: bool,
        /// Messages per `handle-batch` call on the batched path (the
        /// default `max_batch` of a stage).
        #[arg(long, default_value_t = crate::config::DEFAULT_MAX_BATCH.get())]
        batch: usize,
    },
    /// Writes a new handler project that builds and passes its own test.
    NewPlugin {
        /// The handler's name (a-z, 0-9, `-`, `_`).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = crate::cli::Language::Rust)]
        lang: crate::cli::Language,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guest kit, `plugins/guest` of the Stagehost repository
        /// (default: found above the current directory or the host binary).
        /// The project gets a copy of it (Rust) and of the WIT world in the
        /// repository's `wit/` directory next to it, so it builds anywhere.
        #[arg(long)]
        kit: Option<PathBuf>,
        /// Write a stateful handler instead: a count per key in the stage's
        /// state, with fixtures that use `state` and `expect_state`.
        #[arg(long)]
        stateful: bool,
    },
    /// Runs a handler on the cases of a fixture file in the sandbox, without
    /// a broker, and compares its answers with the expected ones.
    Test {
        /// The handler component (`.wasm`).
        wasm: PathBuf,
        /// The fixture file: JSON lines, one case each (`#` starts a comment).
        fixtures: PathBuf,
        /// Take the limits and settings of `--handler` from this config.
        #[arg(long, requires = "handler")]
        config: Option<PathBuf>,
        /// The config's handler whose limits and settings apply.
        #[arg(long, requires = "config")]
        handler: Option<String>,
        /// A setting for `init`, `K=V` (repeat for several; after the config's).
        #[arg(long = "setting", value_name = "K=V", value_parser = test::parse_setting)]
        settings: Vec<(String, String)>,
        /// One JSON object per case instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Handlers of a running host, over its admin API.
    Handlers {
        /// What to do.
        #[command(subcommand)]
        command: handlers::HandlersCommand,
        /// The admin API.
        #[command(flatten)]
        admin: admin_client::AdminArgs,
    },
    /// A handler's recent guest output (stdout, stderr, `log`), kept by the host.
    Logs {
        /// The handler.
        handler: String,
        /// Keep printing new lines until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// The admin API.
        #[command(flatten)]
        admin: admin_client::AdminArgs,
    },
    /// Each running stage's input partitions: watermarks, committed offset, lag.
    Topics {
        /// The admin API.
        #[command(flatten)]
        admin: admin_client::AdminArgs,
    },
    /// A stage's dead letters, read from its dead-letter topic.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Runs a stage's handlers (or another component) over past input into
    /// a side topic, without touching the stage's consumer group.
    Replay(replay::ReplayArgs),
    /// A stateful stage's state, read from its changelog topic.
    State {
        /// What to do.
        #[command(subcommand)]
        command: state::StateCommand,
    },
    /// Plugin tools.
    Plugin {
        /// The plugin command.
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// Commands about plugin files.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Loads a component, checks it implements the handler world, prints its version.
    Inspect {
        /// The `.wasm` component.
        path: PathBuf,
    },
}

/// Runs one command.
pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, stages } => run::run(&config, &stages).await,
        Command::Graph { config, format } => {
            print!("{}", graph::graph(&config, format)?);
            Ok(())
        }
        Command::Check { config, offline } => {
            // Guest calls run on a runtime of their own: keep them off the async context.
            let (plan, loaded) =
                tokio::task::spawn_blocking(move || check::check(&config)).await??;
            let reached = match offline {
                true => "brokers: not contacted (--offline)\n".to_string(),
                false => check::reach_brokers(&loaded).await?,
            };
            print!("{plan}{reached}");
            Ok(())
        }
        Command::Send {
            topic,
            message,
            key,
            headers,
            partition,
            raw,
            brokers,
        } => {
            let options = send::SendOptions {
                key,
                headers,
                partition,
                raw,
            };
            send::send(&brokers, &topic, message, &options).await
        }
        Command::Tail {
            topic,
            format,
            partitions,
            offset,
            from_end,
            count,
            idle_timeout,
            brokers,
        } => {
            let options = tail::TailOptions {
                partitions,
                offset: if from_end {
                    Some(tail::StartOffset::End)
                } else {
                    offset
                },
                count,
                idle_timeout: idle_timeout.map(std::time::Duration::from_secs),
                format,
            };
            tokio::task::spawn_blocking(move || tail::tail(&brokers, &topic, &options)).await?
        }
        Command::Bench {
            config,
            messages,
            fresh_messages,
            operation,
            size,
            wasm_only,
            batch,
        } => {
            let options = BenchOptions {
                messages: messages.max(1),
                fresh_messages: fresh_messages.max(1),
                operation,
                size,
                wasm_only,
                batch: batch.max(1),
            };
            // Runs its own single-threaded runtime, off the async context.
            let report =
                tokio::task::spawn_blocking(move || bench::run(&config, &options)).await??;
            print!("{report}");
            Ok(())
        }
        Command::NewPlugin {
            name,
            lang,
            dir,
            kit,
            stateful,
        } => {
            let kit = match kit {
                Some(kit) => kit,
                None => find_kit()?,
            };
            let dir = dir.unwrap_or_else(|| name.clone().into());
            let made = new_plugin(&name, lang, &dir, &kit, stateful)?;
            println!("wrote {}:", made.dir.display());
            for file in &made.files {
                println!("  {file}");
            }
            println!("next:\n{}", made.next_steps);
            Ok(())
        }
        Command::Test {
            wasm,
            fixtures,
            config,
            handler,
            settings,
            json,
        } => {
            let options = test::TestOptions {
                wasm,
                fixtures,
                config,
                handler,
                settings,
                json,
            };
            // Guest calls run on a runtime of their own: keep them off the async context.
            let summary = tokio::task::spawn_blocking(move || test::test(&options)).await??;
            anyhow::ensure!(
                summary.failed == 0,
                "{} of {} cases failed",
                summary.failed,
                summary.passed + summary.failed
            );
            Ok(())
        }
        Command::Handlers { command, admin } => handlers::handlers(command, &admin).await,
        Command::Logs {
            handler,
            follow,
            admin,
        } => handlers::logs(&handler, follow, &admin).await,
        Command::Topics { admin } => handlers::topics(&admin).await,
        Command::State { command } => {
            tokio::task::spawn_blocking(move || state::state(&command)).await?
        }
        Command::Dlq { command } => tokio::task::spawn_blocking(move || dlq::dlq(&command)).await?,
        Command::Replay(args) => tokio::task::spawn_blocking(move || replay::run(&args)).await?,
        Command::Plugin {
            command: PluginCommand::Inspect { path },
        } => {
            let report = tokio::task::spawn_blocking(move || plugin::inspect(&path)).await??;
            print!("{report}");
            Ok(())
        }
    }
}
