//! Version history that holds, through a `host run` process: every version
//! a handler served is kept, a rollback goes back one step at a time and
//! stays through SIGHUP and restarts until a new version is explicitly
//! installed (an upload, or the file changing), uploads survive restarts,
//! a handler file replaced while the host starts is picked up, `DELETE`
//! refuses a handler a route uses, and `host handlers`, `host logs` and
//! `host topics` work over the admin API.

mod common;

use common::numbered::HostProcess;
use common::{Topics, brokers, plugin};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Three builds that differ: add (wasip2), subtract (wasip2), add (wasip1).
fn builds() -> [Vec<u8>; 3] {
    [
        std::fs::read(plugin("wasm32-wasip2", "add")).unwrap(),
        std::fs::read(plugin("wasm32-wasip2", "subtract")).unwrap(),
        std::fs::read(plugin("wasm32-wasip1", "add")).unwrap(),
    ]
}

fn version(bytes: &[u8]) -> String {
    stagehost::handlers::version_of(bytes)
}

/// Replaces a file by rename, as a build or a deploy does.
fn replace(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn config(topics: &Topics, file: &Path, spare: &Path) -> String {
    format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
  topics:
    partitions: 1
admin:
  listen: 127.0.0.1:0
handlers:
  calc:
    path: {file}
  spare:
    path: {spare}
stages:
  - name: versions
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: calc
"#,
        brokers = brokers(),
        group = topics.group,
        file = file.display(),
        spare = spare.display(),
        input = topics.input,
        output = topics.output,
        dead_letter = topics.dead_letter,
    )
}

/// `host ARGS --admin ADDRESS`: its stdout, or a panic with its stderr.
fn cli(args: &[&str], admin: std::net::SocketAddr) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .args(["--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "host {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The handler's info from `host handlers show --json`.
fn show(admin: std::net::SocketAddr, name: &str) -> Value {
    serde_json::from_str(&cli(&["handlers", "show", name, "--json"], admin)).unwrap()
}

/// Waits until `calc` serves `version`.
fn serves(admin: std::net::SocketAddr, version: &str) -> Value {
    let started = Instant::now();
    loop {
        let info = show(admin, "calc");
        if info["version"] == version {
            return info;
        }
        assert!(
            started.elapsed() < WAIT,
            "calc never served {version}: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rollbacks_and_uploads_hold_through_reloads_and_restarts() {
    let [one, two, three] = builds();
    let (v1, v2, v3) = (version(&one), version(&two), version(&three));
    let topics = Topics::new();
    let dir = std::env::temp_dir().join(common::unique("stagehost-versions"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("calc.wasm");
    let spare = dir.join("spare.wasm");
    std::fs::write(&file, &one).unwrap();
    std::fs::write(&spare, &one).unwrap();
    let yaml = config(&topics, &file, &spare);
    let mut host = HostProcess::start(&yaml);

    // A file replaced while the host starts (after it read the file, before
    // its watcher looked) is picked up.
    host.wait_for_log("handler loaded", WAIT);
    replace(&file, &two);
    let admin = host.admin_address(WAIT);
    let info = serves(admin, &v2);
    assert_eq!(info["file_version"], v2.as_str());

    // Back one step: v1, pinned.
    let rolled: Value =
        serde_json::from_str(&cli(&["handlers", "rollback", "calc", "--json"], admin)).unwrap();
    assert_eq!(rolled["version"], v1.as_str());
    assert_eq!(rolled["pinned"], v1.as_str());
    // An unrelated change to the config and SIGHUP keep it.
    let edited = yaml.replace("partitions: 1", "partitions: 1\n  # edited");
    std::fs::write(host.config_path(), &edited).unwrap();
    signal_host(&host, "HUP");
    host.wait_for_log("config re-read", WAIT);
    assert_eq!(
        show(admin, "calc")["version"],
        v1.as_str(),
        "SIGHUP kept the rollback"
    );
    // So does a restart.
    assert!(host.stop("TERM"));
    host.restart();
    let admin = wait_admin(&host, 2);
    assert_eq!(
        serves(admin, &v1)["pinned"],
        v1.as_str(),
        "the restart kept the rollback"
    );

    // A new file is an explicit install: it serves, and the pin is gone.
    replace(&file, &three);
    let info = serves(admin, &v3);
    assert_eq!(info["pinned"], Value::Null);
    // Rollbacks go back step by step: v3 -> v1 (the version before it) -> none.
    let history: Vec<String> = info["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|served| served["version"].as_str().unwrap().to_string())
        .collect();
    assert!(history.contains(&v2), "every version is kept: {history:?}");
    let back = cli(&["handlers", "rollback", "calc", "--json"], admin);
    assert_eq!(
        serde_json::from_str::<Value>(&back).unwrap()["version"],
        v1.as_str()
    );
    let none = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "handlers",
            "rollback",
            "calc",
            "--admin",
            &admin.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!none.status.success(), "a rollback past the first version");
    assert!(String::from_utf8_lossy(&none.stderr).contains("409"));

    // An upload serves and survives a restart; pinning a kept version works.
    let uploaded = dir.join("uploaded.wasm");
    std::fs::write(&uploaded, &two).unwrap();
    let up = cli(
        &[
            "handlers",
            "upload",
            "calc",
            uploaded.to_str().unwrap(),
            "--json",
        ],
        admin,
    );
    assert_eq!(
        serde_json::from_str::<Value>(&up).unwrap()["version"],
        v2.as_str()
    );
    assert!(host.stop("TERM"));
    host.restart();
    let admin = wait_admin(&host, 3);
    assert_eq!(
        serves(admin, &v2)["source"]
            .as_str()
            .map(|s| s.contains("kept")),
        Some(true)
    );
    cli(&["handlers", "pin", "calc", "--version", &v3], admin);
    serves(admin, &v3);

    // DELETE: refused for a routed handler, done for a spare one.
    let refused = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["handlers", "delete", "calc", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use by stage(s) versions"));
    cli(&["handlers", "delete", "spare"], admin);
    let list = cli(&["handlers", "list", "--json"], admin);
    assert!(!list.contains("\"spare\""), "{list}");
    // The table lists what the JSON does.
    let table = cli(&["handlers", "list"], admin);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("calc"), "{table}");

    // `host topics` shows the stage's input; `host logs` answers.
    let topics_table = cli(&["topics", "--json"], admin);
    let rows: Value = serde_json::from_str(&topics_table).unwrap();
    assert_eq!(rows[0]["topic"], topics.input.as_str(), "{rows}");
    cli(&["logs", "calc"], admin);
    assert!(host.stop("TERM"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn signal_host(host: &HostProcess, name: &str) {
    let pid = host.pid().expect("the host runs");
    let sent = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The admin address of the `nth` start of `host` (each start logs it).
fn wait_admin(host: &HostProcess, nth: usize) -> std::net::SocketAddr {
    let started = Instant::now();
    loop {
        let log = host.log();
        let addresses: Vec<std::net::SocketAddr> = log
            .lines()
            .filter(|line| line.contains("admin server listening"))
            .filter_map(|line| {
                line.split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .and_then(|address| address.parse().ok())
            })
            .collect();
        if addresses.len() >= nth {
            return addresses[nth - 1];
        }
        assert!(started.elapsed() < WAIT, "no admin address for start {nth}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
