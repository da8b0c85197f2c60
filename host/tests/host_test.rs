//! `host test HANDLER.wasm FIXTURES` as a handler's author runs it, without
//! a broker: every shipped handler (Rust, Python and JavaScript) passes its
//! `plugins/NAME/fixtures.jsonl`; a wrong expectation fails the run with a
//! diff that names the case; an expected error passes; `--config` and
//! `--handler` bring the handler's limits and settings; a handler that uses
//! `state` keeps it from case to case of a file.

mod common;

use common::{plugin, repo_root, report, unique};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `host test WASM FIXTURES [ARGS]`, from the repository root.
fn host_test(wasm: &Path, fixtures: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("test")
        .arg(wasm)
        .arg(fixtures)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("host runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cases of a fixture file (its lines that are not blank or comments).
fn case_count(fixtures: &Path) -> usize {
    std::fs::read_to_string(fixtures)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .count()
}

/// Whether a diff line of `printed` (after its indentation) starts with
/// `sign` (`-` expected, `+` got) and holds `text`.
fn diff_has(printed: &str, sign: char, text: &str) -> bool {
    printed.lines().any(|line| {
        line.trim_start()
            .strip_prefix(sign)
            .is_some_and(|rest| rest.starts_with(' ') && rest.contains(text))
    })
}

/// Runs `plugins/NAME/fixtures.jsonl` on the built `NAME.wasm` and checks
/// that every case passed, one `ok` line each.
fn passes_its_fixtures(name: &str) {
    let wasm = plugin("wasm32-wasip2", name);
    let fixtures = repo_root()
        .join("plugins")
        .join(name)
        .join("fixtures.jsonl");
    let cases = case_count(&fixtures);
    assert!(cases >= 3, "{}: too few cases", fixtures.display());
    let out = host_test(&wasm, &fixtures, &[]);
    let text = report(&out);
    assert!(out.status.success(), "{name}: {text}");
    let printed = stdout(&out);
    let ok_lines = printed
        .lines()
        .filter(|line| line.starts_with("ok "))
        .count();
    assert_eq!(ok_lines, cases, "{name}: {text}");
    assert!(
        printed.ends_with(&format!("{cases} passed, 0 failed\n")),
        "{name}: {text}"
    );
}

#[test]
fn the_rust_handlers_pass_their_fixtures() {
    for name in ["add", "subtract", "parse", "enrich", "audit", "notify"] {
        passes_its_fixtures(name);
    }
}

#[test]
fn the_python_handler_passes_its_fixtures() {
    passes_its_fixtures("multiply");
}

#[test]
fn the_js_handler_passes_its_fixtures() {
    passes_its_fixtures("divide");
}

/// A fixture file of these lines in a fresh temporary directory.
fn fixture_file(lines: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("host-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fixtures.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_naming_the_case() {
    let fixtures = fixture_file(&[
        r#"{"name": "right", "json": {"x": 5, "y": 2}, "outputs": [{"json": {"x": 5, "y": 2, "result": 7}}]}"#,
        r#"{"name": "wrong on purpose", "json": {"x": 5, "y": 2}, "outputs": [{"json": {"x": 5, "y": 2, "result": 8}}]}"#,
        r#"{"name": "an output where an error comes", "json": {"x": "five", "y": 2}, "outputs": [{"json": {"result": 7}}]}"#,
    ]);
    let out = host_test(&plugin("wasm32-wasip2", "add"), &fixtures, &[]);
    let text = report(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    let printed = stdout(&out);
    assert!(printed.contains("ok   1 right\n"), "{text}");
    assert!(printed.contains("FAIL 2 wrong on purpose\n"), "{text}");
    assert!(diff_has(&printed, '-', r#""result": 8"#), "{text}");
    assert!(diff_has(&printed, '+', r#""result": 7"#), "{text}");
    assert!(!diff_has(&printed, '-', r#""x": 5"#), "{text}");
    assert!(
        printed.contains("FAIL 3 an output where an error comes\n"),
        "{text}"
    );
    assert!(
        diff_has(&printed, '+', r#""error": "invalid-input""#),
        "{text}"
    );
    assert!(printed.ends_with("1 passed, 2 failed\n"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 of 3 cases failed"),
        "{text}"
    );
}

#[test]
fn an_expected_error_passes_for_a_bad_input_and_only_that_kind() {
    let fixtures = fixture_file(&[
        r#"{"name": "five is no number", "json": {"x": "five", "y": 2}, "error": "invalid-input"}"#,
        r#"{"name": "not JSON", "value": "5 + 2", "error": "invalid-input"}"#,
    ]);
    let out = host_test(&plugin("wasm32-wasip2", "subtract"), &fixtures, &[]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(stdout(&out).ends_with("2 passed, 0 failed\n"), "{text}");

    let fixtures = fixture_file(&[
        r#"{"name": "the wrong kind", "json": {"x": "five", "y": 2}, "error": "transient"}"#,
    ]);
    let out = host_test(&plugin("wasm32-wasip2", "subtract"), &fixtures, &[]);
    let text = report(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(stdout(&out).contains("FAIL 1 the wrong kind\n"), "{text}");
    assert!(
        diff_has(&stdout(&out), '-', r#""error": "transient""#),
        "{text}"
    );
    assert!(
        diff_has(&stdout(&out), '+', r#""error": "invalid-input""#),
        "{text}"
    );
}

#[test]
fn the_config_brings_the_handlers_limits_and_settings() {
    // A 300 ms limit: a 600 ms sleep, within the default 1 s, times out; a
    // trap then costs the instance, and the next case gets a fresh one.
    let dir = std::env::temp_dir().join(unique("host-test-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let hostile = plugin("wasm32-wasip2", "hostile");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "kafka:\n  brokers: 127.0.0.1:9092\n\
             handlers:\n  hostile:\n    path: {}\n    limits:\n      timeout_ms: 300\n\
             stages:\n  - name: s\n    input: in\n    output: out\n    dead_letter: dlq\n    handler: hostile\n",
            hostile.display()
        ),
    )
    .unwrap();
    let fixtures = fixture_file(&[
        r#"{"name": "past the config's time limit", "json": {"do": "sleep", "ms": 600}, "error": "timeout"}"#,
        r#"{"name": "a panic traps", "json": {"do": "panic"}, "error": "trap"}"#,
        r#"{"name": "a fresh instance after the trap", "json": {"do": "echo"}, "outputs": [{"json": {"do": "echo"}}]}"#,
    ]);
    let config_args = ["--config", config.to_str().unwrap(), "--handler", "hostile"];
    let out = host_test(&hostile, &fixtures, &config_args);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(stdout(&out).ends_with("3 passed, 0 failed\n"), "{text}");
    // Without the config the sleep fits in the default limit.
    let out = host_test(&hostile, &fixtures, &[]);
    let text = report(&out);
    assert!(
        stdout(&out).contains("FAIL 1 past the config's time limit\n"),
        "{text}"
    );

    // examples/graph.yml sets notify's threshold to 100; --setting replaces it.
    let notify = plugin("wasm32-wasip2", "notify");
    let fixtures = fixture_file(&[
        r#"{"name": "7 is large past threshold 5", "json": {"operation": "add", "x": 5, "y": 2, "result": 7}, "outputs": [{"json": {"notice": "7 = 5 add 2", "result": 7, "source": null}, "topic": "large"}]}"#,
    ]);
    let graph = repo_root().join("examples/graph.yml");
    let graph = graph.to_str().unwrap();
    let out = host_test(
        &notify,
        &fixtures,
        &["--config", graph, "--handler", "notify"],
    );
    assert!(!out.status.success(), "{}", report(&out));
    let out = host_test(
        &notify,
        &fixtures,
        &[
            "--config",
            graph,
            "--handler",
            "notify",
            "--setting",
            "threshold=5",
        ],
    );
    assert!(out.status.success(), "{}", report(&out));
    let out = host_test(
        &notify,
        &fixtures,
        &["--config", graph, "--handler", "nope"],
    );
    let text = report(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("has no handler `nope`"), "{text}");
}

#[test]
fn a_bad_fixture_line_is_named() {
    let fixtures = fixture_file(&[
        "# a comment",
        r#"{"json": {"x": 1, "y": 2}, "outputs": []}"#,
        r#"{"json": {"x": 1}, "outptus": []}"#,
    ]);
    let out = host_test(&plugin("wasm32-wasip2", "add"), &fixtures, &[]);
    let text = report(&out);
    assert!(!out.status.success(), "{text}");
    let at = format!("{}:3: ", fixtures.display());
    assert!(text.contains(&at), "{text}");
    assert!(text.contains("unknown field `outptus`"), "{text}");
}

/// A handler that keeps a running total of `n` in its state, and a `mark`
/// entry that expires 100 ms after the message that set it; a negative `n`
/// writes, then fails.
const RUNNING_TOTAL: &str = r#"
use stagehost_guest::{HandlerError, Value, json_handler, state};

pub fn handle(mut input: Value) -> Result<Value, HandlerError> {
    let n = input["n"]
        .as_i64()
        .ok_or_else(|| HandlerError::invalid_input("`n` must be an integer"))?;
    if n < 0 {
        state::set_json(b"total", &Value::from(-1000));
        return Err(HandlerError::invalid_input("`n` must not be negative"));
    }
    let total = state::get_json(b"total").and_then(|v| v.as_i64()).unwrap_or(0) + n;
    state::set_json(b"total", &Value::from(total));
    if input["mark"] == Value::Bool(true) {
        state::set_with_ttl(b"mark", b"1", Some(100));
    }
    input["total"] = Value::from(total);
    input["marked"] = Value::from(state::get(b"mark").is_some());
    Ok(input)
}

json_handler!(handle);
"#;

#[test]
fn a_stateful_handler_keeps_its_state_from_case_to_case() {
    // Scaffolded outside the checkout, its logic replaced, built as a user would.
    let outside = std::env::temp_dir().join(unique("host-test-state"));
    std::fs::create_dir_all(&outside).unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["new-plugin", "total", "--dir", "total"])
        .current_dir(&outside)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", report(&made));
    let dir = outside.join("total");
    std::fs::write(dir.join("src/lib.rs"), RUNNING_TOTAL).unwrap();
    let target = repo_root().join("target/new-plugin");
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", report(&built));
    let wasm = target.join("wasm32-wasip2/release/total.wasm");

    let fixtures = fixture_file(&[
        r#"{"name": "the first adds to nothing", "json": {"n": 5}, "timestamp": 1000, "outputs": [{"json": {"n": 5, "total": 5, "marked": false}}]}"#,
        r#"{"name": "a failed call's writes are dropped", "json": {"n": -1}, "error": "invalid-input"}"#,
        r#"{"name": "the total runs on", "json": {"n": 2, "mark": true}, "timestamp": 1000, "outputs": [{"json": {"n": 2, "mark": true, "total": 7, "marked": true}}]}"#,
        r#"{"name": "the mark lives 100 ms", "json": {"n": 0}, "timestamp": 1050, "outputs": [{"json": {"n": 0, "total": 7, "marked": true}}]}"#,
        r#"{"name": "then expires", "json": {"n": 1}, "timestamp": 1200, "outputs": [{"json": {"n": 1, "total": 8, "marked": false}}]}"#,
    ]);
    let out = host_test(&wasm, &fixtures, &[]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(stdout(&out).ends_with("5 passed, 0 failed\n"), "{text}");
    // Each run of a file starts from an empty state.
    let out = host_test(&wasm, &fixtures, &[]);
    assert!(out.status.success(), "{}", report(&out));
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn a_case_starts_from_given_state_and_checks_the_state_it_leaves() {
    let wasm = plugin("wasm32-wasip2", "running_total");
    let fixtures = fixture_file(&[
        r#"{"name": "from saved totals", "key": "alice", "json": {"account": "alice", "amount": 5}, "state": {"alice": {"total": 7, "count": 2}}, "outputs": [{"json": {"account": "alice", "amount": 5, "total": 12, "count": 3}}], "expect_state": {"alice": {"total": 12, "count": 3}, "bob": null}}"#,
        r#"{"name": "a bad amount leaves the state", "key": "alice", "json": {"account": "alice", "amount": "x"}, "error": "invalid-input", "expect_state": {"alice": {"total": 12, "count": 3}}}"#,
        r#"{"name": "wrong total", "key": "bob", "json": {"account": "bob", "amount": 1}, "outputs": [{"json": {"account": "bob", "amount": 1, "total": 1, "count": 1}}], "expect_state": {"bob": {"total": 2, "count": 1}}}"#,
    ]);
    let out = host_test(&wasm, &fixtures, &[]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let printed = stdout(&out);
    assert!(printed.contains("ok   1 from saved totals\n"), "{text}");
    assert!(
        printed.contains("ok   2 a bad amount leaves the state\n"),
        "{text}"
    );
    assert!(printed.contains("FAIL 3 wrong total\n"), "{text}");
    assert!(diff_has(&printed, '-', "\"total\": 2"), "{text}");
    assert!(diff_has(&printed, '+', "\"total\": 1"), "{text}");
    assert!(printed.ends_with("2 passed, 1 failed\n"), "{text}");

    // A handler without `state` cannot honour a case's state.
    let out = host_test(&plugin("wasm32-wasip2", "add"), &fixtures, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "case 1 has `state` or `expect_state`, but handler `add` does not import `state`"
        ),
        "{}",
        report(&out)
    );
}

#[test]
fn a_config_self_test_starts_from_state_and_checks_it() {
    let wasm = plugin("wasm32-wasip2", "running_total");
    let config = |expected_total: i64| {
        let dir = std::env::temp_dir().join(unique("self-test-state"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yml");
        let yaml = format!(
            r#"
kafka:
  brokers: embedded
handlers:
  running-total:
    path: {wasm}
    self_test:
      - input: {{account: alice, amount: 5}}
        key: alice
        state: {{alice: {{total: 7, count: 2}}}}
        output: {{account: alice, amount: 5, total: 12, count: 3}}
        expect_state: {{alice: {{total: {expected_total}, count: 3}}, bob: null}}
stages:
  - name: totals
    input: amounts
    output: totals
    dead_letter: totals-dlq
    handler: running-total
    state: {{}}
"#,
            wasm = wasm.display()
        );
        std::fs::write(&path, yaml).unwrap();
        path
    };
    let check = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["check", "--offline"])
            .arg(path)
            .output()
            .unwrap()
    };
    let good = check(&config(12));
    assert!(good.status.success(), "{}", report(&good));
    let bad = check(&config(13));
    assert!(!bad.status.success(), "{}", report(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("self-test case 1 failed")
            && stderr.contains(r#"expected state {"alice":{"count":3,"total":13},"bob":null}"#)
            && stderr.contains(r#"got {"alice":{"count":3,"total":12},"bob":null}"#),
        "{}",
        report(&bad)
    );
}
