//! Stagehost: consumes Kafka topics, routes each message to a sandboxed
//! WebAssembly component, and produces what it returns downstream.
//!
//! [`run`] is the whole host; `main` only parses the command line.

pub mod bindings;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dead_letter;
pub mod kafka;
pub mod pipeline;
pub mod registry;
pub mod routing;
pub mod sandbox;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use config::LoadedConfig;
use pipeline::Stage;
use registry::Registry;
use sandbox::Sandbox;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a shutdown waits for outputs to be acknowledged before leaving
/// the rest uncommitted (they are consumed again on the next start).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether any handler asks for fuel metering.
pub fn needs_fuel(config: &LoadedConfig) -> bool {
    config
        .config
        .handlers
        .values()
        .any(|h| h.limits.fuel.is_some())
}

/// Runs every stage of `config` until `shutdown` completes, then stops
/// fetching, finishes the messages already taken, flushes and commits.
pub async fn run(config: LoadedConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(needs_fuel(&config))?;
    let registry = Registry::load(&config, &sandbox)?;
    for (name, component) in registry.handlers() {
        tracing::info!(
            handler = name,
            version = component.version(),
            source = component.source(),
            "handler loaded"
        );
    }
    let registry = Arc::new(ArcSwap::from_pointee(registry));

    let kafka = &config.config.kafka;
    let brokers = kafka::Brokers::connect(kafka)?;
    let bootstrap = brokers.bootstrap();
    let producer = kafka::producer(bootstrap, kafka)?;
    kafka::wait_reachable(&producer, bootstrap).await?;
    if kafka.topics.create {
        let mut topics: Vec<&str> = config
            .config
            .stages
            .iter()
            .flat_map(|s| [s.input.as_str(), s.output.as_str(), s.dead_letter.as_str()])
            .collect();
        topics.sort_unstable();
        topics.dedup();
        kafka::ensure_topics(bootstrap, kafka, &topics).await?;
    }

    let stop = CancellationToken::new();
    let mut stages = JoinSet::new();
    for stage_config in &config.config.stages {
        let consumer = kafka::consumer(bootstrap, kafka, stage_config)?;
        let stage = Stage::new(
            stage_config.clone(),
            registry.clone(),
            producer.clone(),
            consumer,
            DRAIN_TIMEOUT,
        );
        stages.spawn(stage.run(stop.clone()));
    }
    tracing::info!(config = %config.path.display(), stages = config.config.stages.len(), "stagehost running");

    let mut outcome = Ok(());
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        Some(ended) = stages.join_next() => {
            outcome = flatten(ended).context("a stage stopped unexpectedly");
        }
    }
    stop.cancel();
    while let Some(ended) = stages.join_next().await {
        if let Err(err) = flatten(ended) {
            tracing::error!(cause = %format!("{err:#}"), "stage failed while stopping");
            if outcome.is_ok() {
                outcome = Err(err);
            }
        }
    }
    let flushed = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer as _;
        producer.flush(DRAIN_TIMEOUT)
    })
    .await?;
    if let Err(err) = flushed {
        tracing::error!(cause = %err, "producer flush failed");
    }
    drop(brokers);
    tracing::info!("stopped");
    outcome
}

fn flatten(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    ended.map_err(anyhow::Error::from).and_then(|result| result)
}
