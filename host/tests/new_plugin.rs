//! `host new-plugin` as a new user runs it: the scaffolded Rust handler
//! passes its own test, builds into a component, and answers (and refuses)
//! messages in the host's sandbox.

mod common;

use common::*;
use serde_json::{Value, json};
use stagehost::config::Limits;
use stagehost::sandbox::{HandlerSpec, Sandbox, run_guest};
use std::path::Path;
use std::process::Command;

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
    let dir = repo_root()
        .join("target/new-plugin-test")
        .join(unique("run"))
        .join("double");
    let printed = run(Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["new-plugin", "double", "--lang", "rust", "--dir"])
        .arg(&dir)
        .current_dir(repo_root()));
    assert!(printed.contains("src/lib.rs"), "{printed}");
    assert!(
        printed.contains("cargo build --target wasm32-wasip2 --release"),
        "{printed}"
    );

    let tested = cargo(&dir, &["test", "--release"]);
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    cargo(&dir, &["build", "--target", "wasm32-wasip2", "--release"]);

    let path = repo_root().join("target/new-plugin/wasm32-wasip2/release/double.wasm");
    let sandbox = Sandbox::new(false).unwrap();
    let spec = HandlerSpec {
        name: "double".into(),
        source: path.display().to_string(),
        limits: Limits::default(),
        settings: Vec::new(),
    };
    let component = sandbox
        .load(spec, &std::fs::read(&path).unwrap())
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
