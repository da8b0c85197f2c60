//! `host new-plugin` as a new user runs it: the scaffolded Rust, Python and
//! JavaScript handlers, written outside the checkout, pass their own tests,
//! build into components there, pass their `fixtures.jsonl` under
//! `host test`, and answer (and refuse) messages in the host's sandbox.
//!
//! The scaffolds must build without the checkout: nothing they hold names
//! it (the guest kit and the WIT world are vendored). The Python and
//! JavaScript plugins are tested and built by running the printed next steps
//! as they are, with bash; they reuse the componentize-py virtual
//! environment that scripts/build-foreign-plugins.sh made under
//! `${STAGEHOST_CACHE:-$HOME/.cache/stagehost}` (or make it) and npm's cache.
//! The Rust build reuses one cargo target directory across runs.
//!
//! `--stateful` scaffolds (a count per key in the stage's state) do the same
//! in each language: their own tests, the build, and `host test` on their
//! fixtures, which start from given state and check the state each case
//! leaves.

mod common;

use common::*;
use serde_json::{Value, json};
use stagehost::config::Limits;
use stagehost::handlers::{HandlerSpec, Sandbox, run_guest};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn run(command: &mut Command) -> String {
    let out = command.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// Cargo in `dir`, building into one target directory that later runs reuse.
fn cargo(dir: &Path, args: &[&str]) -> String {
    run(Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", repo_root().join("target/new-plugin")))
}

#[test]
fn a_scaffolded_rust_plugin_tests_builds_and_runs_in_the_sandbox() {
    let (dir, printed) = scaffold("rust");
    assert!(printed.contains("src/lib.rs"), "{printed}");
    for vendored in [
        "guest-kit/Cargo.toml",
        "guest-kit/src/lib.rs",
        "guest-kit/wit/stage-handler.wit",
        "Cargo.lock",
    ] {
        assert!(
            dir.join(vendored).is_file(),
            "{vendored} missing: {printed}"
        );
    }
    assert!(
        printed.contains("cargo build --target wasm32-wasip2 --release"),
        "{printed}"
    );
    let artefact = "target/wasm32-wasip2/release/double.wasm";
    assert!(
        printed.contains(&format!("test {artefact} fixtures.jsonl")),
        "{printed}"
    );

    let tested = cargo(&dir, &["test", "--release"]);
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);

    let path = repo_root()
        .join("target/new-plugin")
        .join(artefact.trim_start_matches("target/"));
    passes_its_fixtures(&dir, &path);
    check_doubles_in_the_sandbox(&path);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_scaffolded_python_plugin_tests_builds_and_runs_in_the_sandbox() {
    let (dir, printed) = scaffold("python");
    assert!(printed.contains("componentize-py==0.25.1"), "{printed}");
    assert!(
        printed.contains("-d wit/stage-handler.wit -w stage-handler"),
        "{printed}"
    );
    assert!(dir.join("wit/stage-handler.wit").is_file());
    let ran = run_next_steps("python", &dir, &printed);
    assert!(ran.contains("Ran 2 tests") && ran.contains("\nOK"), "{ran}");
    assert!(ran.contains("5 passed, 0 failed"), "{ran}");
    check_doubles_in_the_sandbox(&dir.join("double.wasm"));
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_scaffolded_js_plugin_tests_builds_and_runs_in_the_sandbox() {
    let (dir, printed) = scaffold("js");
    assert!(printed.contains("npm install"), "{printed}");
    assert!(printed.contains("--wit wit/stage-handler.wit"), "{printed}");
    let ran = run_next_steps("js", &dir, &printed);
    assert!(
        ran.contains("# pass 2") && ran.contains("# fail 0"),
        "{ran}"
    );
    assert!(ran.contains("5 passed, 0 failed"), "{ran}");
    check_doubles_in_the_sandbox(&dir.join("double.wasm"));
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// `host new-plugin double --lang LANG` into a fresh directory outside the
/// checkout, run from there: the directory and what the command printed.
/// Checks that no file written names the checkout, and that the printed
/// config snippet has the self-test.
fn scaffold(lang: &str) -> (PathBuf, String) {
    scaffold_as("double", lang, &[])
}

/// [`scaffold`] of a plugin called `name`, with `extra` arguments.
fn scaffold_as(name: &str, lang: &str, extra: &[&str]) -> (PathBuf, String) {
    let outside = std::env::temp_dir().join(unique(&format!("new-plugin-{lang}")));
    std::fs::create_dir_all(&outside).unwrap();
    assert!(!outside.starts_with(repo_root()));
    let dir = outside.join(name);
    let printed = run(Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["new-plugin", name, "--lang", lang, "--dir", name])
        .args(extra)
        .current_dir(&outside));
    assert!(printed.contains(".gitignore"), "{printed}");
    assert!(printed.contains("fixtures.jsonl"), "{printed}");
    assert!(printed.contains("#       self_test:\n"), "{printed}");
    assert!(
        printed.contains("#           error: invalid-input\n"),
        "{printed}"
    );
    let checkout = repo_root().display().to_string();
    for file in files_under(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(&checkout),
            "{} names the checkout {checkout}",
            file.display()
        );
    }
    (dir, printed)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Runs the printed next steps (everything after `next:`) with bash, exactly
/// as printed, from the directory the plugin was made in; the output of all
/// of them.
fn run_next_steps(lang: &str, dir: &Path, printed: &str) -> String {
    let (_, steps) = printed.split_once("\nnext:\n").expect("next steps printed");
    let started = Instant::now();
    let ran = run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", steps])
        .current_dir(dir.parent().unwrap()));
    eprintln!("{lang}: the next steps ran in {:.1?}", started.elapsed());
    ran
}

/// `host test COMPONENT fixtures.jsonl` in the plugin's directory passes
/// every case of the scaffold's fixtures.
fn passes_its_fixtures(dir: &Path, component: &Path) {
    let tested = run(Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("test")
        .arg(component)
        .arg("fixtures.jsonl")
        .current_dir(dir));
    assert!(tested.contains("5 passed, 0 failed"), "{tested}");
    assert!(!tested.contains("FAIL"), "{tested}");
}

/// Loads the `double` component at `path` into the host's sandbox and checks
/// that it doubles `x` and refuses a string `x` and a non-object as invalid
/// input.
fn check_doubles_in_the_sandbox(path: &Path) {
    let sandbox = Sandbox::new(false).unwrap();
    let spec = HandlerSpec {
        name: "double".into(),
        source: path.display().to_string(),
        limits: Limits::default(),
        settings: Vec::new(),
    };
    let component = sandbox
        .load(spec, &std::fs::read(path).unwrap())
        .expect("the scaffolded plugin is a handler component");
    let mut instance = run_guest(component.instantiate()).unwrap();
    let mut call = |input: Value| {
        run_guest(instance.handle(&wit_message(input.to_string().into_bytes())))
            .map(|outputs| serde_json::from_slice::<Value>(&outputs[0].value).unwrap())
    };
    assert_eq!(
        call(json!({"x": 21})).unwrap(),
        json!({"x": 21, "result": 42})
    );
    let refused = call(json!({"x": "21"})).unwrap_err();
    assert_eq!(refused.kind(), "invalid-input");
    assert!(
        refused.to_string().contains("`x` must be an integer"),
        "{refused}"
    );
    let refused = call(json!([1])).unwrap_err();
    assert_eq!(refused.kind(), "invalid-input");
}

/// `host new-plugin counter --lang LANG --stateful`: what it printed says
/// the stage needs `state: {}` and shows a self-test with state, and its
/// fixtures start from state and check the state they leave.
fn scaffold_stateful(lang: &str) -> (PathBuf, String) {
    let (dir, printed) = scaffold_as("counter", lang, &["--stateful"]);
    assert!(printed.contains("#       state: {}"), "{printed}");
    assert!(
        printed.contains("#           state: {alice: {count: 41}}\n"),
        "{printed}"
    );
    assert!(
        printed.contains("#           expect_state: {alice: {count: 42}}\n"),
        "{printed}"
    );
    let fixtures = std::fs::read_to_string(dir.join("fixtures.jsonl")).unwrap();
    assert!(
        fixtures.contains(r#""state": {"alice": {"count": 41}}"#),
        "{fixtures}"
    );
    assert!(
        fixtures.contains(r#""expect_state": {"carol": null}"#),
        "{fixtures}"
    );
    (dir, printed)
}

#[test]
fn a_scaffolded_stateful_rust_plugin_counts_per_key() {
    let (dir, printed) = scaffold_stateful("rust");
    let source = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(source.contains("state::set_json"), "{source}");
    let tested = cargo(&dir, &["test", "--release"]);
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let path = repo_root().join("target/new-plugin/wasm32-wasip2/release/counter.wasm");
    assert!(
        printed.contains("test target/wasm32-wasip2/release/counter.wasm fixtures.jsonl"),
        "{printed}"
    );
    passes_its_fixtures(&dir, &path);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_scaffolded_stateful_python_plugin_counts_per_key() {
    let (dir, printed) = scaffold_stateful("python");
    let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
    assert!(app.contains("from wit_world.imports import state"), "{app}");
    let ran = run_next_steps("python", &dir, &printed);
    assert!(ran.contains("Ran 2 tests") && ran.contains("\nOK"), "{ran}");
    assert!(ran.contains("5 passed, 0 failed"), "{ran}");
    assert!(!ran.contains("FAIL"), "{ran}");
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_scaffolded_stateful_js_plugin_counts_per_key() {
    let (dir, printed) = scaffold_stateful("js");
    let exports = std::fs::read_to_string(dir.join("src/handler.js")).unwrap();
    assert!(
        exports.contains("import * as state from 'stagehost:handler/state@0.2.0'"),
        "{exports}"
    );
    let ran = run_next_steps("js", &dir, &printed);
    assert!(
        ran.contains("# pass 2") && ran.contains("# fail 0"),
        "{ran}"
    );
    assert!(ran.contains("5 passed, 0 failed"), "{ran}");
    assert!(!ran.contains("FAIL"), "{ran}");
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn new_plugin_refuses_a_bad_name_and_a_used_directory() {
    let host = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .current_dir(repo_root())
            .output()
            .unwrap()
    };
    let bad = host(&["new-plugin", "Double!", "--dir", "target/never-written"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`Double!` is not a plugin name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let used = host(&["new-plugin", "calc", "--dir", "plugins/calc"]);
    assert!(!used.status.success());
    assert!(
        String::from_utf8_lossy(&used.stderr).contains("plugins/calc exists and is not empty"),
        "{}",
        String::from_utf8_lossy(&used.stderr)
    );
}
