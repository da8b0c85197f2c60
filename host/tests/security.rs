//! Kafka's own security, for real: the test starts its own broker with a
//! `SASL_SSL` listener (SCRAM-SHA-512, TLS certificates made locally by
//! `scripts/kafka.sh`) and ACLs on port 19192, and stops it at the end
//! whatever happens.
//!
//! The host's principal may read its input and write only its output and
//! its dead letters. Over that listener the calculator works; a handler
//! output to a topic the principal may not write to is stopped by the
//! host's topic confinement (a `forbidden-topic` dead letter), before the
//! broker sees it; the password, read from the environment through
//! `${NAME}`, appears in no log and no `host check` output; and a wrong
//! password ends `host run` with one clear error naming the broker and the
//! mechanism.

mod common;

use common::numbered::HostProcess;
use common::{repo_root, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Client port of the secured broker; its controller is on +1000.
const PORT: u16 = 19192;
/// The host's SCRAM user and password.
const USER: &str = "stagehost";
const PASSWORD: &str = "stagehost-test-password";
/// The environment variable the config reads the password from.
const PASSWORD_VARIABLE: &str = "STAGEHOST_TEST_KAFKA_PASSWORD";
/// Longest wait for a step: a safety net only.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `scripts/kafka.sh ARGS` for the secured broker; its stdout.
fn kafka(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/kafka.sh"))
        .args(args)
        .env("KAFKA_PORT", PORT.to_string())
        .env("KAFKA_SECURITY", "sasl_ssl")
        .env("KAFKA_ACLS", "1")
        .env("KAFKA_SCRAM_USERS", format!("{USER}:{PASSWORD}"))
        .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/kafka.sh");
    assert!(output.status.success(), "scripts/kafka.sh {args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The test's broker: started by [`SecureBroker::up`], stopped when
/// dropped, also when the test fails.
struct SecureBroker;

impl SecureBroker {
    fn up() -> Self {
        kafka(&["up"]);
        SecureBroker
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        kafka(&["down"]);
    }
}

/// librdkafka properties of a SCRAM user of the test's broker.
fn client_properties(user: &str, with_password: bool) -> BTreeMap<String, String> {
    let mut args = vec!["client-config"];
    if with_password {
        args.push("--with-password");
    }
    args.push(user);
    kafka(&args)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn client(user: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in client_properties(user, true) {
        config.set(key, value);
    }
    config
}

/// Produces `value` to `topic` as the broker's admin.
fn send_as_admin(topic: &str, value: &Value) {
    let producer: BaseProducer = client("admin").create().unwrap();
    let value = value.to_string();
    producer
        .send(BaseRecord::<str, str>::to(topic).key("k").payload(&value))
        .map_err(|(err, _)| err)
        .unwrap();
    producer
        .flush(STEP_TIMEOUT)
        .expect("the test message was acknowledged");
}

/// Reads `topic` as the admin until `count` records came, then for one
/// more second; returns each value as JSON with its headers.
fn read_as_admin(topic: &str, count: usize) -> Vec<(Value, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = client("admin")
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut complete: Option<Instant> = None;
    let mut records = Vec::new();
    loop {
        if records.len() >= count && complete.is_none() {
            complete = Some(Instant::now());
        }
        if complete.is_some_and(|at| at.elapsed() > Duration::from_secs(1)) {
            return records;
        }
        assert!(
            complete.is_some() || started.elapsed() < STEP_TIMEOUT,
            "{topic}: {} of {count} records",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let value = serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
        records.push((value, headers));
    }
}

/// The calculator with the hostile handler on `operation: hostile`, over
/// SASL_SSL, the password read from [`PASSWORD_VARIABLE`].
fn config_yaml(group: &str, input: &str, output: &str, dead_letter: &str) -> String {
    let ca = &client_properties(USER, false)["ssl.ca.location"];
    format!(
        r#"
kafka:
  brokers: 127.0.0.1:{PORT}
  group: {group}
  properties:
    security.protocol: SASL_SSL
    sasl.mechanism: SCRAM-SHA-512
    sasl.username: {USER}
    sasl.password: ${{{PASSWORD_VARIABLE}}}
    ssl.ca.location: {ca}
  topics:
    create: false
admin:
  listen: 127.0.0.1:0
handlers:
  add:
    path: target/wasm32-wasip2/release/add.wasm
  hostile:
    path: target/wasm32-wasip2/release/hostile.wasm
stages:
  - name: calculator
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    route:
      to:
        sum: add
        hostile: hostile
"#
    )
}

/// `host` with `args`, the password variable set to `password`; waits for
/// it to end (a safety net of [`STEP_TIMEOUT`]) and returns its status and
/// both outputs together.
fn host_command(args: &[&str], password: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .env(PASSWORD_VARIABLE, password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > STEP_TIMEOUT {
            let _ = child.kill();
            panic!("`host {args:?}` did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_calculator_runs_over_sasl_ssl_with_acls_and_confinement() {
    let _broker = SecureBroker::up();
    let group = unique("secure-group");
    let [input, output, dead_letter, foreign] =
        ["requests", "results", "dlq", "foreign"].map(unique);
    for topic in [&input, &output, &dead_letter, &foreign] {
        kafka(&["topics", "--create", "--topic", topic, "--partitions", "1"]);
    }
    // The host's principal reads its input in its groups and writes its
    // output and dead letters; nothing else.
    let grant = |operation: &str, resource: &[&str]| {
        let principal = format!("User:{USER}");
        let mut args = vec![
            "acl",
            "--add",
            "--allow-principal",
            &principal,
            "--operation",
            operation,
        ];
        args.extend_from_slice(resource);
        kafka(&args);
    };
    grant("Read", &["--topic", &input]);
    grant(
        "Read",
        &["--group", &group, "--resource-pattern-type", "prefixed"],
    );
    grant("Write", &["--topic", &output]);
    grant("Write", &["--topic", &dead_letter]);

    let yaml = config_yaml(&group, &input, &output, &dead_letter);
    let mut host = HostProcess::start_with_env(&yaml, &[(PASSWORD_VARIABLE, PASSWORD)]);
    host.wait_for_log("stagehost running", STEP_TIMEOUT);
    send_as_admin(
        &input,
        &json!({"operation": "sum", "operator_1": "5", "operator_2": "2"}),
    );
    send_as_admin(
        &input,
        &json!({"operation": "hostile", "do": "foreign-topic", "topic": foreign}),
    );
    let results = read_as_admin(&output, 1);
    let letters = read_as_admin(&dead_letter, 1);
    let smuggled = read_as_admin(&foreign, 0);
    let admin = host.admin_address(STEP_TIMEOUT);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, handlers) = runtime.block_on(common::http(admin, "GET", "/handlers", None, b""));
    assert!(host.stop("TERM"), "the host stopped cleanly");

    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].0["result"], json!(7));
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (_, headers) = &letters[0];
    assert_eq!(
        headers["stagehost-error-kind"], "forbidden-topic",
        "{headers:?}"
    );
    assert!(headers["stagehost-error-reason"].contains(&foreign));
    assert!(smuggled.is_empty(), "{smuggled:?}");

    // The password is nowhere: not in the log, the admin API or the plan.
    let log = host.log();
    assert!(log.contains("stagehost running"));
    assert!(!log.contains(PASSWORD), "the password is in the host log");
    assert!(!handlers.contains(PASSWORD));
    let config = host.config_path().to_str().unwrap().to_string();
    let (checked, plan) = host_command(&["check", &config], PASSWORD);
    assert!(checked, "{plan}");
    assert!(
        !plan.contains(PASSWORD),
        "the password is in `host check`:\n{plan}"
    );
    assert!(
        plan.contains(&format!("sasl.password=${{{PASSWORD_VARIABLE}}}")),
        "{plan}"
    );

    // A wrong password: one clear error naming the broker and the
    // mechanism, and the process ends.
    let started = Instant::now();
    let (ran, said) = host_command(&["run", &config], "not-the-password");
    eprintln!(
        "a wrong password ended `host run` after {:?}",
        started.elapsed()
    );
    assert!(!ran, "the host ran with a wrong password:\n{said}");
    let error = said
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in\n{said}"));
    assert!(
        error.contains(&format!("authentication failed at 127.0.0.1:{PORT}"))
            && error.contains("SCRAM-SHA-512"),
        "{error}"
    );
    assert!(!said.contains("not-the-password"), "{said}");
    let complaints = said.matches("Authentication failed").count();
    assert!(
        complaints <= 3,
        "{complaints} authentication lines:\n{said}"
    );
}
