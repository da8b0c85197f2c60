//! The supervisor: [`Host::start`] loads the handlers, connects to Kafka,
//! starts the stages, the admin port and the file watcher; [`Host::run`]
//! keeps them running until its `shutdown` completes, re-reading the config
//! on each `reloads` request (the CLI sends one per SIGHUP), then stops
//! fetching, drains, flushes and commits.

use super::admin;
use super::metrics::Metrics;
use super::reload::{Reloader, SwapEvent};
use super::stages::{DRAIN_TIMEOUT, Stages};
use super::versions::{How, VersionStore};
use crate::config::LoadedConfig;
use crate::handlers::{Registry, Sandbox};
use crate::kafka::{self, Bootstrap, Clients, HostProducer};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a started host tells its caller.
#[derive(Clone)]
pub struct Ready {
    /// Where the admin port listens, when enabled.
    pub admin: Option<SocketAddr>,
    /// The hot-swap entry point (what the admin API and SIGHUP use).
    pub reloader: Arc<Reloader>,
}

/// A started host.
pub struct Host {
    ready: Ready,
    stages: Stages,
    producer: HostProducer,
    /// Kept for its embedded broker, if any: it lives as long as the host.
    _bootstrap: Bootstrap,
    watcher_stop: CancellationToken,
    watcher: JoinHandle<()>,
    admin_stop: CancellationToken,
    admin: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Host {
    /// Loads and validates every handler, connects to Kafka (one clear error
    /// when it cannot), creates missing topics, and starts the stages, the
    /// admin port and the file watcher.
    pub async fn start(config: LoadedConfig) -> anyhow::Result<Self> {
        let pipeline = &config.pipeline;
        let sandbox = Sandbox::for_pipeline(pipeline)?;
        let registry = tokio::task::block_in_place(|| Registry::load(&config, &sandbox, None))?;
        let metrics = Metrics::new();
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
            VersionStore::new(&config.pipeline.data_dir),
            move |handler, event| match event {
                SwapEvent::Serving(component) => {
                    swaps.handler_swapped(handler, "applied");
                    swaps.set_handler_version(handler, component.version());
                }
                SwapEvent::Rejected(_) => swaps.handler_swapped(handler, "rejected"),
                SwapEvent::Removed => swaps.forget_handler(handler),
            },
        );
        tokio::task::block_in_place(|| reloader.adopt(How::Start));

        let bootstrap =
            Bootstrap::connect(&pipeline.kafka.brokers, kafka::embedded_listen()?).await?;
        let clients = Clients::new(&bootstrap, &pipeline.kafka);
        let producer = clients.producer()?;
        kafka::wait_reachable(&producer, &clients, kafka::CONNECT_WAIT).await?;
        reloader.set_topic_source(super::topics::source(clients.clone(), config.clone()));
        let mut stages = Stages::new(clients, producer.clone(), registry, metrics.clone());
        stages.reconcile(&config).await?;
        reloader.set_healthy(true);

        let admin_stop = CancellationToken::new();
        let mut admin_address = None;
        let mut admin_task = None;
        if let Some(listen) = pipeline.admin.listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the admin port {listen}"))?;
            admin_address = Some(listener.local_addr()?);
            let stopped = admin_stop.clone();
            admin_task = Some(tokio::spawn(admin::serve(
                listener,
                pipeline.admin.token.clone(),
                reloader.clone(),
                metrics.clone(),
                stages.states.clone(),
                stages.pauses.clone(),
                async move { stopped.cancelled().await },
            )));
        }
        let watcher_stop = CancellationToken::new();
        let watcher = tokio::spawn(reloader.clone().watch(watcher_stop.clone()));
        tracing::info!(config = %config.path.display(), stages = config.running_stages().count(), "stagehost running");
        Ok(Self {
            ready: Ready {
                admin: admin_address,
                reloader,
            },
            stages,
            producer,
            _bootstrap: bootstrap,
            watcher_stop,
            watcher,
            admin_stop,
            admin: admin_task,
        })
    }

    /// What the started host tells its caller.
    pub fn ready(&self) -> Ready {
        self.ready.clone()
    }

    /// Runs until `shutdown` completes, re-reading the config whenever
    /// `reloads` delivers; then stops fetching, finishes the messages already
    /// taken, flushes and commits. Errors when a stage stopped on its own.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut reloads: mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let reloader = self.ready.reloader.clone();
        let mut reloading = true;
        let mut outcome = Ok(());
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    break;
                }
                request = reloads.recv(), if reloading => {
                    if request.is_none() {
                        reloading = false;
                        continue;
                    }
                    let reloader = reloader.clone();
                    match tokio::task::spawn_blocking(move || reloader.reload_config()).await? {
                        Ok(fresh) => {
                            if let Err(err) = self.stages.reconcile(&fresh).await {
                                tracing::error!(cause = %format!("{err:#}"), "applying the re-read config failed");
                            }
                        }
                        Err(err) => tracing::error!(cause = %err, "config re-read rejected; the running config stays in force"),
                    }
                }
                Some(ended) = self.stages.tasks.join_next() => {
                    let (id, result) = ended?;
                    if self.stages.is_running(id) {
                        outcome = result.context("a stage stopped unexpectedly");
                        break;
                    }
                }
            }
        }
        self.stop(outcome).await
    }

    async fn stop(mut self, mut outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        self.ready.reloader.set_healthy(false);
        self.watcher_stop.cancel();
        self.stages.stop_all();
        while let Some(ended) = self.stages.tasks.join_next().await {
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
        let _ = self.watcher.await;
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            producer.flush(DRAIN_TIMEOUT)
        })
        .await?;
        if let Err(err) = flushed {
            tracing::error!(cause = %err, "producer flush failed");
        }
        self.admin_stop.cancel();
        if let Some(task) = self.admin {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(cause = %format!("{err:#}"), "admin server failed"),
                Err(err) => tracing::error!(cause = %err, "admin server task failed"),
            }
        }
        tracing::info!("stopped");
        outcome
    }
}
