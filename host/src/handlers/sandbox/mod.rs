//! The wasm sandbox: one wasmtime `Engine` for the process, a compiled and
//! pre-linked component per handler version, and reusable instances with
//! per-handler limits on memory, wall time and (optionally) fuel.
//!
//! Guest code runs in wasmtime's async mode: a call is a future polled on
//! the caller's tokio worker, and a call still running at an epoch tick
//! yields to the runtime, so a slow handler never holds a worker thread for
//! longer than one tick. Synchronous callers (validation, `host check`) use
//! [`run_guest`].
//!
//! WASI is linked with no capabilities: no preopened directories, no
//! environment, no arguments, and every socket address denied. The guest's
//! stdout and stderr become log lines tagged with the handler's name.

mod guest_output;

pub use guest_output::{CallPlace, LogBudget, LogBudgets, RecentLine};

use super::bindings::{
    self, HandlerError, LEGACY_LOG, LEGACY_TYPES, Level, Message, MessageRef, Output, STATE,
    StageHandler,
};
use super::failure::HandlerFailure;
use super::state::StateAccess;
use crate::config::{Limits, Pipeline};
use guest_output::{GuestOutput, Stream};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{
    Component, Func, HasSelf, InstancePre, Linker, ResourceTable, TypedFunc,
};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How often the engine's epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Epoch ticks between looks at the guest-output budgets (100 ms).
const SUMMARY_TICKS: u32 = 20;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component wasmtime can compile.
    #[error("handler `{handler}`: not a valid WebAssembly component: {reason}")]
    Invalid {
        /// Handler name.
        handler: String,
        /// What the compiler said.
        reason: String,
    },
    /// The component does not implement `stagehost:handler/stage-handler`.
    #[error(
        "handler `{handler}`: does not implement the stagehost:handler/stage-handler world: {reason}"
    )]
    WrongWorld {
        /// Handler name.
        handler: String,
        /// What is missing or mismatched.
        reason: String,
    },
    /// The component's `init` rejected its settings, or trapped.
    #[error("handler `{handler}`: init failed: {reason}")]
    Init {
        /// Handler name.
        handler: String,
        /// The handler's reason.
        reason: String,
    },
}

/// The on-disk cache of compiled components: a component compiled once
/// (at a start, a swap or a rollback) loads again in milliseconds instead of
/// being compiled anew, which for a large component (a Python or JavaScript
/// handler) takes many seconds. `STAGEHOST_COMPILE_CACHE` names its
/// directory, or `off` turns it off; the default is wasmtime's own cache
/// directory (`~/.cache/wasmtime`).
fn compile_cache() -> Option<wasmtime::Cache> {
    let mut settings = wasmtime::CacheConfig::new();
    match std::env::var("STAGEHOST_COMPILE_CACHE") {
        Ok(value) if value == "off" => return None,
        Ok(directory) if !directory.is_empty() => {
            settings.with_directory(directory);
        }
        _ => {}
    }
    match wasmtime::Cache::new(settings) {
        Ok(cache) => Some(cache),
        Err(err) => {
            tracing::warn!(cause = %format!("{err:#}"), "no compile cache; every load compiles");
            None
        }
    }
}

/// `STAGEHOST_PROFILE=perfmap` (or `jitdump`) makes guest code visible to
/// `perf`: wasmtime writes `/tmp/perf-PID.map` (or a jitdump file) naming
/// each compiled function. Off by default.
fn profiler() -> anyhow::Result<Option<wasmtime::ProfilingStrategy>> {
    match std::env::var("STAGEHOST_PROFILE").as_deref() {
        Err(_) | Ok("" | "off") => Ok(None),
        Ok("perfmap") => Ok(Some(wasmtime::ProfilingStrategy::PerfMap)),
        Ok("jitdump") => Ok(Some(wasmtime::ProfilingStrategy::JitDump)),
        Ok(other) => anyhow::bail!("STAGEHOST_PROFILE={other}: expected perfmap, jitdump or off"),
    }
}

/// The process-wide engine and linker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    fuel_enabled: bool,
    ticker_stop: Arc<AtomicBool>,
    log_budgets: Arc<LogBudgets>,
}

