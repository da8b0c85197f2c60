//! Stagehost: consumes Kafka topics, routes each message to a sandboxed
//! WebAssembly component, and produces what it returns downstream.
//!
//! [`run`] is the whole host; `main` only parses the command line.

pub mod admin;
pub mod bench;
pub mod bindings;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dead_letter;
pub mod graph;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod reload;
pub mod routing;
pub mod sandbox;
pub mod scaffold;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use config::{Delivery, LoadedConfig, StageConfig};
use pipeline::Stage;
use registry::Registry;
use reload::Reloader;
use sandbox::Sandbox;
use std::collections::BTreeMap;
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

/// What a started host tells its caller.
#[derive(Clone)]
pub struct Ready {
    /// Where the admin port listens, when enabled.
    pub admin: Option<std::net::SocketAddr>,
    /// The hot-swap entry point (what the admin API and SIGHUP use).
    pub reloader: Arc<Reloader>,
}

/// Runs every stage of `config` until `shutdown` completes, then stops
/// fetching, finishes the messages already taken, flushes and commits.
pub async fn run(config: LoadedConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `ready` once the host consumes.
pub async fn run_with(
    config: LoadedConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Ready),
) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(needs_fuel(&config))?;
    let registry = tokio::task::block_in_place(|| Registry::load(&config, &sandbox, None))?;
    let metrics = metrics::Metrics::new();
    metrics.watch_log_budgets(sandbox.log_budgets().clone());
    for (name, component) in registry.handlers() {
        metrics.set_handler_version(name, component.version());
        tracing::info!(
            handler = name,
            version = component.version(),
            source = component.source(),
            "handler loaded"
        );
    }
    let registry = Arc::new(ArcSwap::from_pointee(registry));
    let swaps = metrics.clone();
    let reloader = Reloader::new(
        sandbox,
        registry.clone(),
        config.clone(),
        move |handler, outcome| match outcome {
            Ok(component) => {
                swaps.handler_swapped(handler, "applied");
                swaps.set_handler_version(handler, component.version());
            }
            Err(_) => swaps.handler_swapped(handler, "rejected"),
        },
    );

    let kafka = &config.config.kafka;
    let brokers = kafka::Brokers::connect(kafka)?;
    let bootstrap = brokers.bootstrap().to_string();
    let trouble = Arc::new(kafka::BrokerTrouble::default());
    let producer = kafka::producer(&bootstrap, kafka, &trouble)?;
    kafka::wait_reachable(&producer, &trouble, kafka, &bootstrap, kafka::CONNECT_WAIT).await?;

    let stop = CancellationToken::new();
    let mut stages = Stages {
        bootstrap,
        producer: producer.clone(),
        trouble: trouble.clone(),
        registry,
        metrics: metrics.clone(),
        running: BTreeMap::new(),
        tasks: JoinSet::new(),
        next_id: 0,
    };
    stages.reconcile(&config).await?;
    reloader.set_healthy(true);
    let admin_stop = CancellationToken::new();
    let mut admin_address = None;
    let mut admin_task = None;
    if config.config.admin.enabled {
        let listen = &config.config.admin.listen;
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .with_context(|| format!("binding the admin port {listen}"))?;
        admin_address = Some(listener.local_addr()?);
        let stopped = admin_stop.clone();
        admin_task = Some(tokio::spawn(admin::serve(
            listener,
            config.config.admin.token.clone(),
            reloader.clone(),
            metrics.clone(),
            async move { stopped.cancelled().await },
        )));
    }
    let watcher = tokio::spawn(reloader.clone().watch(stop.clone()));
    tracing::info!(config = %config.path.display(), stages = config.running_stages().count(), "stagehost running");
    ready(Ready {
        admin: admin_address,
        reloader: reloader.clone(),
    });

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::pin!(shutdown);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
            _ = hangup.recv() => {
                let reloading = reloader.clone();
                match tokio::task::spawn_blocking(move || reloading.reload_config()).await? {
                    Ok(fresh) => {
                        if let Err(err) = stages.reconcile(&fresh).await {
                            tracing::error!(cause = %format!("{err:#}"), "applying the re-read config failed");
                        }
                    }
                    Err(err) => tracing::error!(cause = %err, "config re-read rejected; the running config stays in force"),
                }
            }
            Some(ended) = stages.tasks.join_next() => {
                let (id, result) = ended?;
                if stages.running.values().any(|stage| stage.id == id) {
                    outcome = result.context("a stage stopped unexpectedly");
                    break;
                }
            }
        }
    }
    reloader.set_healthy(false);
    stop.cancel();
    for stage in stages.running.values() {
        stage.stop.cancel();
    }
    while let Some(ended) = stages.tasks.join_next().await {
        if let Err(err) = ended
            .map_err(anyhow::Error::from)
            .and_then(|(_, result)| result)
        {
            tracing::error!(cause = %format!("{err:#}"), "stage failed while stopping");
            if outcome.is_ok() {
                outcome = Err(err);
            }
        }
    }
    let _ = watcher.await;
    let flushed = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer as _;
        producer.flush(DRAIN_TIMEOUT)
    })
    .await?;
    if let Err(err) = flushed {
        tracing::error!(cause = %err, "producer flush failed");
    }
    drop(brokers);
    admin_stop.cancel();
    if let Some(task) = admin_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(cause = %format!("{err:#}"), "admin server failed"),
            Err(err) => tracing::error!(cause = %err, "admin server task failed"),
        }
    }
    tracing::info!("stopped");
    outcome
}

