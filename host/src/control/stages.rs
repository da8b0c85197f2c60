//! The running stages, started and stopped to match the config in force:
//! at start, and after every re-read of the config.

use super::metrics::Metrics;
use crate::config::{Delivery, LoadedConfig, StagePlan};
use crate::handlers::SharedRegistry;
use crate::kafka::{self, Clients, HostProducer, PauseSwitch};
use crate::pipeline::state::StageState;
use crate::pipeline::{Stage, StageParts};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a shutdown waits for outputs to be acknowledged before leaving
/// the rest uncommitted (they are consumed again on the next start).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The stages that run, and their tasks.
pub(super) struct Stages {
    clients: Clients,
    producer: HostProducer,
    registry: SharedRegistry,
    metrics: Arc<Metrics>,
    running: BTreeMap<String, RunningStage>,
    pub(super) tasks: JoinSet<(u64, anyhow::Result<()>)>,
    next_id: u64,
    /// The stateful stages' state, for the admin API.
    pub(super) states: Arc<StateViews>,
    /// Which stages are paused, for the admin API.
    pub(super) pauses: Arc<StagePauses>,
}

/// The pause switch of each stage that runs, by stage name. A stage keeps
/// its switch, and so stays paused, when a config change restarts it.
#[derive(Default)]
pub struct StagePauses(std::sync::Mutex<BTreeMap<String, Arc<PauseSwitch>>>);

impl StagePauses {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<PauseSwitch>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The switch of `stage`, made (not paused) if it has none yet.
    fn switch(&self, stage: &str) -> Arc<PauseSwitch> {
        self.lock()
            .entry(stage.to_string())
            .or_insert_with(|| Arc::new(PauseSwitch::new(false)))
            .clone()
    }

    /// Forgets a stage that no longer runs.
    fn remove(&self, stage: &str) {
        self.lock().remove(stage);
    }

    /// Pauses or resumes `stage`; `None` when no such stage runs here,
    /// otherwise whether this changed anything.
    pub fn set(&self, stage: &str, paused: bool) -> Option<bool> {
        let switch = self.lock().get(stage).cloned()?;
        Some(switch.send_if_modified(|now| std::mem::replace(now, paused) != paused))
    }

    /// The stages that are paused, by name.
    pub fn paused(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, switch)| *switch.borrow())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The state of each stateful stage that runs, by stage name (read by the
/// admin API).
#[derive(Default)]
pub struct StateViews(std::sync::Mutex<BTreeMap<String, Arc<StageState>>>);

impl StateViews {
    /// Records a stage's state (replacing an earlier one).
    pub fn insert(&self, stage: String, state: Arc<StageState>) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(stage, state);
    }

    /// The state of `stage`, if it runs here with state.
    pub fn get(&self, stage: &str) -> Option<Arc<StageState>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(stage)
            .cloned()
    }
}
struct RunningStage {
    id: u64,
    plan: StagePlan,
    stop: CancellationToken,
}

impl Stages {
    pub(super) fn new(
        clients: Clients,
        producer: HostProducer,
        registry: SharedRegistry,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            clients,
            producer,
            registry,
            metrics,
            running: BTreeMap::new(),
            tasks: JoinSet::new(),
            next_id: 0,
            states: Arc::default(),
            pauses: Arc::default(),
        }
    }

    /// Whether the task `id` is a stage that should still be running.
    pub(super) fn is_running(&self, id: u64) -> bool {
        self.running.values().any(|stage| stage.id == id)
    }

    /// Tells every stage to stop; their tasks end after draining.
    pub(super) fn stop_all(&self) {
        for stage in self.running.values() {
            stage.stop.cancel();
        }
    }

    /// Stops stages that are gone or changed and starts new or changed ones.
    /// Stages whose topics and group are unchanged keep running; their
    /// routes come from the registry, already swapped.
    pub(super) async fn reconcile(&mut self, config: &LoadedConfig) -> anyhow::Result<()> {
        let wanted: BTreeMap<&str, &StagePlan> = config
            .running_stages()
            .map(|stage| (stage.name.as_str(), stage))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|stage| !same_consumer(&running.plan, stage))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(running) = self.running.remove(&name) {
                tracing::info!(stage = %name, "stopping stage (removed or changed)");
                running.stop.cancel();
            }
            if !wanted.contains_key(name.as_str()) {
                self.pauses.remove(&name);
            }
        }
        let new: Vec<&StagePlan> = wanted
            .values()
            .filter(|stage| !self.running.contains_key(&stage.name))
            .copied()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let settings = &config.pipeline.kafka;
        if settings.topics.create {
            let mut topics: Vec<&str> = new
                .iter()
                .flat_map(|stage| {
                    std::iter::once(stage.input.as_str()).chain(stage.written_topics())
                })
                .collect();
            topics.sort_unstable();
            topics.dedup();
            kafka::ensure_topics(&self.clients, &topics).await?;
        }
        for plan in new {
            let metrics = self.metrics.stage(&plan.name);
            let lag = metrics.clone();
            let input = plan.input.clone();
            let consumer = self.clients.stage_consumer(
                plan,
                Box::new(move |statistics: &[u8]| lag.record_statistics(&input, statistics)),
                self.pauses.switch(&plan.name),
            )?;
            let (producer, transactions) = match &settings.delivery {
                Delivery::AtLeastOnce => (self.producer.clone(), None),
                Delivery::ExactlyOnce(transactions) => (
                    self.clients
                        .transactional_producer(&plan.name, &transactions.id(&plan.name))?,
                    Some(transactions.clone()),
                ),
            };
            let state = match &plan.state {
                None => None,
                Some(state_plan) => {
                    if settings.topics.create {
                        kafka::ensure_changelog(&self.clients, &state_plan.changelog, &plan.input)
                            .await?;
                    }
                    let epochs = rdkafka::consumer::Consumer::context(&consumer)
                        .epochs()
                        .clone();
                    let state = Arc::new(StageState::new(
                        &plan.name,
                        state_plan.clone(),
                        self.clients.restorer(&plan.name)?,
                        epochs,
                        metrics.clone(),
                    ));
                    self.states.insert(plan.name.clone(), state.clone());
                    Some(state)
                }
            };
            let stage = Stage::new(StageParts {
                plan: plan.clone(),
                registry: self.registry.clone(),
                producer,
                consumer,
                metrics,
                drain_timeout: DRAIN_TIMEOUT,
                transactions,
                max_record_bytes: self.clients.max_record_bytes(),
                state,
            });
            let stop = CancellationToken::new();
            let id = self.next_id;
            self.next_id += 1;
            let run = stage.run(stop.clone());
            self.tasks.spawn(async move { (id, run.await) });
            self.running.insert(
                plan.name.clone(),
                RunningStage {
                    id,
                    plan: plan.clone(),
                    stop,
                },
            );
        }
        Ok(())
    }
}

/// Whether a running stage can keep its consumer for the new plan: only its
/// routing may differ (the registry carries that).
fn same_consumer(running: &StagePlan, wanted: &StagePlan) -> bool {
    let mut wanted = wanted.clone();
    wanted.routing = running.routing.clone();
    *running == wanted
}
