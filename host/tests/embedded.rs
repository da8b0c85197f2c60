//! The first look without Kafka: the shipped `config.yml` with
//! `brokers: embedded` runs on the in-memory development broker, which
//! listens on a fixed address (here `STAGEHOST_EMBEDDED_LISTEN`, a free
//! port, since the test broker holds 9092): topics are created, `host send`
//! and `host tail` reach it there, the tutorial's sum comes out as 7, and
//! SIGTERM stops the host at any moment, also while it starts.

mod common;

use common::numbered::HostProcess;
use common::repo_root;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped calculator with only its brokers (and admin port) changed.
fn embedded_config() -> String {
    let shipped = std::fs::read_to_string(repo_root().join("config.yml")).unwrap();
    assert!(shipped.contains("  brokers: 127.0.0.1:9092\n"), "{shipped}");
    shipped
        .replace("  brokers: 127.0.0.1:9092\n", "  brokers: embedded\n")
        .replace("listen: 127.0.0.1:9644", "listen: 127.0.0.1:0")
}

fn host(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_shipped_config_runs_on_the_embedded_broker() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut running = HostProcess::start_with_env(
        &embedded_config(),
        &[("STAGEHOST_EMBEDDED_LISTEN", &address)],
    );
    running.wait_for_log("stagehost running", Duration::from_secs(120));
    let sent = host(&[
        "send",
        "calc-requests",
        r#"{"operation": "sum", "operator_1": "5", "operator_2": "2"}"#,
        "--brokers",
        &address,
    ]);
    assert!(sent.status.success(), "{sent:?}");
    // From the beginning: waits for the first result, however soon after
    // the send this runs.
    let tailed = host(&[
        "tail",
        "calc-results",
        "--offset",
        "beginning",
        "--count",
        "1",
        "--brokers",
        &address,
    ]);
    assert!(tailed.status.success(), "{tailed:?}");
    let line: Value = serde_json::from_slice(&tailed.stdout).expect("one JSON line");
    let value = match &line["value"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    assert_eq!(value["result"], 7, "{line}");
    let log = running.log();
    assert!(
        log.contains("embedded in-memory development broker"),
        "{log}"
    );
    assert!(running.stop("TERM"), "the host stopped cleanly");
}

#[test]
fn sigterm_stops_the_host_while_it_starts() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut running = HostProcess::start_with_env(
        &embedded_config(),
        &[("STAGEHOST_EMBEDDED_LISTEN", &address)],
    );
    // As soon as the host has begun: its first log line.
    running.wait_for_log("handler loaded", Duration::from_secs(120));
    assert!(
        running.stop("TERM"),
        "the host stopped cleanly while starting"
    );
}
