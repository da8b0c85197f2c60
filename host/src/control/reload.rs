//! Hot swapping: replaces a handler's version while the host runs, from a
//! file that changed on disk, an upload through the admin API, a rollback,
//! or a re-read of the whole config on SIGHUP.
//!
//! Every candidate is compiled, linked, initialised and self-tested off the
//! hot path; only then is the registry pointer replaced. Messages already in
//! a handler finish on the version they started with, and every message
//! taken after the store sees the new one. A rejected candidate leaves the
//! old version serving and is logged once.

pub use super::handlers::SwapError;
use super::handlers::{HandlerControl, HandlerInfo, rfc3339};
use crate::config::{ConfigError, LoadedConfig};
use crate::handlers::{
    HandlerComponent, Registry, Sandbox, SharedRegistry, handler_spec, validate, version_of,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often watched plugin files are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// How long a changed file must stay unchanged before it is read, so that a
/// file still being written is not taken.
const SETTLE: Duration = Duration::from_millis(100);

/// Told of every swap: the handler, and the version that now serves or why
/// the candidate was rejected.
pub type OnSwap = dyn Fn(&str, SwapEvent<'_>) + Send + Sync;

/// What happened to a handler's version.
#[derive(Clone, Copy)]
pub enum SwapEvent<'a> {
    /// This version now serves.
    Serving(&'a HandlerComponent),
    /// A candidate was rejected, for this reason; the old version serves.
    Rejected(&'a str),
    /// The handler is gone from the config.
    Removed,
}

/// Swaps handler versions in the shared registry.
pub struct Reloader {
    sandbox: Arc<Sandbox>,
    registry: SharedRegistry,
    config: Mutex<LoadedConfig>,
    previous: Mutex<HashMap<String, Arc<HandlerComponent>>>,
    /// Serialises swaps, so two triggers never race on the same registry.
    swapping: Mutex<()>,
    on_swap: Box<OnSwap>,
    healthy: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Reloader {
    /// A reloader for the registry built from `config`. `on_swap` is called
    /// with every version that starts serving.
    pub fn new(
        sandbox: Arc<Sandbox>,
        registry: SharedRegistry,
        config: LoadedConfig,
        on_swap: impl Fn(&str, SwapEvent<'_>) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            sandbox,
            registry,
            config: Mutex::new(config),
            previous: Mutex::default(),
            swapping: Mutex::new(()),
            on_swap: Box::new(on_swap),
            healthy: AtomicBool::new(false),
        })
    }

    /// The registry the workers read.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// The config currently in force.
    pub fn config(&self) -> LoadedConfig {
        lock(&self.config).clone()
    }

    /// The version a handler would roll back to.
    pub fn previous(&self, handler: &str) -> Option<Arc<HandlerComponent>> {
        lock(&self.previous).get(handler).cloned()
    }

    /// Validates `bytes` as the new version of `handler` and swaps it in.
    /// The same bytes as the running version change nothing.
    pub fn swap(
        &self,
        handler: &str,
        bytes: &[u8],
        source: String,
    ) -> Result<Arc<HandlerComponent>, SwapError> {
        let config = self.config();
        let plan = config
            .pipeline
            .handlers
            .get(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let _swapping = lock(&self.swapping);
        let current = self.registry.load().handler(handler).cloned();
        if let Some(current) = current
            .as_ref()
            .filter(|c| c.version() == version_of(bytes))
        {
            return Ok(current.clone());
        }
        let spec = handler_spec(plan, source);
        let candidate = validate(&self.sandbox, spec, bytes, &plan.self_test).map_err(|reason| {
            tracing::warn!(handler, cause = %reason, "new version rejected; the running version keeps serving");
            (self.on_swap)(handler, SwapEvent::Rejected(&reason));
            SwapError::Rejected(reason)
        })?;
        self.install(candidate.clone(), current);
        Ok(candidate)
    }

    /// Puts the version that served before the last swap back in service.
    pub fn rollback(&self, handler: &str) -> Result<Arc<HandlerComponent>, SwapError> {
        let _swapping = lock(&self.swapping);
        let current = self
            .registry
            .load()
            .handler(handler)
            .cloned()
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let previous = self
            .previous(handler)
            .ok_or_else(|| SwapError::NoPrevious(handler.to_string()))?;
        self.install(previous.clone(), Some(current));
        Ok(previous)
    }

    fn install(&self, component: Arc<HandlerComponent>, replaced: Option<Arc<HandlerComponent>>) {
        let next = self.registry.load().with_handler(component.clone());
        self.registry.store(Arc::new(next));
        let from = replaced.as_ref().map(|c| c.version().to_string());
        if let Some(replaced) = replaced {
            lock(&self.previous).insert(component.name().to_string(), replaced);
        }
        tracing::info!(
            handler = component.name(),
            from = from.as_deref().unwrap_or("none"),
            to = component.version(),
            source = component.source(),
            "handler swapped"
        );
        (self.on_swap)(component.name(), SwapEvent::Serving(&component));
    }

    /// Re-reads the config file: handlers are added, removed or replaced
    /// (unchanged ones keep their compiled version) and routes re-built.
    /// On any error the running config stays in force.
    pub fn reload_config(&self) -> Result<LoadedConfig, ConfigError> {
        let (path, selected) = {
            let config = lock(&self.config);
            (config.path.clone(), config.selected.clone())
        };
        let mut fresh = LoadedConfig::load(&path)?;
        fresh.selected = selected;
        let _swapping = lock(&self.swapping);
        let current = self.registry.load_full();
        let next = Registry::load(&fresh, &self.sandbox, Some(&current))?;
        let mut previous = lock(&self.previous);
        for (name, component) in next.handlers() {
            match current.handler(name) {
                Some(old) if Arc::ptr_eq(old, component) => {}
                old => {
                    if let Some(old) = old {
                        previous.insert(name.to_string(), old.clone());
                    }
                    tracing::info!(
                        handler = name,
                        to = component.version(),
                        "handler loaded from the re-read config"
                    );
                    (self.on_swap)(name, SwapEvent::Serving(component));
                }
            }
        }
        for (name, _) in current.handlers() {
            if next.handler(name).is_none() {
                previous.remove(name);
                tracing::info!(handler = name, "handler removed by the re-read config");
                (self.on_swap)(name, SwapEvent::Removed);
            }
        }
        drop(previous);
        self.registry.store(Arc::new(next));
        *lock(&self.config) = fresh.clone();
        tracing::info!(config = %path.display(), "config re-read");
        Ok(fresh)
    }

    /// The handlers whose files are watched, with their paths.
    fn watched_files(&self) -> Vec<(String, PathBuf)> {
        let config = lock(&self.config);
        config
            .pipeline
            .handlers
            .values()
            .filter(|plan| plan.watch)
            .map(|plan| (plan.name.clone(), plan.path.clone()))
            .collect()
    }

    /// Watches every handler's file (those with `watch: true`) and swaps in a
    /// new version once a changed file has settled and validates.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        struct Seen {
            stamp: (u64, Option<SystemTime>),
            changed_at: Instant,
            taken: (u64, Option<SystemTime>),
        }
        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        let mut rejected: HashMap<String, String> = HashMap::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            for (name, path) in &self.watched_files() {
                let Ok(metadata) = std::fs::metadata(path) else {
                    continue;
                };
                let stamp = (metadata.len(), metadata.modified().ok());
                let entry = seen.entry(path.clone()).or_insert(Seen {
                    stamp,
                    changed_at: Instant::now(),
                    taken: stamp,
                });
                if entry.stamp != stamp {
                    entry.stamp = stamp;
                    entry.changed_at = Instant::now();
                    continue;
                }
                if entry.taken == stamp || entry.changed_at.elapsed() < SETTLE {
                    continue;
                }
                entry.taken = stamp;
                let Ok(bytes) = std::fs::read(path) else {
                    continue;
                };
                let version = version_of(&bytes);
                if rejected.get(name) == Some(&version) {
                    continue;
                }
                let reloader = self.clone();
                let (handler, source) = (name.clone(), path.display().to_string());
                let swapped =
                    tokio::task::spawn_blocking(move || reloader.swap(&handler, &bytes, source))
                        .await;
                match swapped {
                    Ok(Ok(_)) => {
                        rejected.remove(name);
                    }
                    Ok(Err(_)) => {
                        rejected.insert(name.clone(), version);
                    }
                    Err(err) => tracing::error!(handler = %name, cause = %err, "swap task failed"),
                }
            }
        }
    }
}

impl Reloader {
    /// Marks the host healthy (all stages running) or not, for `/healthz`.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    fn info(&self, component: &HandlerComponent) -> HandlerInfo {
        HandlerInfo {
            name: component.name().to_string(),
            version: component.version().to_string(),
            source: component.source().to_string(),
            loaded_at: rfc3339(component.loaded_at()),
            size: component.size(),
            previous_version: self
                .previous(component.name())
                .map(|previous| previous.version().to_string()),
        }
    }
}

impl HandlerControl for Reloader {
    fn handlers(&self) -> Vec<HandlerInfo> {
        let registry = self.registry.load();
        registry
            .handlers()
            .map(|(_, component)| self.info(component))
            .collect()
    }

    fn upload(&self, handler: &str, bytes: Vec<u8>) -> Result<HandlerInfo, SwapError> {
        let component = self.swap(handler, &bytes, "upload".to_string())?;
        Ok(self.info(&component))
    }

    fn rollback(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
        let component = Reloader::rollback(self, handler)?;
        Ok(self.info(&component))
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
