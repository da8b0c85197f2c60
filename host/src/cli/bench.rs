//! `host bench`: the cost of the sandbox, in process and without Kafka.
//!
//! The same messages go through the path a stage runs for each of them
//! (route, then the handler, then the output records with their headers)
//! four ways, on one thread:
//!
//! - **native**: the handler's logic compiled into the host (the `calc`
//!   crate that `add` and `subtract` are built from), the baseline;
//! - **wasm, reused instance**: the component, one instance for every
//!   message, one `handle` call each;
//! - **wasm, batches**: the same instance called with `handle-batch` on
//!   `--batch` messages at a time (what a partition worker does with what
//!   it has already fetched), when the component exports it;
//! - **wasm, fresh instance**: a new instance (and `init`) per message.
//!
//! Outputs of the native and wasm paths are compared message by message in
//! a separate untimed pass (keeping them would weigh on the timed ones), so
//! the two do the same work. Figures are printed; nothing is asserted about them.

use crate::config::{LoadedConfig, Routing};
use crate::handlers::bindings::{MessageRef, Output};
use crate::handlers::{HandlerComponent, HandlerFailure, Registry, Sandbox};
use crate::kafka::DEFAULT_MAX_RECORD_BYTES;
use crate::pipeline::outputs::{OutputRules, Record, output_records};
use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages in the phase-by-phase pass.
const PHASE_MESSAGES: usize = 100_000;

/// What `host bench` measures.
pub struct BenchOptions {
    /// Messages per measured path.
    pub messages: u64,
    /// Messages for the fresh-instance path (it is much slower).
    pub fresh_messages: u64,
    /// The value of the routing field (`operation`) the messages carry.
    pub operation: String,
    /// Bytes per message; a message shorter than this gets a `pad` field.
    pub size: usize,
    /// Leave out the native baseline and the comparison.
    pub wasm_only: bool,
    /// Messages per `handle-batch` call on the batched path.
    pub batch: usize,
}

/// One measured path.
struct Measured {
    path: &'static str,
    messages: u64,
    elapsed: Duration,
}

impl Measured {
    fn nanos_per_message(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.messages as f64
    }

    fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// The tutorial's request, numbered, padded to about `size` bytes.
fn request(operation: &str, n: u64, size: usize) -> Vec<u8> {
    let plain = format!(
        r#"{{"operation":"{operation}","operator_1":"{n}","operator_2":"{}"}}"#,
        n % 97 + 1
    );
    // `,"pad":""` is 9 bytes.
    match size.checked_sub(plain.len() + 9) {
        Some(pad) => format!(
            r#"{},"pad":"{}"}}"#,
            &plain[..plain.len() - 1],
            "x".repeat(pad)
        ),
        None => plain,
    }
    .into_bytes()
}

/// The message a stage hands its handler, borrowed from the consumed
/// record as the pipeline does.
fn message(value: &[u8], n: u64) -> MessageRef<'_> {
    MessageRef {
        topic: "bench",
        partition: 0,
        offset: n as i64,
        key: None,
        value,
        headers: &[],
        timestamp: None,
    }
}

/// A handler's logic built into the host.
type NativeHandler = fn(serde_json::Value) -> Result<serde_json::Value, calc::HandlerError>;

/// The native baseline for a handler, when the host has one.
fn native_handler(name: &str) -> Option<NativeHandler> {
    match name {
        "add" => Some(calc::add),
        "subtract" => Some(calc::subtract),
        _ => None,
    }
}

/// The stage whose route sends `operation` somewhere, with that handler.
fn find_route<'a>(
    registry: &'a Registry,
    config: &LoadedConfig,
    operation: &str,
) -> anyhow::Result<(&'a Routing, String)> {
    let probe = request(operation, 1, 0);
    for stage in &config.pipeline.stages {
        if let Some(route) = registry.route(&stage.name)
            && let Ok(handler) = route.resolve(&probe)
        {
            return Ok((route.as_ref(), handler.to_string()));
        }
    }
    anyhow::bail!(
        "no stage in {} routes operation `{operation}` to a handler",
        config.path.display()
    )
}

