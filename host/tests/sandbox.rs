//! Hostile handlers are contained: a loop, unbounded allocation and a panic
//! each fail that one message (and that instance) within the handler's
//! limits; the guest sees no files, environment or sockets; its output
//! becomes log lines. Through the broker, each becomes a dead letter and
//! the partition moves on.

mod common;

use common::*;
use serde_json::{Value, json};
use stagehost::config::Limits;
use stagehost::sandbox::{HandlerFailure, HandlerInstance, HandlerSpec, Sandbox, run_guest};
use std::time::Duration;

const LIMITS: Limits = Limits {
    memory_mib: 16,
    timeout_ms: 200,
    fuel: None,
};

fn hostile(limits: Limits) -> HandlerInstance {
    let path = plugin("wasm32-wasip2", "hostile");
    let sandbox = Sandbox::new(limits.fuel.is_some()).unwrap();
    let spec = HandlerSpec {
        name: "hostile".into(),
        source: path.display().to_string(),
        limits,
        settings: Vec::new(),
    };
    let component = sandbox.load(spec, &std::fs::read(&path).unwrap()).unwrap();
    run_guest(component.instantiate()).unwrap()
}

fn call(instance: &mut HandlerInstance, input: Value) -> Result<Value, HandlerFailure> {
    let message = wit_message(input.to_string().into_bytes());
    let outputs = run_guest(instance.handle(&message))?;
    Ok(serde_json::from_slice(&outputs[0].value).unwrap())
}

#[test]
fn each_misbehaviour_fails_only_its_message() {
    let cases = [
        ("loop", "timeout"),
        ("allocate", "memory-limit"),
        ("panic", "trap"),
        ("transient", "transient"),
    ];
    for (what, kind) in cases {
        let mut instance = hostile(LIMITS);
        let failure = call(&mut instance, json!({"do": what})).unwrap_err();
        assert_eq!(failure.kind(), kind, "{what}: {failure}");
        assert_eq!(failure.poisons_instance(), kind != "transient", "{what}");
        // A fresh instance of the same version serves the next message.
        let mut fresh = hostile(LIMITS);
        assert_eq!(call(&mut fresh, json!({"n": 1})).unwrap(), json!({"n": 1}));
    }
}

#[test]
fn fuel_bounds_a_loop_when_configured() {
    let limits = Limits {
        fuel: Some(5_000_000),
        timeout_ms: 60_000,
        ..LIMITS
    };
    let mut instance = hostile(limits);
    let failure = call(&mut instance, json!({"do": "loop"})).unwrap_err();
    assert_eq!(failure.kind(), "fuel-exhausted", "{failure}");
    let mut fresh = hostile(limits);
    assert_eq!(
        call(&mut fresh, json!({"ok": true})).unwrap(),
        json!({"ok": true})
    );
}

#[test]
fn the_guest_has_no_files_environment_or_sockets() {
    let mut instance = hostile(LIMITS);
    let read = call(&mut instance, json!({"do": "read-file"})).unwrap();
    assert!(
        read["read"].is_string(),
        "reading /etc/passwd failed with an error: {read}"
    );
    assert_eq!(read["listed"], json!(false));
    let env = call(&mut instance, json!({"do": "env"})).unwrap();
    assert_eq!(env, json!({"vars": 0, "args": 0}));
    let connect = call(&mut instance, json!({"do": "connect"})).unwrap();
    assert_eq!(connect, json!({"connected": false}));
    let printed = call(&mut instance, json!({"do": "print"})).unwrap();
    assert_eq!(
        printed,
        json!({"printed": true}),
        "printing is allowed and logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_the_partition_moves_on() {
    let topics = Topics::new();
    let yaml = format!(
        "kafka:\n  brokers: {}\n  group: {}\n  topics:\n    partitions: 1\nadmin:\n  enabled: false\nhandlers:\n  hostile:\n    path: target/wasm32-wasip2/release/hostile.wasm\n    limits:\n      memory_mib: 16\n      timeout_ms: 200\nstages:\n  - name: hostile\n    input: {}\n    output: {}\n    dead_letter: {}\n    handler: hostile\n    retry:\n      max_attempts: 3\n      initial_backoff_ms: 10\n      max_backoff_ms: 20\n",
        brokers(),
        topics.group,
        topics.input,
        topics.output,
        topics.dead_letter
    );
    let host = RunningHost::start(config_from(yaml));
    let producer = producer();
    let cases = [
        ("loop", "timeout"),
        ("allocate", "memory-limit"),
        ("panic", "trap"),
        ("transient", "transient"),
        ("inflate", "produce-failed"),
    ];
    for (round, (what, _)) in cases.iter().enumerate() {
        let value = json!({"do": what}).to_string();
        send(&producer, &topics.input, Some(what), value.as_bytes(), &[]).await;
        let good = json!({"round": round}).to_string();
        send(&producer, &topics.input, Some("good"), good.as_bytes(), &[]).await;
    }
    let dead = read(
        &topics.dead_letter,
        cases.len(),
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    let results = read(
        &topics.output,
        cases.len(),
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    host.stop()
        .await
        .expect("the host survived and stops cleanly");

    assert_eq!(
        results.len(),
        cases.len(),
        "every good message after a hostile one got through"
    );
    for (round, result) in results.iter().enumerate() {
        assert_eq!(result.json(), json!({"round": round}), "in order");
    }
    assert_eq!(dead.len(), cases.len());
    for (letter, (what, kind)) in dead.iter().zip(cases) {
        assert_eq!(letter.key.as_deref(), Some(what));
        assert_eq!(letter.header("stagehost-error-kind"), kind, "{what}");
        if kind != "produce-failed" {
            assert_eq!(letter.header("stagehost-handler"), "hostile");
        }
    }
    assert!(
        dead[3]
            .header("stagehost-error-reason")
            .contains("gave up after 3 attempts")
    );
    let refused = dead[4].header("stagehost-error-reason");
    assert!(
        refused.starts_with("producing an output failed: ") && refused.contains("too large"),
        "{refused}"
    );
}
