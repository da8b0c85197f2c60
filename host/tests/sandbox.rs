//! Hostile handlers are contained: a loop, a sleep in a host call,
//! unbounded allocation, a panic and an exit each fail that one message (and
//! that instance) within the handler's limits; the guest sees no files,
//! environment or sockets; its output becomes a bounded number of log lines.
//! Through the broker, each becomes a dead letter of the right kind, outputs
//! to topics the stage may not write to are stopped, and the next message on
//! the partition comes out.

mod common;

use common::numbered::HostProcess;
use common::*;
use serde_json::{Value, json};
use stagehost::config::{Expect, Limits, SelfTestCase};
use stagehost::handlers::{HandlerFailure, HandlerInstance, HandlerSpec, Sandbox, run_guest};
use std::time::Duration;

const LIMITS: Limits = Limits {
    memory_mib: 16,
    timeout_ms: 200,
    fuel: None,
    ..Limits::DEFAULT
};

/// The hostile component's bytes and its spec with `limits` and `settings`.
fn hostile_spec(limits: Limits, settings: &[(&str, &str)]) -> (Vec<u8>, HandlerSpec) {
    let path = plugin("wasm32-wasip2", "hostile");
    let spec = HandlerSpec {
        name: "hostile".into(),
        source: path.display().to_string(),
        limits,
        settings: settings
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    };
    (std::fs::read(&path).unwrap(), spec)
}

