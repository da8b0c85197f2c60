//! Hot swapping: replaces a handler's version while the host runs, from a
//! file that changed on disk, an upload through the admin API, a rollback
//! or a pin, or a re-read of the whole config on SIGHUP.
//!
//! Every candidate is compiled, linked, initialised and self-tested off the
//! hot path; only then is the registry pointer replaced. Messages already in
//! a handler finish on the version they started with, and every message
//! taken after the store sees the new one. A rejected candidate leaves the
//! old version serving and is logged once.
//!
//! Every version that serves is kept with its history ([`VersionStore`]):
//! a rollback goes back one step at a time, and a version an operator chose
//! (rolled back to, uploaded, pinned) stays through re-reads and restarts
//! until a new one is explicitly installed.
//!
//! A new version can also start as a canary ([`Reloader::start_canary`]) on
//! a share of the keys: the reloader's watch loop judges it by its rules and
//! promotes it or rolls it back by itself, and an operator can do either
//! first. Or it can start as a shadow ([`Reloader::start_shadow`]), which
//! runs beside the serving version on every message and is only compared,
//! until an operator promotes or discards it. Installing another version of
//! the handler ends its canary or shadow.

use super::handlers::{HandlerControl, HandlerInfo, rfc3339};
pub use super::handlers::{SwapError, TopicInfo};
use super::versions::{History, How, Pin, Served, VersionStore};
use crate::config::{ConfigError, LoadedConfig};
use crate::handlers::canary::{Canary, CanaryReport, CanaryRules, Verdict};
use crate::handlers::sandbox::RecentLine;
use crate::handlers::shadow::{Shadow, ShadowReport};
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
    /// The handler is gone from the registry.
    Removed,
}

/// Where a stage's input stands, for `GET /topics`.
pub type TopicSource = dyn Fn() -> Result<Vec<TopicInfo>, String> + Send + Sync;