/// The benchmark stage's output rules: everything goes to `bench-out`.
static BENCH_RULES: std::sync::LazyLock<OutputRules> = std::sync::LazyLock::new(|| OutputRules {
    default_topic: "bench-out".to_string(),
    branches: Default::default(),
    writable: ["bench-out".to_string()].into_iter().collect(),
    max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
    propagate_headers: Default::default(),
});

fn records(outputs: Vec<Output>, component: &HandlerComponent) -> Vec<Record> {
    output_records(
        outputs,
        &BENCH_RULES,
        &component.limits(),
        None,
        None,
        component.name(),
        component.version(),
    )
    .expect("outputs of the benchmark handler are valid")
}

async fn wasm_reused(
    route: &Routing,
    component: &Arc<HandlerComponent>,
    inputs: &[Vec<u8>],
) -> Result<Duration, HandlerFailure> {
    let mut instance = component.instantiate().await?;
    let started = Instant::now();
    for (n, value) in inputs.iter().enumerate() {
        route.resolve(value).expect("bench messages route");
        let outputs = instance.handle_borrowed(message(value, n as u64)).await?;
        std::hint::black_box(records(outputs, component));
    }
    Ok(started.elapsed())
}

/// Runs every input through the wasm and the native path, untimed, and
/// names the first input whose answers differ.
async fn compare(
    component: &Arc<HandlerComponent>,
    handler: NativeHandler,
    inputs: &[Vec<u8>],
) -> anyhow::Result<()> {
    let mut instance = component.instantiate().await?;
    for (n, value) in inputs.iter().enumerate() {
        let answer = |outputs: Vec<Output>| {
            records(outputs, component)
                .pop()
                .and_then(|record| record.value)
                .unwrap_or_default()
        };
        let wasm = answer(instance.handle_borrowed(message(value, n as u64)).await?);
        let native = answer(vec![native_output(handler, value)]);
        anyhow::ensure!(
            wasm == native,
            "native and wasm answers differ for {}: {} vs {}",
            String::from_utf8_lossy(value),
            String::from_utf8_lossy(&native),
            String::from_utf8_lossy(&wasm)
        );
    }
    Ok(())
}

async fn wasm_batched(
    route: &Routing,
    component: &Arc<HandlerComponent>,
    inputs: &[Vec<u8>],
    batch: usize,
) -> Result<Duration, HandlerFailure> {
    let mut instance = component.instantiate().await?;
    let started = Instant::now();
    let mut messages = Vec::with_capacity(batch);
    for (chunk_index, chunk) in inputs.chunks(batch).enumerate() {
        messages.clear();
        for (n, value) in chunk.iter().enumerate() {
            route.resolve(value).expect("bench messages route");
            messages.push(message(value, (chunk_index * batch + n) as u64));
        }
        for answer in instance.handle_batch(&messages).await? {
            std::hint::black_box(records(answer?, component));
        }
    }
    Ok(started.elapsed())
}

/// Runs every input through `handle` and through `handle-batch`, untimed,
/// and names the first input whose answers differ.
async fn compare_batched(
    component: &Arc<HandlerComponent>,
    inputs: &[Vec<u8>],
    batch: usize,
) -> anyhow::Result<()> {
    let mut single = component.instantiate().await?;
    let mut batched = component.instantiate().await?;
    for (chunk_index, chunk) in inputs.chunks(batch).enumerate() {
        let messages: Vec<MessageRef<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(n, value)| message(value, (chunk_index * batch + n) as u64))
            .collect();
        let answers = batched.handle_batch(&messages).await?;
        for (input, answer) in messages.iter().zip(answers) {
            let shape = |outputs: Vec<Output>| -> Vec<_> {
                outputs
                    .into_iter()
                    .map(|output| {
                        let headers: Vec<_> = output
                            .headers
                            .into_iter()
                            .map(|header| (header.key, header.value))
                            .collect();
                        (output.topic, output.key, output.value, headers)
                    })
                    .collect()
            };
            let alone = shape(single.handle_borrowed(*input).await?);
            let answer = shape(answer?);
            anyhow::ensure!(
                answer == alone,
                "handle and handle-batch answers differ for {}",
                String::from_utf8_lossy(input.value)
            );
        }
    }
    Ok(())
}