impl Sandbox {
    /// Creates the engine. `fuel` turns on fuel metering for every handler
    /// (those without a fuel limit get an unbounded amount).
    pub fn new(fuel: bool) -> anyhow::Result<Arc<Self>> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        // Each component compiles on one thread (wasmtime's parallel
        // compilation is not built in): a hot swap compiles while messages
        // flow, and on a small machine parallel compilation would take every
        // core from them. At start, handlers compile side by side instead
        // (see `Registry::load`).
        // Handlers export plain (not component-model-async) functions: without
        // the concurrent machinery, each call is a plain fiber switch
        // (measured with `host bench`: see BENCHMARKS.md).
        config.concurrency_support(false);
        if let Some(cache) = compile_cache() {
            config.cache(Some(cache));
        }
        if let Some(profiler) = profiler()? {
            config.profiler(profiler);
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        StageHandler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        // Components built for the 0.1.0 package import its `types` (records
        // only) and `log`: the same host function serves them.
        linker.instance(LEGACY_TYPES)?;
        linker.instance(LEGACY_LOG)?.func_wrap(
            "log",
            |mut store: wasmtime::StoreContextMut<'_, GuestState>,
             (level, message): (Level, String)| {
                bindings::stagehost::handler::log::Host::log(store.data_mut(), level, message);
                Ok(())
            },
        )?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let log_budgets = Arc::new(LogBudgets::default());
        let weak = engine.weak();
        let stop = ticker_stop.clone();
        let budgets = log_budgets.clone();
        std::thread::Builder::new()
            .name("stagehost-epoch".into())
            .spawn(move || {
                let mut ticks: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(SUMMARY_TICKS) {
                        budgets.tick();
                    }
                }
            })?;
        Ok(Arc::new(Self {
            engine,
            linker,
            fuel_enabled: fuel,
            ticker_stop,
            log_budgets,
        }))
    }

    /// The engine for a pipeline: fuel metering on when any handler asks
    /// for it.
    pub fn for_pipeline(pipeline: &Pipeline) -> anyhow::Result<Arc<Self>> {
        Self::new(
            pipeline
                .handlers
                .values()
                .any(|handler| handler.limits.fuel.is_some()),
        )
    }

    /// Every handler's guest-output budget.
    pub fn log_budgets(&self) -> &Arc<LogBudgets> {
        &self.log_budgets
    }

    /// The budget (and the recent guest lines) of `handler`, if it has one.
    pub fn log_budget(&self, handler: &str) -> Option<Arc<LogBudget>> {
        self.log_budgets
            .all()
            .into_iter()
            .find(|budget| budget.handler() == handler)
    }

    /// Compiles and links a component, then runs `init` once in a fresh
    /// instance to prove it works. Nothing here touches the message path.
    pub fn load(
        self: &Arc<Self>,
        spec: HandlerSpec,
        bytes: &[u8],
    ) -> Result<Arc<HandlerComponent>, LoadError> {
        let handler = spec.name.clone();
        let component = Component::new(&self.engine, bytes).map_err(|err| LoadError::Invalid {
            handler: handler.clone(),
            reason: format!("{err:#}"),
        })?;
        let wrong_world = |reason: String| LoadError::WrongWorld {
            handler: handler.clone(),
            reason,
        };
        let shape = component.component_type();
        let exports: Vec<String> = shape
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        for needed in ["init", "handle"] {
            if !exports.iter().any(|name| name == needed) {
                return Err(wrong_world(format!("it exports no `{needed}`")));
            }
        }
        let uses_state = shape.imports(&self.engine).any(|(name, _)| name == STATE);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| wrong_world(format!("{err:#}")))?;
        let loaded = Arc::new(HandlerComponent {
            uses_state,
            has_batch: exports.iter().any(|name| name == "handle-batch"),
            log_budget: self.log_budgets.budget(&spec.name, spec.limits.log),
            version: version_of(bytes),
            size: bytes.len(),
            loaded_at: SystemTime::now(),
            spec,
            pre,
            sandbox: self.clone(),
        });
        run_guest(loaded.instantiate()).map_err(|failure| LoadError::Init {
            handler: handler.clone(),
            reason: failure.to_string(),
        })?;
        Ok(loaded)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        self.log_budgets.flush();
    }
}

