//! Hot-swap benchmark against the local real broker (`make kafka-up`):
//! streams messages at a steady rate through the calculator while `add` is
//! swapped, alternately by file and through the reloader (what the admin API
//! calls), and reports
//!
//! - the longest gap between consecutive outputs around each swap, beside
//!   the longest gap in steady state before any swap, and
//! - the time from the file change (or the API call) to the first output of
//!   the new version.
//!
//! Run: `cargo bench -p stagehost --bench hot_swap` (env `SWAPS`, `RATE`,
//! and `STEADY_SECONDS`, the swap-free window measured first, default 20:
//! about as long as all the windows around swaps together, so the two
//! longest gaps compare like with like).
//! Goals: gap <= 50 ms, first new output <= 1 s.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use stagehost::config::LoadedConfig;
use stagehost::handlers::version_of;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let swaps = env_number("SWAPS", 10) as usize;
    let rate = env_number("RATE", 2000);
    let steady_seconds = env_number("STEADY_SECONDS", 20);
    let brokers =
        std::env::var("STAGEHOST_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (input, output) = (format!("bench-in-{run}"), format!("bench-out-{run}"));
    let dir = std::env::temp_dir().join(format!("stagehost-bench-{run}"));
    std::fs::create_dir_all(&dir)?;
    let plugin =
        |target: &str, name: &str| repo_root().join(format!("target/{target}/release/{name}.wasm"));
    let builds = [
        std::fs::read(plugin("wasm32-wasip2", "add"))?,
        std::fs::read(plugin("wasm32-wasip1", "add"))?,
    ];
    let watched = dir.join("add.wasm");
    std::fs::write(&watched, &builds[0])?;
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  group: bench-{run}\n  topics:\n    partitions: 3\nadmin:\n  enabled: false\nhandlers:\n  add:\n    path: {}\nstages:\n  - name: bench\n    input: {input}\n    output: {output}\n    dead_letter: bench-dlq-{run}\n    handler: add\n",
        watched.display()
    );
    let config = LoadedConfig::from_source(&dir.join("config.yml"), yaml)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(async move {
        let host = stagehost::Host::start(config).await?;
        let _ = ready_tx.send(host.ready());
        let (_requests, reloads) = tokio::sync::mpsc::unbounded_channel();
        host.run(
            async move {
                let _ = stop_rx.await;
            },
            reloads,
        )
        .await
    });
    let reloader = ready_rx.await?.reloader;

    // Outputs as (arrival, version), read by a thread of their own.
    let arrivals: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (arrivals, reading, brokers, output) = (
            arrivals.clone(),
            reading.clone(),
            brokers.clone(),
            output.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<()> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set(
                    "group.id",
                    format!("bench-reader-{}", uuid::Uuid::new_v4().simple()),
                )
                .set("fetch.wait.max.ms", "5")
                .create()?;
            let mut assignment = TopicPartitionList::new();
            loop {
                let metadata = consumer.fetch_metadata(Some(&output), Duration::from_secs(10))?;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !partitions.is_empty() {
                    for partition in partitions {
                        assignment.add_partition_offset(&output, partition, Offset::Beginning)?;
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            consumer.assign(&assignment)?;
            while reading.load(Ordering::Relaxed) {
                if let Some(message) = consumer.poll(Duration::from_millis(20)) {
                    let message = message?;
                    let version = message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == "stagehost-handler-version"))
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .unwrap_or_default();
                    arrivals.lock().unwrap().push((Instant::now(), version));
                }
            }
            Ok(())
        })
    };

    // A steady stream: one message every 1/rate s, sent in small batches.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "1")
        .create()?;
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (sending, input) = (sending.clone(), input.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent: u64 = 0;
            while sending.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let value = format!(r#"{{"x": {sent}, "y": 1}}"#);
                    let key = format!("k{}", sent % 24);
                    let record = FutureRecord::to(&input).key(&key).payload(&value);
                    let _ = producer.send_result(record);
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sent
        })
    };

    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up: group join, steady state
    let steady_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(steady_seconds)).await;
    let steady_to = Instant::now();
    let mut swap_points: Vec<(&str, Instant, String)> = Vec::new();
    for swap in 0..swaps {
        let bytes = &fresh_build(&builds[(swap + 1) % 2], &run, swap);
        let version = version_of(bytes);
        if swap % 2 == 0 {
            let at = Instant::now();
            std::fs::write(&watched, bytes)?;
            swap_points.push(("file", at, version));
        } else {
            let at = Instant::now();
            let reloader = reloader.clone();
            let bytes = bytes.clone();
            tokio::task::spawn_blocking(move || reloader.swap("add", &bytes, "bench".into()))
                .await??;
            swap_points.push(("api", at, version));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    sending.store(false, Ordering::Relaxed);
    let sent = sender.await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    reading.store(false, Ordering::Relaxed);
    reader.join().expect("reader thread")?;
    let _ = stop_tx.send(());
    host.await??;

    let arrivals = arrivals.lock().unwrap().clone();
    // The longest gap in a window, and when it began.
    let longest_gap = |from: Instant, to: Instant| -> (f64, Instant) {
        arrivals
            .windows(2)
            .filter(|w| w[0].0 >= from && w[1].0 <= to)
            .map(|w| ((w[1].0 - w[0].0).as_secs_f64() * 1000.0, w[0].0))
            .fold((0.0, from), |a, b| if b.0 > a.0 { b } else { a })
    };
    let gap_between = |from: Instant, to: Instant| longest_gap(from, to).0;
    println!(
        "hot-swap benchmark: {rate} msg/s offered, {sent} sent, {} received, {swaps} swaps",
        arrivals.len()
    );
    println!(
        "steady state (no swap, {steady_seconds} s): longest gap {:.1} ms",
        gap_between(steady_from, steady_to)
    );
    let mut gaps = Vec::new();
    let mut firsts = Vec::new();
    println!(
        "{:>4} {:>5} {:>14} {:>18} {:>22}",
        "swap", "how", "longest gap ms", "gap began at ms", "first new output ms"
    );
    for (index, (how, at, version)) in swap_points.iter().enumerate() {
        let (gap, began) = longest_gap(
            *at - Duration::from_millis(200),
            *at + Duration::from_millis(1200),
        );
        let began = began.duration_since(*at).as_secs_f64() * 1000.0
            - at.duration_since(began).as_secs_f64() * 1000.0;
        let first = arrivals
            .iter()
            .find(|(when, v)| when >= at && v == version)
            .map(|(when, _)| (*when - *at).as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN);
        println!(
            "{:>4} {:>5} {:>14.1} {:>18.1} {:>22.1}",
            index + 1,
            how,
            gap,
            began,
            first
        );
        gaps.push(gap);
        firsts.push(first);
    }
    gaps.sort_by(f64::total_cmp);
    firsts.sort_by(f64::total_cmp);
    println!(
        "longest gap around a swap: median {:.1} ms, max {:.1} ms (goal <= 50 ms)",
        percentile(&gaps, 0.5),
        gaps[gaps.len() - 1]
    );
    println!(
        "change to first new output: median {:.1} ms, max {:.1} ms (goal <= 1000 ms)",
        percentile(&firsts, 0.5),
        firsts[firsts.len() - 1]
    );
    Ok(())
}

/// `component` with a custom section naming this run and swap appended, so
/// that every swap installs bytes never compiled before (as a new build
/// would be) and the compile cache cannot answer for it.
fn fresh_build(component: &[u8], run: &str, swap: usize) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"stagehost-bench";
    let payload = format!("{run}-{swap}");
    let mut section = Vec::new();
    leb128(name.len(), &mut section);
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section id
    leb128(section.len(), &mut bytes);
    bytes.extend_from_slice(&section);
    bytes
}