async fn wasm_fresh(
    route: &Routing,
    component: &Arc<HandlerComponent>,
    inputs: &[Vec<u8>],
) -> Result<Duration, HandlerFailure> {
    let started = Instant::now();
    for (n, value) in inputs.iter().enumerate() {
        route.resolve(value).expect("bench messages route");
        let mut instance = component.instantiate().await?;
        let outputs = instance.handle_borrowed(message(value, n as u64)).await?;
        std::hint::black_box(records(outputs, component));
    }
    Ok(started.elapsed())
}

/// Where one path spends its time per message, measured in a separate
/// pass (the clock reads would weigh on the timed one).
#[derive(Default)]
struct Phases {
    /// Finding the handler from the routing field.
    route: Duration,
    /// The handler: the wasm call with its copies in and out, or the
    /// native parse, compute and serialise.
    handle: Duration,
    /// Turning the outputs into records with their headers.
    records: Duration,
    messages: u32,
}

impl Phases {
    /// Adds one message, from the instants it started, was routed, was
    /// handled and was done.
    fn add(&mut self, [started, routed, handled, done]: [Instant; 4]) {
        self.route += routed - started;
        self.handle += handled - routed;
        self.records += done - handled;
        self.messages += 1;
    }

    fn row(&self, path: &str) -> String {
        let per = |total: Duration| total.as_nanos() as f64 / f64::from(self.messages.max(1));
        format!(
            "{path:<36} {:>10.0} {:>12.0} {:>14.0}\n",
            per(self.route),
            per(self.handle),
            per(self.records)
        )
    }
}

/// What the native baseline makes of one message: parse, compute and
/// serialise, straight from the consumed bytes (the wasm path's one copy,
/// into the guest, is part of the sandbox's cost).
fn native_output(handler: NativeHandler, value: &[u8]) -> Output {
    let parsed = serde_json::from_slice(value).expect("bench messages are JSON");
    let answer = handler(parsed).expect("bench messages are valid");
    Output {
        topic: None,
        key: None,
        value: serde_json::to_vec(&answer).expect("JSON serialises"),
        headers: Vec::new(),
    }
}

/// [`native`], phase by phase.
fn native_phases(
    route: &Routing,
    component: &HandlerComponent,
    handler: NativeHandler,
    inputs: &[Vec<u8>],
) -> Phases {
    let mut phases = Phases::default();
    for value in inputs {
        let started = Instant::now();
        route.resolve(value).expect("bench messages route");
        let routed = Instant::now();
        let output = native_output(handler, value);
        let handled = Instant::now();
        std::hint::black_box(records(vec![output], component));
        let done = Instant::now();
        phases.add([started, routed, handled, done]);
    }
    phases
}

/// [`wasm_reused`], phase by phase.
async fn wasm_phases(
    route: &Routing,
    component: &Arc<HandlerComponent>,
    inputs: &[Vec<u8>],
) -> Result<Phases, HandlerFailure> {
    let mut instance = component.instantiate().await?;
    let mut phases = Phases::default();
    for (n, value) in inputs.iter().enumerate() {
        let started = Instant::now();
        route.resolve(value).expect("bench messages route");
        let routed = Instant::now();
        let outputs = instance.handle_borrowed(message(value, n as u64)).await?;
        let handled = Instant::now();
        std::hint::black_box(records(outputs, component));
        let done = Instant::now();
        phases.add([started, routed, handled, done]);
    }
    Ok(phases)
}

fn native(
    route: &Routing,
    component: &HandlerComponent,
    handler: NativeHandler,
    inputs: &[Vec<u8>],
) -> Duration {
    let started = Instant::now();
    for value in inputs {
        route.resolve(value).expect("bench messages route");
        let output = native_output(handler, value);
        std::hint::black_box(records(vec![output], component));
    }
    started.elapsed()
}