/// Runs guest code from synchronous code (validation, `host check`) on a
/// single-threaded runtime of its own. Called where a tokio runtime is
/// current (a sync API used from async code), it blocks on a thread of its
/// own, since tokio forbids starting a runtime inside another.
pub fn run_guest<F>(call: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a single-threaded runtime for guest calls")
            .block_on(call)
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|scope| match scope.spawn(run).join() {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The first 12 hex digits of the component's SHA-256: its version.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// What the host knows about a handler besides its code.
#[derive(Debug, Clone)]
pub struct HandlerSpec {
    /// Handler name from the config.
    pub name: String,
    /// Where the component came from (a file path, or an upload).
    pub source: String,
    /// Sandbox limits.
    pub limits: Limits,
    /// Settings for `init`.
    pub settings: Vec<(String, String)>,
}

impl HandlerSpec {
    /// Whether two specs run code the same way (limits and settings).
    pub fn same_settings(&self, other: &HandlerSpec) -> bool {
        self.limits == other.limits && self.settings == other.settings
    }
}

/// One compiled, linked and validated version of a handler.
pub struct HandlerComponent {
    spec: HandlerSpec,
    version: String,
    size: usize,
    loaded_at: SystemTime,
    pre: InstancePre<GuestState>,
    sandbox: Arc<Sandbox>,
    log_budget: Arc<LogBudget>,
    /// Whether the component imports `state`.
    uses_state: bool,
    /// Whether the component exports `handle-batch` (package 0.2.0).
    has_batch: bool,
}

impl HandlerComponent {
    /// Handler name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What the host knows about this handler besides its code.
    pub fn spec(&self) -> &HandlerSpec {
        &self.spec
    }

    /// Content hash of the component.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the component came from.
    pub fn source(&self) -> &str {
        &self.spec.source
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// When this version was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The handler's limits.
    pub fn limits(&self) -> Limits {
        self.spec.limits
    }

    /// Whether the component imports the `state` interface.
    pub fn uses_state(&self) -> bool {
        self.uses_state
    }

    /// Whether the component exports `handle-batch`.
    pub fn has_batch(&self) -> bool {
        self.has_batch
    }

    /// Creates a fresh instance and runs its `init`, within the handler's
    /// time limit.
    pub async fn instantiate(self: &Arc<Self>) -> Result<HandlerInstance, HandlerFailure> {
        let limit = self.spec.limits.timeout_ms;
        within_limit(limit, self.instantiate_unbounded()).await
    }

    async fn instantiate_unbounded(self: &Arc<Self>) -> Result<HandlerInstance, HandlerFailure> {
        let budget = self.log_budget.clone();
        let place = CallPlace::new();
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(
                budget.clone(),
                place.clone(),
                Stream::Stdout,
            ))
            .stderr(GuestOutput::new(
                budget.clone(),
                place.clone(),
                Stream::Stderr,
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = GuestState {
            log: budget,
            place,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: (self.spec.limits.memory_mib as usize) << 20,
                exceeded: false,
            },
            deadline: Instant::now(),
            state: None,
        };
        let mut store = Store::new(&self.sandbox.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Checked at every epoch tick: yield to the runtime, or stop the call
        // once it has run past its time limit.
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let mut instance = HandlerInstance {
            handle: None,
            handle_batch: None,
            store,
            component: self.clone(),
        };
        instance.arm();
        let instantiated = self
            .pre
            .instantiate_async(&mut instance.store)
            .await
            .map_err(|err| instance.classify(err))
            .map_err(|failure| match failure {
                HandlerFailure::Trap(reason) => HandlerFailure::Instantiate(reason),
                other => other,
            })?;
        let wrong_world = |err: wasmtime::Error| HandlerFailure::Instantiate(format!("{err:#}"));
        // Checked once here, so that each call can skip the check.
        let handle = instantiated
            .get_typed_func::<HandleParams<'static>, HandleResults>(&mut instance.store, "handle")
            .map_err(wrong_world)?;
        let init = instantiated
            .get_typed_func::<InitParams<'_>, InitResults>(&mut instance.store, "init")
            .map_err(wrong_world)?;
        instance.arm();
        match init
            .call_async(&mut instance.store, (&self.spec.settings,))
            .await
        {
            Ok((Ok(()),)) => {}
            Ok((Err(reason),)) => {
                return Err(HandlerFailure::Instantiate(format!("init: {reason}")));
            }
            Err(err) => return Err(instance.classify(err)),
        }
        if self.has_batch {
            let batch = instantiated
                .get_typed_func::<BatchParams<'static>, BatchResults>(
                    &mut instance.store,
                    "handle-batch",
                )
                .map_err(wrong_world)?;
            instance.handle_batch = Some(*batch.func());
        }
        instance.handle = Some(*handle.func());
        Ok(instance)
    }
}

/// The parameters of the world's `init` export.
type InitParams<'a> = (&'a [(String, String)],);
/// What `init` returns.
type InitResults = (Result<(), String>,);
/// The parameters of the world's `handle` export, lowered from borrowed data.
type HandleParams<'a> = (MessageRef<'a>,);
/// What `handle` returns.
type HandleResults = (Result<Vec<Output>, HandlerError>,);
/// The parameters of the world's `handle-batch` export (package 0.2.0).
type BatchParams<'a> = (&'a [MessageRef<'a>],);
/// What `handle-batch` returns.
type BatchResults = (Vec<Result<Vec<Output>, HandlerError>>,);

/// A live instance of one handler version, reused message after message.
pub struct HandlerInstance {
    /// The `handle` export, type-checked against [`HandleParams`] and
    /// [`HandleResults`] at instantiation.
    handle: Option<Func>,
    /// The `handle-batch` export, checked against [`BatchParams`] and
    /// [`BatchResults`], when the component has it.
    handle_batch: Option<Func>,
    store: Store<GuestState>,
    component: Arc<HandlerComponent>,
}

impl HandlerInstance {
    /// The version this instance runs.
    pub fn component(&self) -> &Arc<HandlerComponent> {
        &self.component
    }

    /// Lends the instance its stage's state for the next calls (until
    /// [`HandlerInstance::take_state`]).
    pub fn lend_state(&mut self, state: Box<dyn StateAccess>) {
        self.store.data_mut().state = Some(state);
    }

    /// Takes back the state lent with [`HandlerInstance::lend_state`].
    pub fn take_state(&mut self) -> Option<Box<dyn StateAccess>> {
        self.store.data_mut().state.take()
    }

    /// Marks this instance as running self-test cases: its guest output is
    /// tagged so, and logged at debug level.
    pub fn for_self_test(&self) {
        self.store.data().place.self_test();
    }

    /// Runs `handle` on one message within the handler's limits. After a
    /// failure whose [`HandlerFailure::poisons_instance`] is true the caller
    /// must drop this instance.
    pub async fn handle(&mut self, message: &Message) -> Result<Vec<Output>, HandlerFailure> {
        let headers = message.header_refs();
        self.handle_borrowed(message.borrowed(&headers)).await
    }

    /// [`HandlerInstance::handle`] for a borrowed message: the message is
    /// copied once, into the guest.
    pub async fn handle_borrowed(
        &mut self,
        message: MessageRef<'_>,
    ) -> Result<Vec<Output>, HandlerFailure> {
        self.arm();
        self.store
            .data()
            .place
            .at(message.partition, message.offset);
        let func = self
            .handle
            .ok_or_else(|| HandlerFailure::Instantiate("instance was not initialised".into()))?;
        // SAFETY: `func` was checked against these parameter and result types
        // when the instance was created; a `MessageRef` lowers the same for
        // any lifetime.
        let typed = unsafe { TypedFunc::<HandleParams<'_>, HandleResults>::new_unchecked(func) };
        let limit = self.component.spec.limits.timeout_ms;
        let call = typed.call_async(&mut self.store, (message,));
        let Ok(answer) = tokio::time::timeout(Duration::from_millis(limit), call).await else {
            // Abandoned while the guest waited in a host call (a sleep, a
            // poll): the caller drops this instance.
            self.handle = None;
            return Err(HandlerFailure::Timeout(limit));
        };
        match answer {
            Ok((answer,)) => answer_of(answer),
            Err(err) => Err(self.classify(err)),
        }
    }

    /// Whether [`HandlerInstance::handle_batch`] can be called.
    pub fn can_batch(&self) -> bool {
        self.handle_batch.is_some()
    }

    /// Runs `handle-batch` on several messages of one partition, in order:
    /// one answer per message, as `handle` would give it.
    ///
    /// The whole call gets the limits of one message (wall time, fuel), so a
    /// batch the handler cannot finish within them fails as a whole, and the
    /// caller reruns its messages one at a time with `handle` on a fresh
    /// instance: each message then meets exactly the limits it would have
    /// met alone. A batch answer of the wrong length fails the same way.
    pub async fn handle_batch(
        &mut self,
        messages: &[MessageRef<'_>],
    ) -> Result<Vec<Result<Vec<Output>, HandlerFailure>>, HandlerFailure> {
        let Some(first) = messages.first() else {
            return Ok(Vec::new());
        };
        let func = self
            .handle_batch
            .ok_or_else(|| HandlerFailure::Instantiate("the handler has no handle-batch".into()))?;
        self.arm();
        self.store.data().place.at(first.partition, first.offset);
        // SAFETY: `func` was checked against these parameter and result types
        // when the instance was created; a `MessageRef` lowers the same for
        // any lifetime.
        let typed = unsafe { TypedFunc::<BatchParams<'_>, BatchResults>::new_unchecked(func) };
        let limit = self.component.spec.limits.timeout_ms;
        let call = typed.call_async(&mut self.store, (messages,));
        let Ok(answer) = tokio::time::timeout(Duration::from_millis(limit), call).await else {
            self.handle = None;
            self.handle_batch = None;
            return Err(HandlerFailure::Timeout(limit));
        };
        match answer {
            Ok((answers,)) if answers.len() == messages.len() => {
                Ok(answers.into_iter().map(answer_of).collect())
            }
            Ok((answers,)) => Err(HandlerFailure::Trap(format!(
                "handle-batch returned {} results for {} messages",
                answers.len(),
                messages.len()
            ))),
            Err(err) => Err(self.classify(err)),
        }
    }

    /// Resets the time, fuel and memory-limit state before a call.
    fn arm(&mut self) {
        let limits = self.component.spec.limits;
        self.store.data_mut().deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
        self.store.set_epoch_deadline(1);
        if self.component.sandbox.fuel_enabled {
            // Fuel is on for the engine; handlers without a limit get plenty.
            let _ = self.store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        self.store.data_mut().limiter.exceeded = false;
    }

    fn classify(&mut self, err: wasmtime::Error) -> HandlerFailure {
        let limits = self.component.spec.limits;
        if self.store.data().limiter.exceeded {
            return HandlerFailure::MemoryLimit(limits.memory_mib);
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => HandlerFailure::Timeout(limits.timeout_ms),
            Some(Trap::OutOfFuel) => HandlerFailure::FuelExhausted(limits.fuel.unwrap_or(0)),
            // A trap's text starts with `wasm trap:` already.
            Some(trap) => HandlerFailure::Trap(trap.to_string()),
            None => match err.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => HandlerFailure::Trap(format!(
                    "the handler exited the process (status {})",
                    exit.0
                )),
                // The root cause says what happened; the context above it
                // is a wasm backtrace.
                None => HandlerFailure::Trap(err.root_cause().to_string()),
            },
        }
    }
}

/// A handler's answer for one message, as a failure when it is an error.
fn answer_of(answer: Result<Vec<Output>, HandlerError>) -> Result<Vec<Output>, HandlerFailure> {
    match answer {
        Ok(outputs) => Ok(outputs),
        Err(HandlerError::InvalidInput(reason)) => Err(HandlerFailure::InvalidInput(reason)),
        Err(HandlerError::Transient(reason)) => Err(HandlerFailure::Transient(reason)),
    }
}

/// Runs a guest call (an instantiation, `init`) within the handler's wall
/// time limit. The epoch deadline stops guest code at the limit; this also
/// stops a call blocked in a host call (a sleep, a poll) there.
async fn within_limit<T>(
    limit_ms: u64,
    call: impl Future<Output = Result<T, HandlerFailure>>,
) -> Result<T, HandlerFailure> {
    match tokio::time::timeout(Duration::from_millis(limit_ms), call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(HandlerFailure::Timeout(limit_ms)),
    }
}

/// The per-instance state wasmtime hands to host functions.
pub struct GuestState {
    /// The handler's guest-output budget (for `log`, stdout and stderr).
    log: Arc<LogBudget>,
    /// What the instance runs, for its log lines.
    place: Arc<CallPlace>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// When the running call must stop.
    deadline: Instant,
    /// The stage's state for the message being handled, when lent.
    pub(super) state: Option<Box<dyn StateAccess>>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::stagehost::handler::types::Host for GuestState {}

impl bindings::stagehost::handler::log::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        self.log
            .emit(Stream::Log(level), &self.place, message.as_bytes(), 0);
    }
}

/// Caps linear memory and remembers when a guest hit the cap, so the trap
/// that follows is reported as a memory limit rather than a plain trap.
struct MemoryLimiter {
    max_bytes: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
