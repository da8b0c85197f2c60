//! The live table of handler versions and stage routes, swapped whole behind
//! an atomic pointer: readers take a snapshot per message, a reload builds a
//! new table off the hot path and stores it in one step. [`Registry::load`]
//! is the one way handlers are loaded from a config: by `host run`, `host
//! check`, `host bench` and every re-read of the config. A handler on trial
//! has its [`Canary`] or [`Shadow`] here too, so a message's route and its
//! versions are chosen from one snapshot.

use super::canary::Canary;
use super::sandbox::{HandlerComponent, HandlerSpec, Sandbox, version_of};
use super::self_test::self_test;
use super::shadow::Shadow;
use crate::config::{ConfigError, FieldPath, HandlerPlan, LoadedConfig, Routing};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The registry shared by every worker.
pub type SharedRegistry = Arc<ArcSwap<Registry>>;

/// Handlers by name and routes by stage.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<HandlerComponent>>,
    routes: BTreeMap<String, Arc<Routing>>,
    canaries: BTreeMap<String, Arc<Canary>>,
    shadows: BTreeMap<String, Arc<Shadow>>,
}

impl Registry {
    /// Loads every handler in the config (compiling, linking, running its
    /// `init` and its self-test) and takes each stage's routing. A handler
    /// whose file, limits and settings match one in `reuse` keeps that
    /// compiled version. Errors name the handler's field in the config.
    pub fn load(
        config: &LoadedConfig,
        sandbox: &Arc<Sandbox>,
        reuse: Option<&Registry>,
    ) -> Result<Self, ConfigError> {
        let plans: Vec<&HandlerPlan> = config.pipeline.handlers.values().collect();
        // With nothing to reuse (a start, `host check`, `host bench`) no
        // message flows yet: handlers compile side by side, one per core.
        // A re-read compiles one at a time, leaving the cores to the messages.
        let threads = match reuse {
            None => std::thread::available_parallelism().map_or(1, usize::from),
            Some(_) => 1,
        };
        let mut loaded: Vec<Option<Result<Arc<HandlerComponent>, ConfigError>>> =
            plans.iter().map(|_| None).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.min(plans.len()).max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(plan) = plans.get(index) else {
                                return done;
                            };
                            done.push((index, load_one(config, sandbox, reuse, plan)));
                        }
                    })
                })
                .collect();
            for worker in workers {
                match worker.join() {
                    Ok(done) => {
                        for (index, outcome) in done {
                            loaded[index] = Some(outcome);
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        let mut registry = Registry::default();
        // The first error in the config's order, as a serial load would give.
        for (plan, outcome) in plans.iter().zip(loaded) {
            let component = outcome.expect("every handler was loaded")?;
            registry.handlers.insert(plan.name.clone(), component);
        }
        for stage in &config.pipeline.stages {
            registry
                .routes
                .insert(stage.name.clone(), Arc::new(stage.routing.clone()));
        }
        Ok(registry)
    }

    /// A copy of this registry with one handler replaced. A canary or a
    /// shadow of that handler ends: it was compared with the version
    /// replaced.
    pub fn with_handler(&self, component: Arc<HandlerComponent>) -> Self {
        let mut next = self.clone();
        next.canaries.remove(component.name());
        next.shadows.remove(component.name());
        next.handlers
            .insert(component.name().to_string(), component);
        next
    }

    /// A copy of this registry without one handler (and its canary or
    /// shadow).
    pub fn without_handler(&self, name: &str) -> Self {
        let mut next = self.clone();
        next.handlers.remove(name);
        next.canaries.remove(name);
        next.shadows.remove(name);
        next
    }

    /// A copy of this registry with a shadow of one of its handlers.
    pub fn with_shadow(&self, shadow: Arc<Shadow>) -> Self {
        let mut next = self.clone();
        next.shadows
            .insert(shadow.component().name().to_string(), shadow);
        next
    }

    /// A copy of this registry without a handler's shadow.
    pub fn without_shadow(&self, name: &str) -> Self {
        let mut next = self.clone();
        next.shadows.remove(name);
        next
    }

    /// The shadow of a handler, if one runs.
    pub fn shadow(&self, name: &str) -> Option<&Arc<Shadow>> {
        self.shadows.get(name)
    }

    /// Every running shadow, by handler.
    pub fn shadows(&self) -> impl Iterator<Item = (&str, &Arc<Shadow>)> {
        self.shadows
            .iter()
            .map(|(name, shadow)| (name.as_str(), shadow))
    }

    /// A copy of this registry with a canary of one of its handlers.
    pub fn with_canary(&self, canary: Arc<Canary>) -> Self {
        let mut next = self.clone();
        next.canaries
            .insert(canary.component().name().to_string(), canary);
        next
    }

    /// A copy of this registry without a handler's canary.
    pub fn without_canary(&self, name: &str) -> Self {
        let mut next = self.clone();
        next.canaries.remove(name);
        next
    }

    /// The canary of a handler, if one runs.
    pub fn canary(&self, name: &str) -> Option<&Arc<Canary>> {
        self.canaries.get(name)
    }

    /// Every running canary, by handler.
    pub fn canaries(&self) -> impl Iterator<Item = (&str, &Arc<Canary>)> {
        self.canaries
            .iter()
            .map(|(name, canary)| (name.as_str(), canary))
    }

    /// The current version of a handler.
    pub fn handler(&self, name: &str) -> Option<&Arc<HandlerComponent>> {
        self.handlers.get(name)
    }

    /// Every handler, by name.
    pub fn handlers(&self) -> impl Iterator<Item = (&str, &Arc<HandlerComponent>)> {
        self.handlers
            .iter()
            .map(|(name, component)| (name.as_str(), component))
    }

    /// A stage's routing.
    pub fn route(&self, stage: &str) -> Option<&Arc<Routing>> {
        self.routes.get(stage)
    }
}

/// Loads one handler of the config, or keeps its version in `reuse` when
/// its bytes, limits and settings are unchanged.
fn load_one(
    config: &LoadedConfig,
    sandbox: &Arc<Sandbox>,
    reuse: Option<&Registry>,
    plan: &HandlerPlan,
) -> Result<Arc<HandlerComponent>, ConfigError> {
    let field = FieldPath::default().key("handlers").key(plan.name.clone());
    let bytes = std::fs::read(&plan.path).map_err(|err| {
        config.error(
            &field.key("path"),
            format!("cannot read `{}`: {err}", plan.path.display()),
        )
    })?;
    let spec = handler_spec(plan, plan.path.display().to_string());
    let reusable = reuse
        .and_then(|old| old.handler(&plan.name))
        .filter(|old| old.version() == version_of(&bytes) && old.spec().same_settings(&spec));
    // A kept version passes the config's self-test again: a re-read config
    // applies the same rules as `host check` and a start.
    let component = match reusable {
        Some(old) => old.clone(),
        None => sandbox
            .load(spec, &bytes)
            .map_err(|err| config.error(&field.key("path"), err.to_string()))?,
    };
    self_test(&component, &plan.self_test)
        .map_err(|reason| config.error(&field.key("self_test"), reason))?;
    Ok(component)
}

/// The sandbox's description of a configured handler; `source` says where
/// its bytes came from.
pub fn handler_spec(plan: &HandlerPlan, source: String) -> HandlerSpec {
    HandlerSpec {
        name: plan.name.clone(),
        source,
        limits: plan.limits,
        settings: plan.settings.clone(),
    }
}