fn hostile(limits: Limits) -> HandlerInstance {
    let sandbox = Sandbox::new(limits.fuel.is_some()).unwrap();
    let (bytes, spec) = hostile_spec(limits, &[]);
    let component = sandbox.load(spec, &bytes).unwrap();
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
        ("sleep", "timeout"),
        ("allocate", "memory-limit"),
        ("panic", "trap"),
        ("exit", "trap"),
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

#[test]
fn a_sleeping_init_is_cut_at_the_time_limit() {
    let sandbox = Sandbox::new(false).unwrap();
    let (bytes, spec) = hostile_spec(LIMITS, &[("init_sleep_ms", "600000")]);
    let refused = match sandbox.load(spec, &bytes) {
        Ok(_) => panic!("an init sleeping for ten minutes was accepted"),
        Err(err) => err.to_string(),
    };
    assert!(
        refused.contains("init failed") && refused.contains("200 ms limit"),
        "{refused}"
    );
}

#[test]
fn a_self_test_that_sleeps_is_cut_at_the_time_limit() {
    let sandbox = Sandbox::new(false).unwrap();
    let (bytes, spec) = hostile_spec(LIMITS, &[]);
    let cases = [SelfTestCase {
        input: json!({"do": "sleep", "ms": 600_000}),
        expect: Expect::Output(json!({"slept": true})),
        ..SelfTestCase::default()
    }];
    let refused = stagehost::handlers::validate(&sandbox, spec, &bytes, &cases)
        .err()
        .expect("a self-test sleeping for ten minutes passed");
    assert!(refused.contains("200 ms limit"), "{refused}");
}

#[test]
fn trap_reasons_say_wasm_trap_once() {
    let mut instance = hostile(LIMITS);
    let reason = call(&mut instance, json!({"do": "panic"}))
        .unwrap_err()
        .to_string();
    assert_eq!(reason.matches("wasm trap").count(), 1, "{reason}");
    assert!(!reason.contains('\n'), "{reason}");
}

#[test]
fn hostile_messages_are_dead_lettered_and_the_partition_moves_on() {
    hostile_stage("at-least-once");
}

#[test]
fn hostile_messages_are_dead_lettered_and_the_partition_moves_on_exactly_once() {
    hostile_stage("exactly-once");
}

/// The hostile handler's stage on a `host run` process: the cases, each
/// sent before a numbered good message, and what each must become.
fn hostile_stage(delivery: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let topics = Topics::new();
    let foreign = unique("foreign");
    let allowed = unique("allowed");
    runtime.block_on(async {
        create_topic(&foreign, 1).await;
        create_topic(&allowed, 1).await;
    });
    let sleep_ms = 5_000;
    let yaml = format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
  delivery: {delivery}
  transactions:
    id: {group}
  topics:
    partitions: 1
admin:
  listen: 127.0.0.1:0
handlers:
  hostile:
    path: target/wasm32-wasip2/release/hostile.wasm
    limits:
      memory_mib: 64
      timeout_ms: 500
stages:
  - name: hostile
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    allowed_topics: [{allowed}]
    handler: hostile
    retry:
      max_attempts: 3
      initial_backoff_ms: 10
      max_backoff_ms: 20
"#,
        brokers = brokers(),
        group = topics.group,
        input = topics.input,
        output = topics.output,
        dead_letter = topics.dead_letter,
    );
    let host = HostProcess::start(&yaml);
    // (case, kind of its dead letter, or None when it succeeds)
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!({"do": "sleep", "ms": sleep_ms}), Some("timeout")),
        (
            json!({"do": "foreign-topic", "topic": foreign}),
            Some("forbidden-topic"),
        ),
        (
            json!({"do": "foreign-topic", "topic": "__consumer_offsets"}),
            Some("forbidden-topic"),
        ),
        (
            json!({"do": "foreign-topic", "topic": "not a topic!"}),
            Some("forbidden-topic"),
        ),
        (json!({"do": "foreign-topic", "topic": allowed}), None),
        (
            json!({"do": "many-outputs", "count": 100_000}),
            Some("invalid-output"),
        ),
        (json!({"do": "many-outputs", "count": 1000}), None),
        (json!({"do": "inflate"}), Some("invalid-output")),
        (json!({"do": "flood-stdout"}), None),
        (json!({"do": "flood-stderr"}), None),
        (json!({"do": "flood-line"}), None),
        (json!({"do": "flood-log"}), None),
        (json!({"do": "long-reason"}), Some("invalid-input")),
        (json!({"do": "loop"}), Some("timeout")),
        (json!({"do": "allocate"}), Some("memory-limit")),
        (json!({"do": "panic"}), Some("trap")),
        (json!({"do": "exit"}), Some("trap")),
        (json!({"do": "transient"}), Some("transient")),
    ];
    let producer = producer();
    let sleep_sent = runtime.block_on(async {
        for (round, (case, _)) in cases.iter().enumerate() {
            let what = case["do"].as_str().unwrap();
            send(
                &producer,
                &topics.input,
                Some(what),
                case.to_string().as_bytes(),
                &[],
            )
            .await;
            let good = json!({"round": round}).to_string();
            send(&producer, &topics.input, Some("good"), good.as_bytes(), &[]).await;
        }
        read(&topics.input, 1, Duration::from_secs(30), Duration::ZERO).await[0]
            .timestamp
            .expect("the first message has a timestamp")
    });
    let expected_letters = cases.iter().filter(|(_, kind)| kind.is_some()).count();
    let dead = runtime.block_on(read(
        &topics.dead_letter,
        expected_letters,
        Duration::from_secs(120),
        Duration::from_secs(1),
    ));
    // Outputs: the numbered good messages, the allowed-topic case's first
    // output, 1000 small ones and the four floods' answers.
    let outputs = runtime.block_on(read(
        &topics.output,
        cases.len() + 1 + 1000 + 4,
        Duration::from_secs(120),
        Duration::from_secs(1),
    ));
    let admin = host.admin_address(Duration::from_secs(10));
    let metrics = runtime
        .block_on(http(admin, "GET", "/metrics", None, b""))
        .1;
    let on_allowed = runtime.block_on(read(
        &allowed,
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    ));
    let on_foreign = runtime.block_on(read(
        &foreign,
        0,
        Duration::from_secs(10),
        Duration::from_secs(2),
    ));
    let mut host = host;
    assert!(host.stop("TERM"), "the host survived and stopped cleanly");
    let log = host.log();

    // Every good message came out, in order, and the first one after the
    // sleep long before the sleep would have ended.
    let rounds: Vec<&common::Received> = outputs
        .iter()
        .filter(|record| record.json().get("round").is_some())
        .collect();
    let numbers: Vec<u64> = rounds
        .iter()
        .map(|r| r.json()["round"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..cases.len() as u64).collect::<Vec<_>>());
    let after_sleep = rounds[0].timestamp.expect("outputs have timestamps");
    assert!(
        after_sleep < sleep_sent + sleep_ms,
        "the message after the sleep came out at +{} ms, after the sleep would have ended (+{sleep_ms} ms)",
        after_sleep - sleep_sent
    );
    // What the succeeding cases produced, and nothing of the refused ones.
    assert_eq!(
        outputs
            .iter()
            .filter(|r| r.json() == json!({"fine": true}))
            .count(),
        1
    );
    assert_eq!(
        outputs.iter().filter(|r| r.json().is_number()).count(),
        1000
    );
    assert_eq!(
        outputs
            .iter()
            .filter(|r| r.json().get("flooded").is_some())
            .count(),
        3
    );
    assert_eq!(
        outputs
            .iter()
            .filter(|r| r.json() == json!({"logged": true}))
            .count(),
        1
    );
    assert_eq!(on_allowed.len(), 1);
    assert_eq!(on_allowed[0].json(), json!({"smuggled": true}));
    assert!(
        on_foreign.is_empty(),
        "a record reached the unlisted topic: {on_foreign:?}"
    );

    let failing: Vec<(&Value, &str)> = cases
        .iter()
        .filter_map(|(case, kind)| kind.map(|kind| (case, kind)))
        .collect();
    assert_eq!(dead.len(), failing.len());
    for (letter, (case, kind)) in dead.iter().zip(&failing) {
        let what = case["do"].as_str().unwrap();
        assert_eq!(letter.key.as_deref(), Some(what));
        assert_eq!(letter.header("stagehost-error-kind"), *kind, "{case}");
        assert_eq!(letter.header("stagehost-handler"), "hostile", "{case}");
        let reason = letter.header("stagehost-error-reason");
        assert!(
            !reason.contains('\n') && reason.chars().count() <= 1001,
            "{case}: {reason}"
        );
    }
    let reason = |what: &str, topic: Option<&str>| {
        dead.iter()
            .zip(&failing)
            .find(|(_, (case, _))| case["do"] == what && topic.is_none_or(|t| case["topic"] == t))
            .map(|(letter, _)| letter.header("stagehost-error-reason").to_string())
            .unwrap()
    };
    assert!(reason("foreign-topic", Some(&foreign)).contains(&foreign));
    assert!(reason("foreign-topic", Some("__consumer_offsets")).contains("internal"));
    assert!(reason("many-outputs", None).contains("max_outputs"));
    assert!(reason("inflate", None).contains("message.max.bytes"));
    assert!(reason("transient", None).contains("gave up after 3 attempts"));
    // WASI preview 2 carries only success or failure: status 1.
    assert_eq!(
        reason("exit", None),
        "the handler exited the process (status 1)"
    );
    assert!(reason("long-reason", None).ends_with('…'));

    // 150 MiB written and 50,000 log calls left a small host log, and the
    // drops were counted.
    assert!(
        log.len() < 2 << 20,
        "the host log grew to {} bytes",
        log.len()
    );
    assert!(
        !log.lines()
            .any(|line| line.starts_with("with a forged second line")),
        "a guest line forged a log line"
    );
    assert!(
        log.contains("line(s) dropped"),
        "no summary of dropped output"
    );
    let dropped = metrics
        .lines()
        .find(|line| line.starts_with("stagehost_handler_log_dropped_total{handler=\"hostile\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no dropped-lines counter in\n{metrics}"));
    assert!(dropped > 10_000, "only {dropped} lines dropped");
}
