//! The `host` binary as a user runs it: `check`, `graph`, `send`, `tail`,
//! `plugin inspect`, `bench`, and `run` stopped by SIGTERM or refusing a
//! stage it does not know.

mod common;

use common::*;
use std::process::{Command, Output};
use std::time::Duration;

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("host runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_calculator_and_loads_its_plugins() {
    let out = host(&["check", "config.yml"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.starts_with("config.yml: OK"), "{stdout}");
    assert!(stdout.contains("operation = \"sum\" -> add"), "{stdout}");
    assert!(stdout.contains("loaded add: version "), "{stdout}");
    assert!(stdout.contains("loaded subtract: version "), "{stdout}");
}

#[test]
fn graph_draws_the_calculator_in_mermaid_and_dot() {
    let mermaid = host(&["graph", "config.yml"]);
    let stdout = text(&mermaid.stdout);
    assert!(mermaid.status.success(), "{}", text(&mermaid.stderr));
    assert!(stdout.starts_with("flowchart LR\n"), "{stdout}");
    for line in [
        "[/\"calc-requests\"/]",
        "([\"calc-results\"])",
        "<b>calculator</b><br/>operation: add|sum → add, div|divide → divide, mul|multiply → multiply, sub|subtract → subtract",
        "-. \"dead letter\" .->",
    ] {
        assert!(stdout.contains(line), "no `{line}` in {stdout}");
    }

    let dot = host(&["graph", "config.yml", "--format", "dot"]);
    let stdout = text(&dot.stdout);
    assert!(dot.status.success(), "{}", text(&dot.stderr));
    assert!(stdout.starts_with("digraph pipeline {"), "{stdout}");
    assert!(stdout.trim_end().ends_with('}'), "{stdout}");
    assert_eq!(
        stdout.matches(" -> ").count(),
        3,
        "input, output and dead letter: {stdout}"
    );
}

#[test]
fn run_refuses_a_stage_the_config_does_not_have() {
    let out = host(&["run", "config.yml", "--stage", "nope"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config.yml: stages: `--stage nope`: no such stage (stages: calculator)"),
        "{stderr}"
    );
}

#[test]
fn bench_compares_wasm_with_native_on_the_same_answers() {
    let out = host(&[
        "bench",
        "config.yml",
        "--messages",
        "3000",
        "--fresh-messages",
        "50",
        "--operation",
        "sub",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("handler `subtract`"), "{stdout}");
    for path in ["native", "wasm, reused instance", "wasm, fresh instance"] {
        assert!(stdout.contains(path), "no `{path}` row: {stdout}");
    }
    assert!(
        stdout.contains("all 3000 answers of the wasm path equal the native ones"),
        "{stdout}"
    );
    // A handler without a native twin (Python's multiply) is measured alone.
    let alone = host(&[
        "bench",
        "config.yml",
        "--messages",
        "200",
        "--fresh-messages",
        "5",
        "--operation",
        "mul",
    ]);
    let stdout = text(&alone.stdout);
    assert!(alone.status.success(), "{}", text(&alone.stderr));
    assert!(stdout.contains("handler `multiply`"), "{stdout}");
    assert!(stdout.contains("no native build of `multiply`"), "{stdout}");
    assert!(!stdout.contains("native (same logic"), "{stdout}");
    let unknown = host(&["bench", "config.yml", "--operation", "modulo"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("routes operation `modulo`"),
        "{}",
        text(&unknown.stderr)
    );
}

#[test]
fn check_names_file_line_and_field() {
    let out = host(&[
        "check",
        "host/tests/fixtures/config/invalid/unknown-handler.yml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "unknown-handler.yml:16:9: stages[0].route.to.sub: unknown handler `substract`"
        ),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_missing_plugin_at_its_path_field() {
    let dir = std::env::temp_dir().join(unique("stagehost-check"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        "kafka:\n  brokers: localhost:9092\nhandlers:\n  add:\n    path: nowhere/add.wasm\nstages:\n  - name: s\n    input: a\n    output: b\n    dead_letter: c\n    handler: add\n",
    )
    .unwrap();
    let out = host(&["check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config.yml:5:5: handlers.add.path: cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere/add.wasm"), "{stderr}");
}

#[test]
fn plugin_inspect_tells_a_handler_from_anything_else() {
    let add = plugin("wasm32-wasip2", "add");
    let out = host(&["plugin", "inspect", add.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("implements stagehost:handler/stage-handler"));
    let out = host(&["plugin", "inspect", "config.yml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a valid WebAssembly component"));
}

#[test]
fn send_and_tail_round_trip_on_the_broker() {
    let topic = unique("cli");
    let brokers = brokers();
    let message = r#"{"operation":"sum","operator_1":"5","operator_2":"2"}"#;
    let out = host(&[
        "send",
        &topic,
        message,
        "--key",
        "k1",
        "--brokers",
        &brokers,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("sent to {topic} partition")));

    let out = host(&["send", &topic, "not json", "--brokers", &brokers]);
    assert_eq!(out.status.code(), Some(1), "non-JSON needs --raw");
    assert!(text(&out.stderr).contains("is not JSON"));

    let out = host(&[
        "tail",
        &topic,
        "--count",
        "1",
        "--idle-timeout",
        "30",
        "--brokers",
        &brokers,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["key"], "k1");
    // The value as produced, byte for byte (no longer re-parsed as JSON).
    assert_eq!(line["value"], message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_and_stops_cleanly_on_sigterm() {
    let topics = Topics::new();
    let (child, _, _) = spawn_host(&topics);

    let producer = producer();
    send(
        &producer,
        &topics.input,
        Some("k"),
        br#"{"operation": "sub", "operator_1": "5", "operator_2": "2"}"#,
        &[],
    )
    .await;
    let results = read(
        &topics.output,
        1,
        Duration::from_secs(90),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(results[0].json()["result"], 3);

    signal(&child, "TERM");
    let out = wait_output(child).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("draining") && stderr.contains("stopped"),
        "{stderr}"
    );
}
