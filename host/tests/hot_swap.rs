//! Hot swapping under continuous load on the real broker: versions replaced
//! by file and by the API (once to a handler that computes differently) lose
//! and repeat nothing, and each key sees versions change only forward.
//! Invalid candidates are rejected while traffic flows, and SIGHUP re-reads
//! the config.

mod common;

use common::*;
use serde_json::json;
use stagehost::Ready;
use stagehost::control::reload::{Reloader, SwapError};
use stagehost::handlers::{HandlerComponent, version_of};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(120);

/// A calculator whose `add` lives in `dir` (copied there so it can be replaced).
fn swappable_yaml(topics: &Topics, dir: &Path, self_test: &str) -> String {
    std::fs::copy(plugin("wasm32-wasip2", "add"), dir.join("add.wasm")).unwrap();
    calculator_yaml(topics, 3).replace(
        "    path: target/wasm32-wasip2/release/add.wasm\n",
        &format!("    path: {}\n{self_test}", dir.join("add.wasm").display()),
    )
}

async fn start(yaml: String) -> (RunningHost, Arc<Reloader>, std::net::SocketAddr) {
    let (ready_tx, ready_rx) = oneshot::channel::<Ready>();
    let host = RunningHost::start_with(config_from(yaml), move |ready| {
        let _ = ready_tx.send(ready);
    });
    let ready = tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("host ready")
        .expect("host started");
    (
        host,
        ready.reloader,
        ready.admin.expect("admin port enabled"),
    )
}

fn temp_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn registry_version(reloader: &Reloader, handler: &str) -> String {
    reloader
        .registry()
        .load()
        .handler(handler)
        .unwrap()
        .version()
        .to_string()
}

