//! What a handler costs in each language, in process and without Kafka:
//! its load time (compile, or the compile cache, plus link and `init`), one
//! instantiation, and the time per message with a reused instance and with
//! a fresh instance per message. `host bench` measures the same path against
//! a native baseline, which only `add` and `subtract` have; this covers the
//! Python (`multiply`) and JavaScript (`divide`) handlers beside `add`.
//!
//! ```sh
//! make plugins
//! cargo bench -p stagehost --bench handler_cost
//! ```
//!
//! `STAGEHOST_COST_PLUGINS=a.wasm,b.wasm` measures those components instead
//! (each is sent the tutorial's request with its file name as the
//! `operation`, and `operator_2` never 0). Figures are printed, never
//! asserted; a handler error fails the run.

use stagehost::config::Limits;
use stagehost::handlers::bindings::Message;
use stagehost::handlers::{HandlerSpec, Sandbox, run_guest};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MESSAGES: u64 = 20_000;
const FRESH: usize = 200;

fn plugins() -> Vec<PathBuf> {
    match std::env::var("STAGEHOST_COST_PLUGINS") {
        Ok(list) => list.split(',').map(PathBuf::from).collect(),
        Err(_) => {
            let release =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release");
            ["add", "multiply", "divide"]
                .iter()
                .map(|name| release.join(format!("{name}.wasm")))
                .collect()
        }
    }
}

fn message(operation: &str, n: u64) -> Message {
    Message {
        topic: "bench".into(),
        partition: 0,
        offset: n as i64,
        key: None,
        value: format!(
            r#"{{"operation":"{operation}","operator_1":"{n}","operator_2":"{}"}}"#,
            n % 97 + 1
        )
        .into_bytes(),
        headers: Vec::new(),
        timestamp: None,
    }
}

fn main() -> anyhow::Result<()> {
    let sandbox = Sandbox::new(false)?;
    println!(
        "{:<9} {:>12} {:>10} {:>14} {:>16} {:>18}",
        "handler", "bytes", "load s", "instantiate ms", "reused µs/msg", "fresh µs/msg"
    );
    for path in plugins() {
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&path).map_err(|err| {
            anyhow::anyhow!(
                "{}: {err} (build the plugins with `make plugins`)",
                path.display()
            )
        })?;
        let spec = HandlerSpec {
            name: name.clone(),
            source: path.display().to_string(),
            limits: Limits::default(),
            settings: Vec::new(),
        };
        let started = Instant::now();
        let component = sandbox.load(spec, &bytes)?;
        let load = started.elapsed();
        let messages: Vec<Message> = (0..MESSAGES).map(|n| message(&name, n)).collect();
        let (instantiate, reused, fresh) = run_guest(async {
            let started = Instant::now();
            let mut instance = component.instantiate().await?;
            let instantiate = started.elapsed();
            for message in &messages[..1000] {
                instance.handle(message).await?;
            }
            let started = Instant::now();
            for message in &messages {
                std::hint::black_box(instance.handle(message).await?);
            }
            let reused = started.elapsed();
            let started = Instant::now();
            for message in &messages[..FRESH] {
                let mut instance = component.instantiate().await?;
                std::hint::black_box(instance.handle(message).await?);
            }
            anyhow::Ok((instantiate, reused, started.elapsed()))
        })?;
        println!(
            "{:<9} {:>12} {:>10.2} {:>14.2} {:>16.2} {:>18.1}",
            name,
            bytes.len(),
            load.as_secs_f64(),
            instantiate.as_secs_f64() * 1e3,
            reused.as_secs_f64() * 1e6 / MESSAGES as f64,
            fresh.as_secs_f64() * 1e6 / FRESH as f64,
        );
    }
    Ok(())
}
