//! `host run CONFIG [--stage NAME]...`: runs the pipeline until SIGINT or
//! SIGTERM, re-reading the config on SIGHUP.

use crate::config::LoadedConfig;
use crate::control::Host;
use std::path::Path;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Runs the stages of `config` (only `stages`, when any are named).
pub async fn run(config: &Path, stages: &[String]) -> anyhow::Result<()> {
    // Signals are caught from the start: one that arrives while the host is
    // still starting stops it there.
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let reloads = hangups()?;
    let config = LoadedConfig::load(config)?.select_stages(stages)?;
    let host = tokio::select! {
        host = Host::start(config) => host?,
        () = &mut shutdown => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    host.run(shutdown, reloads).await
}

/// Registers for SIGINT (ctrl-c) and SIGTERM now; the future completes when
/// either arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// One reload request per SIGHUP.
fn hangups() -> anyhow::Result<mpsc::UnboundedReceiver<()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (requests, reloads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if requests.send(()).is_err() {
                break;
            }
        }
    });
    Ok(reloads)
}