/// Waits (bounded) until the running version of `add` is `version`.
async fn until_serving(reloader: &Reloader, version: &str) {
    for _ in 0..200 {
        if registry_version(reloader, "add").await == version {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("version {version} never started serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_lose_and_repeat_nothing() {
    const MESSAGES: u64 = 6000;
    const KEYS: u64 = 12;
    let topics = Topics::new();
    let dir = temp_dir("swap-load");
    let (host, reloader, admin) = start(swappable_yaml(&topics, &dir, "")).await;

    // Versions in swap order, and what each computes for x, y = 1.
    let read_bytes = |target: &str, name: &str| std::fs::read(plugin(target, name)).unwrap();
    let steps = [
        (read_bytes("wasm32-wasip2", "add"), 1i64),
        (read_bytes("wasm32-wasip2", "subtract"), -1),
        (read_bytes("wasm32-wasip1", "add"), 1),
        (read_bytes("wasm32-wasip1", "subtract"), -1),
    ];
    let versions: Vec<String> = steps.iter().map(|(bytes, _)| version_of(bytes)).collect();
    assert_eq!(
        versions.iter().collect::<BTreeSet<_>>().len(),
        4,
        "four distinct versions"
    );
    assert_eq!(registry_version(&reloader, "add").await, versions[0]);

    let producer = producer();
    let input = topics.input.clone();
    let sending = tokio::spawn(async move {
        for batch in 0..(MESSAGES / 50) {
            let mut deliveries = Vec::new();
            for id in batch * 50..(batch + 1) * 50 {
                let value = json!({"operation": "sum", "x": id, "y": 1, "id": id}).to_string();
                let key = format!("key-{}", id % KEYS);
                let record = rdkafka::producer::FutureRecord::to(&input)
                    .key(&key)
                    .payload(&value);
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            }
            for delivery in deliveries {
                delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });

    // 1: by file, written in place (not atomically): the watcher waits for it to settle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::write(dir.join("add.wasm"), &steps[1].0).unwrap();
    until_serving(&reloader, &versions[1]).await;
    // 2: by the admin API.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = http(admin, "PUT", "/handlers/add", None, &steps[2].0).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&versions[2]), "{body}");
    let (_, listed) = http(admin, "GET", "/handlers", None, b"").await;
    assert!(
        listed.contains(&versions[2]) && listed.contains(&versions[1]),
        "current and previous: {listed}"
    );
    // 3: by file, replaced atomically with a rename.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(dir.join("add.wasm.tmp"), &steps[3].0).unwrap();
    std::fs::rename(dir.join("add.wasm.tmp"), dir.join("add.wasm")).unwrap();
    until_serving(&reloader, &versions[3]).await;
    assert!(
        !sending.is_finished(),
        "the swaps happened while messages were still flowing"
    );
    sending.await.unwrap();

    let results = read(
        &topics.output,
        MESSAGES as usize,
        WAIT,
        Duration::from_secs(2),
    )
    .await;
    host.stop().await.expect("host stops cleanly");
    let dead = read(&topics.dead_letter, 0, WAIT, Duration::from_millis(300)).await;
    assert!(dead.is_empty(), "no dead letters: {dead:?}");

    let mut seen = BTreeSet::new();
    let mut ordered: BTreeMap<(i32, i64), &Received> = BTreeMap::new();
    for result in &results {
        assert!(
            seen.insert(result.json()["id"].as_u64().unwrap()),
            "id repeated"
        );
        ordered.insert((result.partition, result.offset), result);
    }
    assert_eq!(seen.len() as u64, MESSAGES, "every id exactly once");
    let mut step_per_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut used = BTreeSet::new();
    for result in ordered.values() {
        let version = result.header("stagehost-handler-version");
        let step = versions
            .iter()
            .position(|v| v == version)
            .expect("a known version");
        used.insert(step);
        let value = result.json();
        let x = value["x"].as_i64().unwrap();
        assert_eq!(
            value["result"],
            json!(x + steps[step].1),
            "version {version} computed"
        );
        let key = result.key.clone().unwrap();
        let last = step_per_key.entry(key.clone()).or_insert(step);
        assert!(
            step >= *last,
            "{key}: version went back from step {last} to {step}"
        );
        *last = step;
    }
    assert_eq!(
        used.len(),
        4,
        "every version served some messages: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_candidates_are_rejected_while_traffic_flows() {
    let topics = Topics::new();
    let dir = temp_dir("swap-invalid");
    let self_test = "    self_test:\n      - input: {x: 5, y: 2}\n        output: {x: 5, y: 2, result: 7}\n      - input: {x: five}\n        error: invalid-input\n";
    let (host, reloader, admin) = start(swappable_yaml(&topics, &dir, self_test)).await;
    let original = registry_version(&reloader, "add").await;
    let producer = producer();
    let send_some = |from: u64| {
        let producer = producer.clone();
        let input = topics.input.clone();
        async move {
            for id in from..from + 20 {
                let value = json!({"operation": "sum", "x": id, "y": 1, "id": id}).to_string();
                send(
                    &producer,
                    &input,
                    Some(&format!("k{id}")),
                    value.as_bytes(),
                    &[],
                )
                .await;
            }
        }
    };
    send_some(0).await;

    let add = std::fs::read(plugin("wasm32-wasip2", "add")).unwrap();
    let subtract = std::fs::read(plugin("wasm32-wasip2", "subtract")).unwrap();
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let rejected = |result: Result<Arc<HandlerComponent>, SwapError>| match result {
        Err(SwapError::Rejected(reason)) => reason,
        Err(other) => panic!("expected a rejection, got {other}"),
        Ok(component) => panic!("accepted {}", component.version()),
    };
    let reason = rejected(reloader.swap("add", b"not wasm at all", "upload".into()));
    assert!(
        reason.contains("not a valid WebAssembly component"),
        "{reason}"
    );
    let reason = rejected(reloader.swap("add", &empty_component, "upload".into()));
    assert!(reason.contains("does not implement"), "{reason}");
    let (status, body) = http(admin, "PUT", "/handlers/add", None, &subtract).await;
    assert_eq!(
        status, 422,
        "a failing self-test is rejected through the API: {body}"
    );
    assert!(body.contains("self-test case 1 failed"), "{body}");
    let (status, metrics) = http(admin, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("stagehost_handler_swaps_total"),
        "{metrics}"
    );
    let reason = rejected(reloader.swap("add", &add[..add.len() - 100], "upload".into()));
    assert!(reason.contains("not a valid"), "{reason}");
    assert!(matches!(
        reloader.swap("nope", &add, "upload".into()),
        Err(SwapError::UnknownHandler(_))
    ));
    assert!(matches!(
        reloader.rollback("add"),
        Err(SwapError::NoPrevious(_))
    ));

    // A truncated file and a garbage file on disk are never loaded.
    std::fs::write(dir.join("add.wasm"), &add[..add.len() / 3]).unwrap();
    send_some(20).await;
    std::fs::write(dir.join("add.wasm"), b"garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(registry_version(&reloader, "add").await, original);
    send_some(40).await;

    // A good upload and a rollback.
    let other_build = std::fs::read(plugin("wasm32-wasip1", "add")).unwrap();
    let upgraded = reloader
        .swap("add", &other_build, "upload".into())
        .expect("valid");
    assert_ne!(upgraded.version(), original);
    let (status, body) = http(admin, "POST", "/handlers/add/rollback", None, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&original), "{body}");
    assert_eq!(registry_version(&reloader, "add").await, original);
    send_some(60).await;

    let results = read(&topics.output, 80, WAIT, Duration::from_secs(2)).await;
    host.stop().await.expect("host stops cleanly");
    assert_eq!(results.len(), 80, "every message exactly once");
    let ids: BTreeSet<u64> = results
        .iter()
        .map(|r| r.json()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 80);
    for result in &results {
        let value = result.json();
        assert_eq!(value["result"], json!(value["x"].as_i64().unwrap() + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_re_reads_the_config_and_re_routes() {
    let topics = Topics::new();
    let (child, config, yaml) = spawn_host(&topics);
    let producer = producer();
    let plus = br#"{"operation": "plus", "x": 5, "y": 2}"#;
    send(&producer, &topics.input, Some("before"), plus, &[]).await;
    let dead = read(&topics.dead_letter, 1, WAIT, Duration::from_millis(100)).await;
    assert_eq!(dead[0].header("stagehost-error-kind"), "unknown-route");

    // Re-route `sum` to subtract and add `plus`; then an invalid config, which must be ignored.
    let rerouted = yaml.replace(
        "        sum: add\n",
        "        sum: subtract\n        plus: add\n",
    );
    std::fs::write(&config, &rerouted).unwrap();
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(&config, rerouted.replace("dead_letter:", "dead_lettr:")).unwrap();
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;

    send(&producer, &topics.input, Some("plus"), plus, &[]).await;
    send(
        &producer,
        &topics.input,
        Some("sum"),
        br#"{"operation": "sum", "x": 5, "y": 2}"#,
        &[],
    )
    .await;
    let results = read(&topics.output, 2, WAIT, Duration::from_secs(1)).await;
    signal(&child, "TERM");
    let out = wait_output(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("config re-read rejected"),
        "the bad config was reported: {stderr}"
    );

    let by_key: BTreeMap<_, _> = results
        .iter()
        .map(|r| (r.key.clone().unwrap(), r.json()))
        .collect();
    assert_eq!(by_key["plus"]["result"], json!(7));
    assert_eq!(
        by_key["sum"]["result"],
        json!(3),
        "sum now routes to subtract"
    );
}
