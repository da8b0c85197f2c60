//! What a new user meets first, through the real binary: no broker (or a
//! mistyped one) gives one clear line naming the address, for `run` and
//! `check` (`check --offline` skips the brokers), and a redirected log has
//! no colour codes.

mod common;

use common::repo_root;
use std::process::{Command, Output};

/// The calculator config, pointed at `brokers`, written to a fresh folder.
fn config_on(brokers: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(common::unique("stagehost-day-one"));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = std::fs::read_to_string(repo_root().join("config.yml"))
        .unwrap()
        .replace(
            "  brokers: 127.0.0.1:9092\n",
            &format!("  brokers: {brokers}\n"),
        )
        .replace("listen: 127.0.0.1:9644", "listen: 127.0.0.1:0")
        .replace(
            "path: target/",
            &format!("path: {}/target/", repo_root().display()),
        );
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn no_broker_is_one_clear_line_for_run_and_check() {
    // Nothing listens on port 1.
    let config = config_on("127.0.0.1:1");
    let path = config.to_str().unwrap();

    let run = host(&["run", path]);
    assert!(!run.status.success());
    let said = stderr(&run);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    assert!(
        errors[0].contains("cannot reach Kafka at 127.0.0.1:1"),
        "{said}"
    );
    let complaints = said.lines().filter(|l| l.contains("librdkafka")).count();
    assert!(complaints <= 3, "{complaints} librdkafka lines:\n{said}");
    assert!(
        !said.contains('\u{1b}'),
        "colour codes in a redirected log:\n{said}"
    );

    let check = host(&["check", path]);
    assert!(!check.status.success(), "check said OK without brokers");
    assert!(stderr(&check).contains("cannot reach Kafka at 127.0.0.1:1"));

    let offline = host(&["check", path, "--offline"]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    let plan = String::from_utf8_lossy(&offline.stdout);
    assert!(
        plan.contains("brokers: not contacted (--offline)"),
        "{plan}"
    );
}

#[test]
fn check_contacts_the_brokers_and_says_so() {
    let config = config_on(&common::brokers());
    let check = host(&["check", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(
        plan.contains(&format!("brokers: {} answered", common::brokers())),
        "{plan}"
    );
}

#[test]
fn an_embedded_config_is_checked_without_a_broker() {
    let config = config_on("embedded");
    let check = host(&["check", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(plan.contains("brokers: embedded"), "{plan}");
    assert!(!stderr(&check).contains("embedded:9092"));
}