/// Swaps handler versions in the shared registry.
pub struct Reloader {
    sandbox: Arc<Sandbox>,
    registry: SharedRegistry,
    config: Mutex<LoadedConfig>,
    versions: VersionStore,
    /// Per handler, the version last read from its file.
    file_versions: Mutex<HashMap<String, String>>,
    /// Serialises swaps, so two triggers never race on the same registry.
    swapping: Mutex<()>,
    on_swap: Box<OnSwap>,
    healthy: AtomicBool,
    topics: Mutex<Option<Arc<TopicSource>>>,
    /// Per handler, its last canary that ended, and how.
    ended_canaries: Mutex<HashMap<String, CanaryReport>>,
    /// Per handler, its last shadow that ended, and how.
    ended_shadows: Mutex<HashMap<String, ShadowReport>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

impl Reloader {
    /// A reloader for the registry built from `config`, keeping versions in
    /// `versions`. `on_swap` is called with every version that starts
    /// serving. Call [`Reloader::adopt`] once before serving.
    pub fn new(
        sandbox: Arc<Sandbox>,
        registry: SharedRegistry,
        config: LoadedConfig,
        versions: VersionStore,
        on_swap: impl Fn(&str, SwapEvent<'_>) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            sandbox,
            registry,
            config: Mutex::new(config),
            versions,
            file_versions: Mutex::default(),
            swapping: Mutex::new(()),
            on_swap: Box::new(on_swap),
            healthy: AtomicBool::new(false),
            topics: Mutex::new(None),
            ended_canaries: Mutex::default(),
            ended_shadows: Mutex::default(),
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

    /// Where `GET /topics` gets its answer.
    pub fn set_topic_source(&self, source: Arc<TopicSource>) {
        *lock(&self.topics) = Some(source);
    }

    /// Takes the registry as loaded from the files (at start, or after a
    /// re-read) into the version history, and puts each pinned version back
    /// in service: `how` says why the file versions serve.
    pub fn adopt(&self, how: How) {
        let _swapping = lock(&self.swapping);
        let config = self.config();
        let registry = self.registry.load_full();
        for (name, component) in registry.handlers() {
            let Some(plan) = config.pipeline.handlers.get(name) else {
                continue;
            };
            let file_version = component.version().to_string();
            lock(&self.file_versions).insert(name.to_string(), file_version.clone());
            let mut history = self.versions.history(name);
            if let Ok(bytes) = std::fs::read(&plan.path)
                && version_of(&bytes) == file_version
            {
                self.versions.keep(name, &file_version, &bytes);
            }
            match history.pin.clone() {
                Some(pin) if pin.file_version.as_deref() == Some(&file_version) => {
                    if pin.version != file_version {
                        self.restore_pinned(name, &pin, &mut history);
                    }
                }
                Some(pin) => {
                    tracing::info!(
                        handler = name,
                        pinned = %pin.version,
                        file = %file_version,
                        "the handler's file changed since its version was pinned: the file's version serves"
                    );
                    history.pin = None;
                    self.record(&mut history, component, how);
                }
                None => self.record(&mut history, component, how),
            }
            self.versions.save(name, &history);
        }
    }

    /// Serves a pinned version again instead of the file's.
    fn restore_pinned(&self, handler: &str, pin: &Pin, history: &mut History) {
        let loaded = self.load_kept(handler, &pin.version, history);
        match loaded {
            Ok(component) => {
                let replaced = self.registry.load().handler(handler).cloned();
                self.put_in_service(
                    component.clone(),
                    replaced.as_deref(),
                    "pinned version kept",
                );
                history.record(served(&component, How::Pinned));
            }
            Err(reason) => {
                tracing::warn!(handler, pinned = %pin.version, cause = %reason, "the pinned version cannot serve; the file's version does");
                history.pin = None;
            }
        }
    }

    /// Compiles and validates a kept version.
    fn load_kept(
        &self,
        handler: &str,
        version: &str,
        history: &History,
    ) -> Result<Arc<HandlerComponent>, String> {
        let config = self.config();
        let plan = config
            .pipeline
            .handlers
            .get(handler)
            .ok_or_else(|| format!("unknown handler `{handler}`"))?;
        let (bytes, path) = self
            .versions
            .bytes(handler, version)
            .ok_or_else(|| format!("version {version} of `{handler}` is not kept on disk"))?;
        let origin = history.first_source(version).unwrap_or("unknown");
        let source = format!("{} (kept; first from {origin})", path.display());
        validate(
            &self.sandbox,
            handler_spec(plan, source),
            &bytes,
            &plan.self_test,
        )
    }

    fn record(&self, history: &mut History, component: &HandlerComponent, how: How) {
        history.record(served(component, how));
    }

    /// Validates `bytes` as the new version of `handler` and swaps it in,
    /// as an upload: it stays until the file changes or another version is
    /// installed. The same bytes as the running version change nothing.
    pub fn swap(
        &self,
        handler: &str,
        bytes: &[u8],
        source: String,
    ) -> Result<Arc<HandlerComponent>, SwapError> {
        self.refuse_during_trial(handler, "upload a new version")?;
        self.install(handler, bytes, source, How::Upload)
    }

    /// An operator's swap (an upload, a pin, another trial) while a canary
    /// or a shadow of the handler runs is refused: it would end the trial
    /// without a verdict.
    fn refuse_during_trial(&self, handler: &str, what: &str) -> Result<(), SwapError> {
        let registry = self.registry.load();
        if let Some(canary) = registry.canary(handler) {
            return Err(SwapError::Conflict(format!(
                "a canary of `{handler}` already runs (version {} on {}% of the keys); promote or roll it back before you {what}",
                canary.component().version(),
                canary.percent()
            )));
        }
        if let Some(shadow) = registry.shadow(handler) {
            return Err(SwapError::Conflict(format!(
                "a shadow of `{handler}` already runs (version {}); promote or discard it before you {what}",
                shadow.component().version()
            )));
        }
        Ok(())
    }

    /// Validates `bytes` as a new version of the serving `handler` off the
    /// hot path, for a canary or a shadow: the serving version and the
    /// candidate. Refused while another trial runs, or when the bytes are
    /// the serving version.
    fn trial_candidate(
        &self,
        handler: &str,
        bytes: &[u8],
        trial: &str,
    ) -> Result<(Arc<HandlerComponent>, Arc<HandlerComponent>), SwapError> {
        let config = self.config();
        let plan = config
            .pipeline
            .handlers
            .get(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let stable = self
            .registry
            .load()
            .handler(handler)
            .cloned()
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        self.refuse_during_trial(handler, &format!("start a {trial}"))?;
        let version = version_of(bytes);
        if version == stable.version() {
            return Err(SwapError::Conflict(format!(
                "version {version} already serves `{handler}`"
            )));
        }
        let candidate = validate(
            &self.sandbox,
            handler_spec(plan, format!("upload ({trial})")),
            bytes,
            &plan.self_test,
        )
        .map_err(|reason| {
            tracing::warn!(handler, cause = %reason, "{trial} rejected; the running version keeps serving");
            (self.on_swap)(handler, SwapEvent::Rejected(&reason));
            SwapError::Rejected(reason)
        })?;
        self.versions.keep(handler, &version, bytes);
        Ok((stable, candidate))
    }

    /// Validates `bytes` off the hot path and starts them as a shadow of
    /// `handler`: it runs on a copy of every message, and what it makes is
    /// compared with the serving version's, never produced.
    pub fn start_shadow(&self, handler: &str, bytes: &[u8]) -> Result<Arc<Shadow>, SwapError> {
        let _swapping = lock(&self.swapping);
        let (stable, candidate) = self.trial_candidate(handler, bytes, "shadow")?;
        let shadow = Arc::new(Shadow::new(candidate, stable.version().to_string()));
        let registry = self.registry.load_full();
        self.registry
            .store(Arc::new(registry.with_shadow(shadow.clone())));
        tracing::info!(
            handler,
            serving = stable.version(),
            shadow = shadow.component().version(),
            "shadow started"
        );
        Ok(shadow)
    }

    /// Ends the running shadow of `handler`; `None` when none runs.
    fn end_running_shadow(&self, handler: &str, why: &str) -> Option<Arc<HandlerComponent>> {
        let registry = self.registry.load_full();
        let shadow = registry.shadow(handler)?.clone();
        self.registry
            .store(Arc::new(registry.without_shadow(handler)));
        self.end_shadow(handler, &shadow, format!("discarded {why}"));
        registry.handler(handler).cloned()
    }

    /// Keeps a shadow's comparison with how it ended, and logs it.
    fn end_shadow(&self, handler: &str, shadow: &Shadow, outcome: String) {
        let mut report = shadow.report();
        tracing::info!(
            handler,
            shadow = %report.version,
            agreements = report.agreements,
            differences = report.differences,
            "shadow {outcome}"
        );
        report.outcome = Some(outcome);
        lock(&self.ended_shadows).insert(handler.to_string(), report);
    }

    /// The handler's running shadow, or else its last one.
    pub fn shadow_report(&self, handler: &str) -> Result<ShadowReport, SwapError> {
        let registry = self.registry.load();
        registry
            .handler(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        match registry.shadow(handler) {
            Some(shadow) => Ok(shadow.report()),
            None => lock(&self.ended_shadows)
                .get(handler)
                .cloned()
                .ok_or_else(|| {
                    SwapError::NotFound(format!("handler `{handler}` has had no shadow"))
                }),
        }
    }

    /// Validates `bytes` off the hot path and starts them as a canary of
    /// `handler` on `percent` (1-99) of its keys, judged by `rules`, while
    /// the serving version keeps the rest. Refused when a canary already
    /// runs or the bytes are the serving version.
    pub fn start_canary(
        &self,
        handler: &str,
        bytes: &[u8],
        percent: i64,
        rules: CanaryRules,
    ) -> Result<Arc<Canary>, SwapError> {
        let percent = u8::try_from(percent)
            .ok()
            .filter(|percent| (1..=99).contains(percent))
            .ok_or_else(|| {
                SwapError::Invalid(format!(
                    "a canary takes 1-99 percent of the keys, not {percent}"
                ))
            })?;
        if !(0.0..=100.0).contains(&rules.margin_percent) {
            return Err(SwapError::Invalid(format!(
                "the canary's margin is 0-100 percentage points, not {}",
                rules.margin_percent
            )));
        }
        let _swapping = lock(&self.swapping);
        let (stable, candidate) = self.trial_candidate(handler, bytes, "canary")?;
        let version = candidate.version().to_string();
        let registry = self.registry.load_full();
        let canary = Arc::new(Canary::new(
            candidate,
            stable.version().to_string(),
            percent,
            rules,
        ));
        self.registry
            .store(Arc::new(registry.with_canary(canary.clone())));
        tracing::info!(
            handler,
            stable = stable.version(),
            canary = version,
            percent,
            "canary started"
        );
        Ok(canary)
    }

    /// Makes the running canary or shadow of `handler` its serving version
    /// (pinned, as an upload is); `why` is logged and kept with the trial's
    /// counts.
    pub fn promote(&self, handler: &str, why: &str) -> Result<Arc<HandlerComponent>, SwapError> {
        let _swapping = lock(&self.swapping);
        self.promote_now(handler, why)
    }

    /// [`Reloader::promote`] with the swap lock held.
    fn promote_now(&self, handler: &str, why: &str) -> Result<Arc<HandlerComponent>, SwapError> {
        let registry = self.registry.load_full();
        let stable = registry
            .handler(handler)
            .cloned()
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let component = match (registry.canary(handler), registry.shadow(handler)) {
            (Some(canary), _) => {
                self.end_canary(handler, canary, format!("promoted {why}"));
                canary.component().clone()
            }
            (None, Some(shadow)) => {
                self.end_shadow(handler, shadow, format!("promoted {why}"));
                shadow.component().clone()
            }
            (None, None) => {
                return Err(SwapError::Conflict(format!(
                    "handler `{handler}` has no canary or shadow to promote"
                )));
            }
        };
        let mut history = self.versions.history(handler);
        history.pin = Some(Pin {
            version: component.version().to_string(),
            file_version: lock(&self.file_versions).get(handler).cloned(),
            at: now(),
        });
        history.record(served(&component, How::Promote));
        self.versions.save(handler, &history);
        self.put_in_service(component.clone(), Some(&stable), "promoted");
        Ok(component)
    }

    /// Ends the running canary of `handler`, leaving the stable version
    /// serving all keys. `None` when no canary runs.
    fn roll_back_canary(&self, handler: &str, why: &str) -> Option<Arc<HandlerComponent>> {
        let registry = self.registry.load_full();
        let canary = registry.canary(handler)?.clone();
        self.registry
            .store(Arc::new(registry.without_canary(handler)));
        self.end_canary(handler, &canary, format!("rolled back {why}"));
        registry.handler(handler).cloned()
    }

    /// Keeps a canary's counts with how it ended, and logs it.
    fn end_canary(&self, handler: &str, canary: &Canary, outcome: String) {
        let mut report = canary.report();
        tracing::info!(
            handler,
            canary = %report.version,
            stable = %report.stable_version,
            messages = report.messages,
            dead_letters = report.dead_letters,
            stable_messages = report.stable_messages,
            stable_dead_letters = report.stable_dead_letters,
            "canary {outcome}"
        );
        report.outcome = Some(outcome);
        lock(&self.ended_canaries).insert(handler.to_string(), report);
    }

    /// Promotes or rolls back each running canary its rules have decided.
    pub fn judge_canaries(&self) {
        let registry = self.registry.load_full();
        if registry.canaries().next().is_none() {
            return;
        }
        // Called on the async runtime: a swap in progress (a compile) holds
        // the lock, and the verdict waits for the next round.
        let Ok(_swapping) = self.swapping.try_lock() else {
            return;
        };
        for (handler, canary) in registry.canaries() {
            let verdict = canary.verdict();
            let current = self.registry.load();
            if !current
                .canary(handler)
                .is_some_and(|now| Arc::ptr_eq(now, canary))
            {
                continue;
            }
            match verdict {
                None => {}
                Some(Verdict::RollBack(reason)) => {
                    self.roll_back_canary(handler, &format!("automatically: {reason}"));
                }
                Some(Verdict::Promote(reason)) => {
                    if let Err(err) = self.promote_now(handler, &format!("automatically: {reason}"))
                    {
                        tracing::warn!(handler, cause = %err, "the canary could not be promoted");
                    }
                }
            }
        }
    }

    /// [`Reloader::swap`] for a new version that came as `how` (a file
    /// change or an upload).
    pub fn install(
        &self,
        handler: &str,
        bytes: &[u8],
        source: String,
        how: How,
    ) -> Result<Arc<HandlerComponent>, SwapError> {
        let config = self.config();
        let plan = config
            .pipeline
            .handlers
            .get(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let _swapping = lock(&self.swapping);
        let version = version_of(bytes);
        if how == How::File {
            lock(&self.file_versions).insert(handler.to_string(), version.clone());
        }
        let mut history = self.versions.history(handler);
        let current = self.registry.load().handler(handler).cloned();
        if let Some(current) = current.as_ref().filter(|c| c.version() == version) {
            if how == How::File && history.pin.take().is_some() {
                self.versions.save(handler, &history);
            }
            return Ok(current.clone());
        }
        let started = Instant::now();
        let candidate = validate(
            &self.sandbox,
            handler_spec(plan, source),
            bytes,
            &plan.self_test,
        )
        .map_err(|reason| {
            tracing::warn!(handler, cause = %reason, elapsed_ms = started.elapsed().as_millis() as u64, "new version rejected; the running version keeps serving");
            (self.on_swap)(handler, SwapEvent::Rejected(&reason));
            SwapError::Rejected(reason)
        })?;
        self.versions.keep(handler, &version, bytes);
        history.pin = match how {
            // An upload is not what the file holds: it stays until the file
            // changes or another version is installed.
            How::Upload => Some(Pin {
                version: version.clone(),
                file_version: lock(&self.file_versions).get(handler).cloned(),
                at: now(),
            }),
            _ => None,
        };
        history.record(served(&candidate, how));
        self.versions.save(handler, &history);
        self.put_in_service(candidate.clone(), current.as_deref(), "handler swapped");
        tracing::info!(
            handler,
            version = candidate.version(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "new version validated and serving"
        );
        Ok(candidate)
    }

    /// Puts the version that served before the current one back in service,
    /// one step further back at each call, and pins it. While a canary of
    /// the handler runs, ends the canary instead: the stable version serves
    /// every key again.
    pub fn rollback(&self, handler: &str) -> Result<Arc<HandlerComponent>, SwapError> {
        let _swapping = lock(&self.swapping);
        self.registry
            .load()
            .handler(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let ended = self
            .roll_back_canary(handler, "by an operator")
            .or_else(|| self.end_running_shadow(handler, "by an operator"));
        if let Some(stable) = ended {
            return Ok(stable);
        }
        let mut history = self.versions.history(handler);
        let mut walked = history.clone();
        let target = walked
            .roll_back()
            .ok_or_else(|| SwapError::NoPrevious(handler.to_string()))?;
        let component = self
            .load_kept(handler, &target, &history)
            .map_err(SwapError::Rejected)?;
        history = walked;
        self.choose(handler, component, &mut history, How::Rollback)
    }

    /// Serves `version` (a kept one; the serving one when `None`) and pins
    /// it, so that re-reads and restarts keep it.
    pub fn pin(
        &self,
        handler: &str,
        version: Option<&str>,
    ) -> Result<Arc<HandlerComponent>, SwapError> {
        self.refuse_during_trial(handler, "pin a version")?;
        let _swapping = lock(&self.swapping);
        let current = self
            .registry
            .load()
            .handler(handler)
            .cloned()
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let mut history = self.versions.history(handler);
        let component = match version {
            None => current,
            Some(version) if version == current.version() => current,
            Some(version) => self
                .load_kept(handler, version, &history)
                .map_err(SwapError::Rejected)?,
        };
        self.choose(handler, component, &mut history, How::Pin)
    }

    fn choose(
        &self,
        handler: &str,
        component: Arc<HandlerComponent>,
        history: &mut History,
        how: How,
    ) -> Result<Arc<HandlerComponent>, SwapError> {
        history.pin = Some(Pin {
            version: component.version().to_string(),
            file_version: lock(&self.file_versions).get(handler).cloned(),
            at: now(),
        });
        history.record(served(&component, how));
        self.versions.save(handler, history);
        let replaced = self.registry.load().handler(handler).cloned();
        if replaced
            .as_ref()
            .is_none_or(|old| !Arc::ptr_eq(old, &component))
        {
            let why = match how {
                How::Rollback => "handler rolled back",
                _ => "handler pinned",
            };
            self.put_in_service(component.clone(), replaced.as_deref(), why);
        }
        Ok(component)
    }

    /// Takes a handler no route uses out of service. It comes back with a
    /// re-read config that still lists it.
    pub fn remove(&self, handler: &str) -> Result<(), SwapError> {
        let _swapping = lock(&self.swapping);
        let config = self.config();
        let registry = self.registry.load_full();
        registry
            .handler(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let users: Vec<String> = config
            .pipeline
            .stages
            .iter()
            .filter(|stage| stage.routing.handlers().any(|name| name == handler))
            .map(|stage| stage.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(SwapError::InUse(handler.to_string(), users.join(", ")));
        }
        self.registry
            .store(Arc::new(registry.without_handler(handler)));
        tracing::info!(handler, "handler removed");
        (self.on_swap)(handler, SwapEvent::Removed);
        Ok(())
    }

    fn put_in_service(
        &self,
        component: Arc<HandlerComponent>,
        replaced: Option<&HandlerComponent>,
        why: &'static str,
    ) {
        let current = self.registry.load_full();
        if let Some(canary) = current.canary(component.name())
            && !Arc::ptr_eq(canary.component(), &component)
        {
            self.end_canary(
                component.name(),
                canary,
                format!(
                    "ended: version {} was installed ({why})",
                    component.version()
                ),
            );
        }
        if let Some(shadow) = current.shadow(component.name())
            && !Arc::ptr_eq(shadow.component(), &component)
        {
            self.end_shadow(
                component.name(),
                shadow,
                format!(
                    "ended: version {} was installed ({why})",
                    component.version()
                ),
            );
        }
        let next = current.with_handler(component.clone());
        self.registry.store(Arc::new(next));
        tracing::info!(
            handler = component.name(),
            from = replaced.map(|c| c.version()).unwrap_or("none"),
            to = component.version(),
            source = component.source(),
            "{why}"
        );
        (self.on_swap)(component.name(), SwapEvent::Serving(&component));
    }

    /// Re-reads the config file: handlers are added, removed or replaced
    /// (unchanged ones keep their compiled version and pass their self-test
    /// again), routes re-built, and pinned versions kept. On any error the
    /// running config stays in force.
    pub fn reload_config(&self) -> Result<LoadedConfig, ConfigError> {
        let (path, selected) = {
            let config = lock(&self.config);
            (config.path.clone(), config.selected.clone())
        };
        let mut fresh = LoadedConfig::load(&path)?;
        fresh.selected = selected;
        {
            let _swapping = lock(&self.swapping);
            let current = self.registry.load_full();
            let mut next = Registry::load(&fresh, &self.sandbox, Some(&current))?;
            // A pinned version keeps serving; `adopt_reloaded` decides below
            // whether the file changed since the pin.
            for (name, old) in current.handlers() {
                let pinned = self
                    .versions
                    .history(name)
                    .pin
                    .is_some_and(|pin| pin.version == old.version());
                if pinned && next.handler(name).is_some() {
                    next = next.with_handler(old.clone());
                }
            }
            for (name, component) in next.handlers() {
                match current.handler(name) {
                    Some(old) if Arc::ptr_eq(old, component) => {}
                    old => {
                        tracing::info!(
                            handler = name,
                            from = old.map(|c| c.version()).unwrap_or("none"),
                            to = component.version(),
                            "handler loaded from the re-read config"
                        );
                        (self.on_swap)(name, SwapEvent::Serving(component));
                    }
                }
            }
            // A canary runs on while its stable version does.
            for (name, canary) in current.canaries() {
                match (current.handler(name), next.handler(name)) {
                    (Some(old), Some(new)) if Arc::ptr_eq(old, new) => {
                        next = next.with_canary(canary.clone());
                    }
                    _ => self.end_canary(
                        name,
                        canary,
                        "ended: the re-read config changed the handler".to_string(),
                    ),
                }
            }
            for (name, shadow) in current.shadows() {
                match (current.handler(name), next.handler(name)) {
                    (Some(old), Some(new)) if Arc::ptr_eq(old, new) => {
                        next = next.with_shadow(shadow.clone());
                    }
                    _ => self.end_shadow(
                        name,
                        shadow,
                        "ended: the re-read config changed the handler".to_string(),
                    ),
                }
            }
            for (name, _) in current.handlers() {
                if next.handler(name).is_none() {
                    tracing::info!(handler = name, "handler removed by the re-read config");
                    (self.on_swap)(name, SwapEvent::Removed);
                }
            }
            self.registry.store(Arc::new(next));
            *lock(&self.config) = fresh.clone();
        }
        self.adopt_reloaded(&fresh);
        tracing::info!(config = %path.display(), "config re-read");
        Ok(fresh)
    }

    /// After a re-read: the file versions of pinned handlers decide whether
    /// their pins hold; the others' new versions go into the history.
    fn adopt_reloaded(&self, fresh: &LoadedConfig) {
        let _swapping = lock(&self.swapping);
        let registry = self.registry.load_full();
        for (name, plan) in &fresh.pipeline.handlers {
            let Some(serving) = registry.handler(name) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&plan.path) else {
                continue;
            };
            let file_version = version_of(&bytes);
            lock(&self.file_versions).insert(name.clone(), file_version.clone());
            let mut history = self.versions.history(name);
            let pin_holds = history
                .pin
                .as_ref()
                .is_some_and(|pin| pin.file_version.as_deref() == Some(&file_version));
            if history.pin.is_some() && !pin_holds {
                // The file changed since the pin: the file's version wins.
                history.pin = None;
                if serving.version() != file_version {
                    let spec = handler_spec(plan, plan.path.display().to_string());
                    match validate(&self.sandbox, spec, &bytes, &plan.self_test) {
                        Ok(component) => {
                            self.versions.keep(name, &file_version, &bytes);
                            self.put_in_service(
                                component.clone(),
                                Some(serving),
                                "the file changed since the pin; its version serves",
                            );
                            history.record(served(&component, How::Config));
                        }
                        Err(reason) => {
                            tracing::warn!(handler = %name, cause = %reason, "the file's new version is rejected; the pinned version keeps serving");
                        }
                    }
                }
            } else if !pin_holds
                && history.stack.last().map(String::as_str) != Some(serving.version())
            {
                self.versions.keep(name, serving.version(), &bytes);
                history.record(served(serving, How::Config));
            }
            self.versions.save(name, &history);
        }
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
    /// new version once a changed file has settled and validates. The
    /// baseline is the bytes the host loaded, so a file changed at any
    /// moment after it was read, start-up included, is picked up.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        struct Seen {
            stamp: (u64, Option<SystemTime>),
            changed_at: Instant,
            /// The stamp whose bytes were compared; `None` at first sight.
            taken: Option<(u64, Option<SystemTime>)>,
        }
        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        let mut rejected: HashMap<String, String> = HashMap::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            self.judge_canaries();
            for (name, path) in &self.watched_files() {
                let Ok(metadata) = std::fs::metadata(path) else {
                    continue;
                };
                let stamp = (metadata.len(), metadata.modified().ok());
                let entry = seen.entry(path.clone()).or_insert(Seen {
                    stamp,
                    changed_at: Instant::now() - SETTLE,
                    taken: None,
                });
                if entry.stamp != stamp {
                    entry.stamp = stamp;
                    entry.changed_at = Instant::now();
                    continue;
                }
                if entry.taken == Some(stamp) || entry.changed_at.elapsed() < SETTLE {
                    continue;
                }
                entry.taken = Some(stamp);
                let Ok(bytes) = std::fs::read(path) else {
                    continue;
                };
                let version = version_of(&bytes);
                let known = lock(&self.file_versions).get(name).cloned();
                if known.as_deref() == Some(&version) || rejected.get(name) == Some(&version) {
                    continue;
                }
                tracing::info!(handler = %name, path = %path.display(), version, size = bytes.len(), "handler file changed; compiling and validating the new version");
                let reloader = self.clone();
                let (handler, source) = (name.clone(), path.display().to_string());
                let swapped = tokio::task::spawn_blocking(move || {
                    reloader.install(&handler, &bytes, source, How::File)
                })
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

fn served(component: &HandlerComponent, how: How) -> Served {
    Served {
        version: component.version().to_string(),
        source: component.source().to_string(),
        at: now(),
        how,
    }
}

impl Reloader {
    /// Marks the host healthy (all stages running) or not, for `/healthz`.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    fn info(&self, component: &HandlerComponent) -> HandlerInfo {
        let name = component.name();
        let history = self.versions.history(name);
        let stack = &history.stack;
        HandlerInfo {
            name: name.to_string(),
            version: component.version().to_string(),
            source: component.source().to_string(),
            loaded_at: rfc3339(component.loaded_at()),
            size: component.size(),
            previous_version: stack
                .len()
                .checked_sub(2)
                .and_then(|index| stack.get(index))
                .cloned(),
            pinned: history.pin.map(|pin| pin.version),
            file_version: lock(&self.file_versions).get(name).cloned(),
            history: history
                .served
                .into_iter()
                .map(|served| serde_json::to_value(served).unwrap_or_default())
                .collect(),
            canary: self
                .registry
                .load()
                .canary(name)
                .map(|canary| canary.report()),
            last_canary: lock(&self.ended_canaries).get(name).cloned(),
            shadow: self.registry.load().shadow(name).map(|shadow| {
                let mut report = shadow.report();
                // The differences themselves are at `GET /handlers/NAME/shadow`.
                report.recent_differences.clear();
                report
            }),
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

    fn canary(
        &self,
        handler: &str,
        bytes: Vec<u8>,
        percent: i64,
        rules: CanaryRules,
    ) -> Result<HandlerInfo, SwapError> {
        self.start_canary(handler, &bytes, percent, rules)?;
        let serving = self.registry.load().handler(handler).cloned();
        serving
            .map(|component| self.info(&component))
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))
    }

    fn promote(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
        let component = Reloader::promote(self, handler, "by an operator")?;
        Ok(self.info(&component))
    }

    fn shadow(&self, handler: &str, bytes: Vec<u8>) -> Result<HandlerInfo, SwapError> {
        self.start_shadow(handler, &bytes)?;
        let serving = self.registry.load().handler(handler).cloned();
        serving
            .map(|component| self.info(&component))
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))
    }

    fn shadow_report(&self, handler: &str) -> Result<ShadowReport, SwapError> {
        Reloader::shadow_report(self, handler)
    }

    fn discard_shadow(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
        let _swapping = lock(&self.swapping);
        self.registry
            .load()
            .handler(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        let serving = self
            .end_running_shadow(handler, "by an operator")
            .ok_or_else(|| {
                SwapError::Conflict(format!("handler `{handler}` has no shadow to discard"))
            })?;
        Ok(self.info(&serving))
    }

    fn pin(&self, handler: &str, version: Option<&str>) -> Result<HandlerInfo, SwapError> {
        let component = Reloader::pin(self, handler, version)?;
        Ok(self.info(&component))
    }

    fn delete(&self, handler: &str) -> Result<(), SwapError> {
        self.remove(handler)
    }

    fn logs(&self, handler: &str, after: u64) -> Result<Vec<RecentLine>, SwapError> {
        self.registry
            .load()
            .handler(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        Ok(self
            .sandbox
            .log_budget(handler)
            .map(|budget| budget.recent(after))
            .unwrap_or_default())
    }

    fn trials(&self) -> Vec<super::handlers::HandlerTrials> {
        let registry = self.registry.load();
        registry
            .handlers()
            .filter_map(|(name, _)| {
                let canary = registry.canary(name).map(|canary| canary.report());
                let shadow = registry.shadow(name).map(|shadow| shadow.report());
                (canary.is_some() || shadow.is_some()).then(|| super::handlers::HandlerTrials {
                    name: name.to_string(),
                    canary,
                    shadow,
                })
            })
            .collect()
    }

    fn topics(&self) -> Result<Vec<TopicInfo>, String> {
        let source = lock(&self.topics).clone();
        match source {
            Some(source) => source(),
            None => Err("the host has no Kafka clients yet".into()),
        }
    }

    fn config_in_force(&self) -> Option<LoadedConfig> {
        Some(self.config())
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
