//! The `host` binary: parses the command line and dispatches.

use clap::Parser;
use stagehost::cli::{Cli, Command, GraphFormat, LogFormat, PluginCommand};
use stagehost::commands;
use stagehost::config::LoadedConfig;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, stages } => {
            // Signals are caught from the start: one that arrives while the
            // host is still starting stops it cleanly once it runs.
            let shutdown = shutdown_signal()?;
            let config = LoadedConfig::load(&config)?.select_stages(&stages)?;
            stagehost::run(config, shutdown).await
        }
        Command::Graph { config, format } => {
            let config = LoadedConfig::load(&config)?;
            let graph = stagehost::graph::Graph::of(&config.config);
            match format {
                GraphFormat::Mermaid => print!("{}", graph.mermaid()),
                GraphFormat::Dot => print!("{}", graph.dot()),
            }
            Ok(())
        }
        Command::Check { config } => {
            // Guest calls run on a runtime of their own: keep them off the async context.
            let plan = tokio::task::spawn_blocking(move || commands::check(&config)).await??;
            print!("{plan}");
            Ok(())
        }
        Command::Send {
            topic,
            message,
            key,
            raw,
            brokers,
        } => commands::send(&brokers, &topic, message, key, raw).await,
        Command::Tail {
            topic,
            from_end,
            count,
            idle_timeout,
            brokers,
        } => {
            let idle = idle_timeout.map(Duration::from_secs);
            tokio::task::spawn_blocking(move || {
                commands::tail(&brokers, &topic, from_end, count, idle)
            })
            .await?
        }
        Command::Bench {
            config,
            messages,
            fresh_messages,
            operation,
            size,
            wasm_only,
        } => {
            let options = stagehost::bench::BenchOptions {
                messages: messages.max(1),
                fresh_messages: fresh_messages.max(1),
                operation,
                size,
                wasm_only,
            };
            // Runs its own single-threaded runtime, off the async context.
            let report =
                tokio::task::spawn_blocking(move || stagehost::bench::run(&config, &options))
                    .await??;
            print!("{report}");
            Ok(())
        }
        Command::NewPlugin {
            name,
            lang,
            dir,
            kit,
        } => {
            let kit = match kit {
                Some(kit) => kit,
                None => stagehost::scaffold::find_kit()?,
            };
            let dir = dir.unwrap_or_else(|| name.clone().into());
            let made = stagehost::scaffold::new_plugin(&name, lang, &dir, &kit)?;
            println!("wrote {}:", made.dir.display());
            for file in &made.files {
                println!("  {file}");
            }
            println!("next:\n{}", made.next_steps);
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Inspect { path },
        } => {
            let report = tokio::task::spawn_blocking(move || commands::inspect(&path)).await??;
            print!("{report}");
            Ok(())
        }
    }
}

/// Registers for SIGINT (ctrl-c) and SIGTERM now; the future completes when
/// either arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("STAGEHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
