//! Canary and shadow swaps against the real broker: a canary that
//! dead-letters everything is rolled back by itself with every message
//! accounted for, a good canary is promoted by itself without a key going
//! back to the old version, a shadow that computes differently is reported
//! and produces nothing, a shadow of a stateful handler reads the serving
//! state and keeps none of its writes, a canary of a stateful handler keeps
//! each key on one version over the stage's one state, and bad requests
//! change nothing.

mod common;

use common::{RunningHost, Topics, calculator_yaml, config_from, plugin, producer, read};
use rdkafka::producer::FutureProducer;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const VERSION: &str = "stagehost-handler-version";

/// A calculator host with its admin port.
async fn start(topics: &Topics) -> (RunningHost, SocketAddr) {
    start_yaml(calculator_yaml(topics, 2)).await
}

/// A host running `yaml`, with its admin port.
async fn start_yaml(yaml: String) -> (RunningHost, SocketAddr) {
    let (admin_sender, admin_address) = tokio::sync::oneshot::channel();
    let host = RunningHost::start_with(config_from(yaml), move |ready| {
        let _ = admin_sender.send(ready.admin.expect("the admin port listens"));
    });
    (host, admin_address.await.unwrap())
}

/// One stage keeping a running total per account (the stateful
/// `running-total` handler) on `topics`.
fn running_total_yaml(topics: &Topics) -> String {
    format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
admin:
  listen: 127.0.0.1:0
handlers:
  running-total:
    path: target/wasm32-wasip2/release/running_total.wasm
stages:
  - name: totals
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: running-total
    state: {{}}
"#,
        brokers = common::brokers(),
        group = topics.group,
        input = topics.input,
        output = topics.output,
        dead_letter = topics.dead_letter,
    )
}