/// The running stages, started and stopped to match the config in force.
struct Stages {
    bootstrap: String,
    producer: kafka::HostProducer,
    trouble: Arc<kafka::BrokerTrouble>,
    registry: registry::SharedRegistry,
    metrics: Arc<metrics::Metrics>,
    running: BTreeMap<String, RunningStage>,
    tasks: JoinSet<(u64, anyhow::Result<()>)>,
    next_id: u64,
}

struct RunningStage {
    id: u64,
    config: StageConfig,
    group: String,
    stop: CancellationToken,
}

impl Stages {
    /// Stops stages that are gone or changed and starts new or changed ones.
    /// Stages whose topics and group are unchanged keep running; their
    /// routes come from the registry, already swapped.
    async fn reconcile(&mut self, config: &LoadedConfig) -> anyhow::Result<()> {
        let kafka = &config.config.kafka;
        let wanted: BTreeMap<&str, &StageConfig> = config
            .running_stages()
            .map(|stage| (stage.name.as_str(), stage))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                wanted.get(name.as_str()).is_none_or(|stage| {
                    !same_stage(&running.config, stage) || running.group != stage.group_id(kafka)
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(running) = self.running.remove(&name) {
                tracing::info!(stage = %name, "stopping stage (removed or changed)");
                running.stop.cancel();
            }
        }
        let new: Vec<&StageConfig> = wanted
            .values()
            .filter(|stage| !self.running.contains_key(&stage.name))
            .copied()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        if kafka.topics.create {
            let mut topics: Vec<&str> = new
                .iter()
                .flat_map(|s| {
                    [s.input.as_str(), s.output.as_str(), s.dead_letter.as_str()]
                        .into_iter()
                        .chain(s.branches.values().map(String::as_str))
                })
                .collect();
            topics.sort_unstable();
            topics.dedup();
            kafka::ensure_topics(&self.bootstrap, kafka, &topics, &self.trouble).await?;
        }
        for stage_config in new {
            let lag = metrics::LagContext::new(
                self.metrics.stage(&stage_config.name),
                &stage_config.input,
                self.trouble.clone(),
            );
            let consumer = kafka::consumer(&self.bootstrap, kafka, stage_config, lag)?;
            let (producer, transaction_interval) = match kafka.delivery {
                Delivery::AtLeastOnce => (self.producer.clone(), None),
                Delivery::ExactlyOnce => (
                    kafka::transactional_producer(
                        &self.bootstrap,
                        kafka,
                        stage_config,
                        &self.trouble,
                    )?,
                    Some(Duration::from_millis(kafka.transactions.commit_interval_ms)),
                ),
            };
            let stage = Stage::new(
                stage_config.clone(),
                self.registry.clone(),
                producer,
                consumer,
                DRAIN_TIMEOUT,
                transaction_interval,
                kafka::max_record_bytes(kafka),
            );
            let stop = CancellationToken::new();
            let id = self.next_id;
            self.next_id += 1;
            let run = stage.run(stop.clone());
            self.tasks.spawn(async move { (id, run.await) });
            self.running.insert(
                stage_config.name.clone(),
                RunningStage {
                    id,
                    config: stage_config.clone(),
                    group: stage_config.group_id(kafka),
                    stop,
                },
            );
        }
        Ok(())
    }
}

/// Whether a running stage can keep its consumer for the new config.
fn same_stage(running: &StageConfig, wanted: &StageConfig) -> bool {
    running.input == wanted.input
        && running.output == wanted.output
        && running.dead_letter == wanted.dead_letter
        && running.retry == wanted.retry
        && running.branches == wanted.branches
        && running.allowed_topics == wanted.allowed_topics
        && running.parallelism == wanted.parallelism
}