/// Runs the benchmark on the handlers of `config_path` and returns the
/// report.
pub fn run(config_path: &Path, options: &BenchOptions) -> anyhow::Result<String> {
    let config = LoadedConfig::load(config_path)?;
    let sandbox = Sandbox::for_pipeline(&config.pipeline)?;
    let registry = Registry::load(&config, &sandbox, None)?;
    let (route, handler) = find_route(&registry, &config, &options.operation)?;
    let component = registry
        .handler(&handler)
        .with_context(|| format!("handler `{handler}` is not loaded"))?
        .clone();
    // Handlers in other languages (multiply, divide) have no native twin:
    // they are measured on their own.
    let baseline = native_handler(&handler).filter(|_| !options.wasm_only);
    let inputs: Vec<Vec<u8>> = (0..options.messages)
        .map(|n| request(&options.operation, n, options.size))
        .collect();
    let warm_up = &inputs[..inputs.len().min(10_000)];
    let fresh_inputs = &inputs[..inputs.len().min(options.fresh_messages as usize)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;

    let native_elapsed = baseline.map(|baseline| {
        native(route, &component, baseline, warm_up);
        native(route, &component, baseline, &inputs)
    });
    runtime.block_on(wasm_reused(route, &component, warm_up))?;
    let wasm_elapsed = runtime.block_on(wasm_reused(route, &component, &inputs))?;
    let batched_elapsed = if component.has_batch() {
        runtime.block_on(wasm_batched(route, &component, warm_up, options.batch))?;
        let elapsed = runtime.block_on(wasm_batched(route, &component, &inputs, options.batch))?;
        runtime.block_on(compare_batched(&component, &inputs, options.batch))?;
        Some(elapsed)
    } else {
        None
    };
    let fresh_elapsed = runtime.block_on(wasm_fresh(route, &component, fresh_inputs))?;
    if let Some(baseline) = baseline {
        runtime.block_on(compare(&component, baseline, &inputs))?;
    }

    let mut rows = Vec::new();
    if let Some(native_elapsed) = native_elapsed {
        rows.push(Measured {
            path: "native (same logic, in the host)",
            messages: options.messages,
            elapsed: native_elapsed,
        });
    }
    rows.push(Measured {
        path: "wasm, reused instance",
        messages: options.messages,
        elapsed: wasm_elapsed,
    });
    let batch_path = format!("wasm, batches of {}", options.batch);
    if let Some(elapsed) = batched_elapsed {
        rows.push(Measured {
            path: batch_path.leak(),
            messages: options.messages,
            elapsed,
        });
    }
    rows.push(Measured {
        path: "wasm, fresh instance per message",
        messages: fresh_inputs.len() as u64,
        elapsed: fresh_elapsed,
    });
    let native_ns = baseline.map(|_| rows[0].nanos_per_message());
    let mut report = format!(
        "host bench: handler `{handler}` (version {}, {} bytes), operation `{}`, messages of {} bytes, one thread\n\
         route -> handler -> output records, no Kafka\n\n\
         {:<36} {:>10} {:>12} {:>14} {:>10}\n",
        component.version(),
        component.size(),
        options.operation,
        inputs[0].len(),
        "path",
        "messages",
        "ns/message",
        "messages/s",
        "x native"
    );
    for row in &rows {
        let ratio = native_ns
            .map(|native| format!("{:.2}", row.nanos_per_message() / native))
            .unwrap_or_else(|| "-".into());
        report.push_str(&format!(
            "{:<36} {:>10} {:>12.0} {:>14.0} {:>10}\n",
            row.path,
            row.messages,
            row.nanos_per_message(),
            row.per_second(),
            ratio
        ));
    }
    report.push_str(&match batched_elapsed {
        Some(_) => format!(
            "\nall {} answers of handle-batch equal those of handle\n",
            inputs.len()
        ),
        None => "\nthe component exports no handle-batch (built for the 0.1.0 world)\n".into(),
    });
    report.push_str(&match baseline {
        Some(_) => format!(
            "\nall {} answers of the wasm path equal the native ones\n",
            inputs.len()
        ),
        None if options.wasm_only => {
            "\nnative baseline and comparison left out (--wasm-only)\n".into()
        }
        None => format!(
            "\nno native build of `{handler}` to compare with (the host has add and subtract)\n"
        ),
    });

    let sample = &inputs[..inputs.len().min(PHASE_MESSAGES)];
    report.push_str(&format!(
        "\nwhere the time goes, ns/message over {} messages (a separate pass)\n\
         {:<36} {:>10} {:>12} {:>14}\n",
        sample.len(),
        "path",
        "route",
        "handler",
        "records"
    ));
    if let Some(baseline) = baseline {
        report.push_str(&native_phases(route, &component, baseline, sample).row("native"));
    }
    let wasm_split = runtime.block_on(wasm_phases(route, &component, sample))?;
    report.push_str(&wasm_split.row("wasm, reused instance"));
    Ok(report)
}
