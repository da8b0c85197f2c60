//! `host new-plugin` as a new user runs it: the scaffolded Rust, Python and
//! JavaScript handlers pass their own tests, build into components, and
//! answer (and refuse) messages in the host's sandbox.
//!
//! The Python and JavaScript plugins are tested and built by running the
//! printed next steps as they are, with bash; they reuse the componentize-py
//! virtual environment that scripts/build-foreign-plugins.sh made under
//! `${STAGEHOST_CACHE:-$HOME/.cache/stagehost}` (or make it) and npm's cache.

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
    assert!(
        printed.contains("cargo build --target wasm32-wasip2 --release"),
        "{printed}"
    );

    let tested = cargo(&dir, &["test", "--release"]);
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    cargo(&dir, &["build", "--target", "wasm32-wasip2", "--release"]);

    let path = repo_root().join("target/new-plugin/wasm32-wasip2/release/double.wasm");
    check_doubles_in_the_sandbox(&path);
}

#[test]
fn a_scaffolded_python_plugin_tests_builds_and_runs_in_the_sandbox() {
    let (dir, printed) = scaffold("python");
    assert!(printed.contains("componentize-py==0.25.1"), "{printed}");
    let wit = repo_root().join("wit/stage-handler.wit");
    assert!(
        printed.contains(&format!("-d {} -w stage-handler", wit.display())),
        "{printed}"
    );
    let ran = run_next_steps("python", &printed);
    assert!(ran.contains("Ran 2 tests") && ran.contains("\nOK"), "{ran}");
    check_doubles_in_the_sandbox(&dir.join("double.wasm"));
}

#[test]
fn a_scaffolded_js_plugin_tests_builds_and_runs_in_the_sandbox() {
    let (dir, printed) = scaffold("js");
    assert!(printed.contains("npm install"), "{printed}");
    let ran = run_next_steps("js", &printed);
    assert!(
        ran.contains("# pass 2") && ran.contains("# fail 0"),
        "{ran}"
    );
    check_doubles_in_the_sandbox(&dir.join("double.wasm"));
}

/// `host new-plugin double --lang LANG` into a fresh directory: the directory
/// and what the command printed.
fn scaffold(lang: &str) -> (PathBuf, String) {
    let dir = repo_root()
        .join("target/new-plugin-test")
        .join(unique(lang))
        .join("double");
    let printed = run(Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["new-plugin", "double", "--lang", lang, "--dir"])
        .arg(&dir)
        .current_dir(repo_root()));
    assert!(printed.contains(".gitignore"), "{printed}");
    (dir, printed)
}

/// Runs the printed next steps (everything after `next:`) with bash, exactly
/// as printed; the output of all of them.
fn run_next_steps(lang: &str, printed: &str) -> String {
    let (_, steps) = printed.split_once("\nnext:\n").expect("next steps printed");
    let started = Instant::now();
    let ran = run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", steps])
        .current_dir(repo_root()));
    eprintln!("{lang}: the next steps ran in {:.1?}", started.elapsed());
    ran
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