/// Sends amounts 1..=`count`, keyed by their account (`account-{n % accounts}`).
async fn send_amounts(producer: &FutureProducer, topic: &str, count: u64, accounts: u64) {
    for n in 1..=count {
        let account = format!("account-{}", n % accounts);
        let value = format!(r#"{{"account": "{account}", "amount": {n}}}"#);
        common::send(producer, topic, Some(&account), value.as_bytes(), &[]).await;
    }
}

/// Checks every output's total is its account's amounts so far.
fn assert_running_totals(outputs: &[common::Received]) {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut sorted: Vec<serde_json::Value> = outputs.iter().map(|output| output.json()).collect();
    sorted.sort_by_key(|output| output["amount"].as_u64().unwrap());
    for output in sorted {
        let account = output["account"].as_str().unwrap().to_string();
        let total = totals.entry(account).or_default();
        *total += output["amount"].as_u64().unwrap();
        assert_eq!(output["total"], *total, "{output}");
    }
}

async fn handler(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (status, body) = common::http(admin, "GET", &format!("/handlers/{name}"), None, b"").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The first operand of a calculator request, its output or its dead letter.
fn operand(record: &common::Received) -> i64 {
    record.json()["operator_1"]
        .as_str()
        .expect("operator_1 is text")
        .parse()
        .expect("operator_1 is a number")
}

/// Checks each output is its request's sum, made by `version`.
fn assert_sums_by(outputs: &[common::Received], version: &str) {
    for output in outputs {
        assert_eq!(output.json()["result"], operand(output) + 1);
        assert_eq!(output.header(VERSION), version);
    }
}

/// The version serving `name` now.
async fn serving_version(admin: SocketAddr, name: &str) -> String {
    handler(admin, name).await["version"]
        .as_str()
        .expect("a version")
        .to_string()
}

/// Waits until the handler's last canary has ended, and returns its report.
async fn ended_canary(admin: SocketAddr, name: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let info = handler(admin, name).await;
        if info["last_canary"].is_object() {
            return info["last_canary"].clone();
        }
        assert!(
            started.elapsed() < WAIT,
            "the canary never ended: {}",
            info["canary"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `{"operation": "sum", ...}` requests keyed `k{n % keys}` for
/// every n in `range`, with `extra` fields in each.
async fn send_sums(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<u32>,
    keys: u32,
    extra: &str,
) {
    for n in range {
        let value =
            format!(r#"{{"operation": "sum", "operator_1": "{n}", "operator_2": "1"{extra}}}"#);
        let key = format!("k{}", n % keys);
        common::send(producer, topic, Some(&key), value.as_bytes(), &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_dead_letters_everything_is_rolled_back_by_itself_and_nothing_is_lost() {
    let topics = Topics::new();
    let (host, admin) = start(&topics).await;
    let stable = serving_version(admin, "add").await;
    // The hostile handler panics on `"do": "panic"`, which `add` ignores.
    let hostile = std::fs::read(plugin("wasm32-wasip2", "hostile")).unwrap();
    let (status, body) = common::http(
        admin,
        "PUT",
        "/handlers/add?canary=50&min_messages=20&margin_percent=5",
        None,
        &hostile,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        started["version"], stable,
        "the stable version still serves"
    );
    assert_eq!(started["canary"]["percent"], 50);
    let canary = started["canary"]["version"].as_str().unwrap().to_string();

    let producer = producer();
    send_sums(&producer, &topics.input, 0..200, 200, r#", "do": "panic""#).await;
    let report = ended_canary(admin, "add").await;
    let outcome = report["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("rolled back automatically"),
        "{outcome}"
    );
    assert!(report["messages"].as_u64().unwrap() >= 20, "{report}");
    assert_eq!(report["dead_letters"], report["messages"], "{report}");
    assert_eq!(report["stable_dead_letters"], 0, "{report}");
    assert_eq!(
        report["canary"]["dead_letters_by_kind"]["trap"],
        report["messages"]
    );
    let info = handler(admin, "add").await;
    assert!(info["canary"].is_null(), "{info}");
    assert_eq!(info["version"], stable);

    // After the rollback every key is the stable version's again.
    send_sums(
        &producer,
        &topics.input,
        200..400,
        200,
        r#", "do": "panic""#,
    )
    .await;
    // A batch the canary had already taken may finish after the verdict,
    // so the dead letters can outnumber the report's count a little.
    let started = Instant::now();
    let (outputs, letters) = loop {
        let outputs = read(&topics.output, 0, WAIT, Duration::from_millis(500)).await;
        let letters = read(&topics.dead_letter, 0, WAIT, Duration::from_millis(200)).await;
        if outputs.len() + letters.len() >= 400 {
            break (outputs, letters);
        }
        assert!(
            started.elapsed() < WAIT,
            "{} outputs and {} dead letters",
            outputs.len(),
            letters.len()
        );
    };
    host.stop().await.expect("host stops cleanly");

    // Every request came out once: as an output or as a dead letter.
    let mut seen: Vec<i64> = outputs.iter().chain(&letters).map(operand).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..400).collect::<Vec<i64>>(),
        "each request once, none lost"
    );
    assert!(letters.len() as u64 >= report["messages"].as_u64().unwrap());
    for letter in &letters {
        assert_eq!(letter.header("stagehost-error-kind"), "trap");
        assert_eq!(letter.header(VERSION), canary, "only the canary failed");
        let n = operand(letter);
        assert!(
            n < 200,
            "request {n} came after the rollback and still failed"
        );
    }
    assert_sums_by(&outputs, &stable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_is_promoted_by_itself_and_no_key_goes_back() {
    let topics = Topics::new();
    let (host, admin) = start(&topics).await;
    let stable = serving_version(admin, "add").await;
    // The other build of `add`: the same sums, another version.
    let other_build = std::fs::read(plugin("wasm32-wasip1", "add")).unwrap();

    // Bad requests change nothing.
    let refused = [
        ("/handlers/add?canary=0", 400, "1-99 percent"),
        ("/handlers/add?canary=100", 400, "1-99 percent"),
        ("/handlers/add?canary=ten", 400, "canary"),
        (
            "/handlers/no-such?canary=10",
            404,
            "unknown handler `no-such`",
        ),
    ];
    for (path, expected, reason) in refused {
        let (status, body) = common::http(admin, "PUT", path, None, &other_build).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    let (status, body) = common::http(admin, "POST", "/handlers/add/promote", None, b"").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no canary"), "{body}");
    let info = handler(admin, "add").await;
    assert!(
        info["canary"].is_null() && info["version"] == stable.as_str(),
        "{info}"
    );

    let path = "/handlers/add?canary=30&min_messages=10&promote_after_messages=20";
    let (status, body) = common::http(admin, "PUT", path, None, &other_build).await;
    assert_eq!(status, 200, "{body}");
    let candidate = handler(admin, "add").await["canary"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(candidate, stable);
    // While it runs: no second canary, no plain upload, no pin.
    let subtract = std::fs::read(plugin("wasm32-wasip2", "subtract")).unwrap();
    let (status, body) =
        common::http(admin, "PUT", "/handlers/add?canary=10", None, &subtract).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already runs"), "{body}");
    let (status, body) = common::http(admin, "PUT", "/handlers/add", None, &subtract).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = common::http(admin, "POST", "/handlers/add/pin", None, b"").await;
    assert_eq!(status, 409, "{body}");
    let info = handler(admin, "add").await;
    assert_eq!(info["canary"]["version"], candidate.as_str(), "{info}");
    assert_eq!(info["version"], stable.as_str());
    let (_, metrics) = common::http(admin, "GET", "/metrics", None, b"").await;
    for side in [
        format!(
            r#"stagehost_canary_messages{{handler="add",side="canary",version="{candidate}"}} 0"#
        ),
        format!(r#"stagehost_canary_messages{{handler="add",side="stable",version="{stable}"}} 0"#),
    ] {
        assert!(metrics.contains(&side), "{side} not in:\n{metrics}");
    }

    // 30 keys, ten rounds: the canary's keys (about 30%) reach 20 messages
    // in about three rounds, and it is promoted.
    let producer = producer();
    for round in 0..10 {
        send_sums(
            &producer,
            &topics.input,
            round * 30..(round + 1) * 30,
            30,
            "",
        )
        .await;
    }
    let report = ended_canary(admin, "add").await;
    let outcome = report["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("promoted automatically"), "{outcome}");
    assert_eq!(report["dead_letters"], 0, "{report}");
    let info = handler(admin, "add").await;
    assert_eq!(
        info["version"],
        candidate.as_str(),
        "the canary serves: {info}"
    );
    assert!(info["canary"].is_null());
    assert_eq!(
        info["pinned"],
        candidate.as_str(),
        "a promotion is kept as an upload is"
    );
    assert!(
        info["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|served| served["how"] == "promote" && served["version"] == candidate.as_str()),
        "{info}"
    );
    send_sums(&producer, &topics.input, 300..330, 30, "").await;
    let outputs = read(&topics.output, 330, WAIT, Duration::from_secs(1)).await;
    host.stop().await.expect("host stops cleanly");
    assert_eq!(outputs.len(), 330, "each request once");

    // Per key, in input order: the stable version, then the new one, never back.
    let mut by_key: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for output in &outputs {
        let n = operand(output);
        assert_eq!(output.json()["result"], n + 1);
        by_key
            .entry(output.key.clone().unwrap())
            .or_default()
            .push((n, output.header(VERSION).to_string()));
    }
    let mut canary_keys = BTreeSet::new();
    for (key, mut versions) in by_key {
        versions.sort();
        let switched = versions.iter().position(|(_, v)| *v == candidate);
        let switched = switched.unwrap_or_else(|| panic!("{key} never reached the new version"));
        assert!(
            versions[switched..].iter().all(|(_, v)| *v == candidate),
            "{key} went back to the old version: {versions:?}"
        );
        assert!(versions[..switched].iter().all(|(_, v)| *v == stable));
        if switched == 0 {
            canary_keys.insert(key);
        }
    }
    // The canary had some keys from the start, and not all of them.
    assert!(
        (1..30).contains(&canary_keys.len()),
        "keys on the canary from the first message: {canary_keys:?}"
    );
}

async fn shadow_report(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (status, body) =
        common::http(admin, "GET", &format!("/handlers/{name}/shadow"), None, b"").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the running shadow has compared `count` messages.
async fn shadow_compared(admin: SocketAddr, name: &str, count: u64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let report = shadow_report(admin, name).await;
        let compared =
            report["agreements"].as_u64().unwrap() + report["differences"].as_u64().unwrap();
        if compared >= count {
            assert_eq!(compared, count, "{report}");
            return report;
        }
        assert!(
            started.elapsed() < WAIT,
            "only {compared} compared: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `result` in the value of the first output of one side of a
/// shadow difference.
fn shown_result(side: &serde_json::Value) -> serde_json::Value {
    let value = side["outputs"][0]["value"]
        .as_str()
        .expect("an output value");
    serde_json::from_str::<serde_json::Value>(value).unwrap()["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_computes_differently_is_reported_and_produces_nothing() {
    let topics = Topics::new();
    let (host, admin) = start(&topics).await;
    let stable = serving_version(admin, "add").await;
    let subtract = std::fs::read(plugin("wasm32-wasip2", "subtract")).unwrap();
    let (status, body) = common::http(admin, "GET", "/handlers/add/shadow", None, b"").await;
    assert_eq!(status, 404, "no shadow yet: {body}");
    let (status, body) =
        common::http(admin, "PUT", "/handlers/add?shadow=true", None, &subtract).await;
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        info["version"],
        stable.as_str(),
        "the shadow does not serve"
    );
    let shadow = info["shadow"]["version"].as_str().unwrap().to_string();

    // Bad requests change nothing.
    let other_build = std::fs::read(plugin("wasm32-wasip1", "add")).unwrap();
    for (path, expected, reason) in [
        (
            "/handlers/add?shadow=true",
            409,
            "a shadow of `add` already runs",
        ),
        (
            "/handlers/add?canary=10",
            409,
            "a shadow of `add` already runs",
        ),
        ("/handlers/add?shadow=true&canary=10", 400, "not both"),
        ("/handlers/no-such?shadow=true", 404, "unknown handler"),
    ] {
        let (status, body) = common::http(admin, "PUT", path, None, &other_build).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    let (status, body) =
        common::http(admin, "DELETE", "/handlers/subtract/shadow", None, b"").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        handler(admin, "add").await["shadow"]["version"],
        shadow.as_str()
    );

    let producer = producer();
    send_sums(&producer, &topics.input, 0..30, 10, "").await;
    let outputs = read(&topics.output, 30, WAIT, Duration::from_secs(1)).await;
    assert_eq!(outputs.len(), 30, "the shadow produced nothing of its own");
    assert_sums_by(&outputs, &stable);
    let report = shadow_compared(admin, "add", 30).await;
    assert_eq!(report["differences"], 30, "{report}");
    assert_eq!(report["agreements"], 0);
    let differences = report["recent_differences"].as_array().unwrap();
    assert_eq!(differences.len(), 20, "the last 20 are kept");
    // Each difference names its input: the serving version added, the
    // shadow subtracted.
    let inputs = read(&topics.input, 30, WAIT, Duration::ZERO).await;
    for difference in differences {
        let input = inputs
            .iter()
            .find(|input| {
                i64::from(input.partition) == difference["partition"].as_i64().unwrap()
                    && input.offset == difference["offset"].as_i64().unwrap()
            })
            .unwrap_or_else(|| panic!("no input at {difference}"));
        let n = operand(input);
        assert_eq!(shown_result(&difference["serving"]), n + 1, "{difference}");
        assert_eq!(shown_result(&difference["shadow"]), n - 1, "{difference}");
    }

    let (status, body) = common::http(admin, "DELETE", "/handlers/add/shadow", None, b"").await;
    assert_eq!(status, 200, "{body}");
    let report = shadow_report(admin, "add").await;
    assert_eq!(report["outcome"], "discarded by an operator", "{report}");
    assert!(handler(admin, "add").await["shadow"].is_null());

    // A shadow that agrees, promoted: it serves from then on.
    let (status, body) = common::http(
        admin,
        "PUT",
        "/handlers/add?shadow=true",
        None,
        &other_build,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    send_sums(&producer, &topics.input, 30..40, 10, "").await;
    read(&topics.output, 40, WAIT, Duration::ZERO).await;
    let report = shadow_compared(admin, "add", 10).await;
    assert_eq!(
        (
            report["agreements"].as_u64(),
            report["differences"].as_u64()
        ),
        (Some(10), Some(0))
    );
    let (status, body) = common::http(admin, "POST", "/handlers/add/promote", None, b"").await;
    assert_eq!(status, 200, "{body}");
    let promoted = report["version"].as_str().unwrap().to_string();
    assert_eq!(handler(admin, "add").await["version"], promoted.as_str());
    send_sums(&producer, &topics.input, 40..45, 10, "").await;
    let outputs = read(&topics.output, 45, WAIT, Duration::from_secs(1)).await;
    host.stop().await.expect("host stops cleanly");
    assert_eq!(outputs.len(), 45);
    let last: Vec<&str> = outputs
        .iter()
        .filter(|output| operand(output) >= 40)
        .map(|output| output.header(VERSION))
        .collect();
    assert_eq!(last, vec![promoted.as_str(); 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_of_a_stateful_handler_reads_the_serving_state_and_keeps_none_of_its_writes() {
    let topics = Topics::new();
    let (host, admin) = start_yaml(running_total_yaml(&topics)).await;
    // The other build of the same handler: with the serving state it
    // agrees on every total; with its own writes kept, the serving totals
    // would count each amount twice.
    let other_build = std::fs::read(plugin("wasm32-wasip1", "running_total")).unwrap();
    let (status, body) = common::http(
        admin,
        "PUT",
        "/handlers/running-total?shadow=true",
        None,
        &other_build,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let producer = producer();
    send_amounts(&producer, &topics.input, 30, 3).await;
    let outputs = read(&topics.output, 30, WAIT, Duration::from_secs(1)).await;
    let report = shadow_compared(admin, "running-total", 30).await;
    host.stop().await.expect("host stops cleanly");
    assert_eq!(report["agreements"], 30, "{report}");
    assert_running_totals(&outputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_of_a_stateful_handler_keeps_each_account_on_one_version_and_one_state() {
    let topics = Topics::new();
    let (host, admin) = start_yaml(running_total_yaml(&topics)).await;
    let stable = serving_version(admin, "running-total").await;
    let other_build = std::fs::read(plugin("wasm32-wasip1", "running_total")).unwrap();
    // No verdict within this test: the canary runs throughout.
    let path = "/handlers/running-total?canary=50&min_messages=1000000";
    let (status, body) = common::http(admin, "PUT", path, None, &other_build).await;
    assert_eq!(status, 200, "{body}");
    let producer = producer();
    send_amounts(&producer, &topics.input, 60, 6).await;
    let outputs = read(&topics.output, 60, WAIT, Duration::from_secs(1)).await;
    let info = handler(admin, "running-total").await;
    host.stop().await.expect("host stops cleanly");
    assert_eq!(outputs.len(), 60);
    // Both versions read and write the stage's one state: every total is right.
    assert_running_totals(&outputs);
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for output in &outputs {
        versions
            .entry(output.json()["account"].as_str().unwrap().to_string())
            .or_default()
            .insert(output.header(VERSION).to_string());
    }
    assert!(
        versions.values().all(|seen| seen.len() == 1),
        "an account moved between versions: {versions:?}"
    );
    let used: BTreeSet<&String> = versions.values().flatten().collect();
    assert_eq!(used.len(), 2, "both versions served accounts: {versions:?}");
    assert!(used.contains(&stable));
    let counted = info["canary"]["messages"].as_u64().unwrap()
        + info["canary"]["stable_messages"].as_u64().unwrap();
    assert_eq!(counted, 60, "{info}");
}
