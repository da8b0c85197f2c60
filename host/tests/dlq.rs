//! `host dlq list CONFIG --stage NAME` against the real broker: the
//! calculator runs under `host run`, dead-letters a known mix of bad
//! requests, and the summary counts them by kind, handler, version and
//! reason, most frequent first; a record another stage wrote to the same
//! topic is not counted, and an unknown stage is refused with the stages
//! the config has. `host dlq redrive` after a fix (a route added by SIGHUP)
//! turns each matching letter into one output that names the letter (in an
//! at-least-once and in an exactly-once stage), a second redrive sends
//! nothing, and a letter that fails again is dead-lettered again with its
//! redrive count.

mod common;

use common::numbered::HostProcess;
use common::{
    Topics, calculator_yaml, producer, read, report, send, signal, spawn_host, wait_output,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// `host dlq list CONFIG --stage STAGE ARGS`.
fn list(config: &Path, stage: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["dlq", "list"])
        .arg(config)
        .args(["--stage", stage])
        .args(args)
        .output()
        .expect("host runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_counts_a_stages_letters_by_kind_handler_version_and_reason() {
    let topics = Topics::new();
    let (host, config, _) = spawn_host(&topics);
    let producer = producer();
    // 3 letters of one reason, 2 of another, 1 of a third.
    let bad: [(&[u8], usize); 3] = [
        (
            br#"{"operation": "sum", "operator_1": "five", "operator_2": "2"}"#,
            3,
        ),
        (br#"{"operation": "mul", "x": 1, "y": 2}"#, 2),
        (b"{not json", 1),
    ];
    for (value, times) in bad {
        for _ in 0..times {
            send(&producer, &topics.input, Some("k"), value, &[]).await;
        }
    }
    read(&topics.dead_letter, 6, WAIT, Duration::ZERO).await;
    // Another stage's letter in the same topic.
    let headers = OwnedHeaders::new().insert(Header {
        key: "stagehost-stage",
        value: Some("other-stage"),
    });
    producer
        .send(
            FutureRecord::<(), _>::to(&topics.dead_letter)
                .payload("x")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    signal(&host, "TERM");
    let stopped = wait_output(host).await;
    assert!(stopped.status.success(), "{stopped:?}");

    let out = list(&config, "calculator", &["--format", "json"]);
    assert!(out.status.success(), "{}", report(&out));
    let groups: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(groups.len(), 3, "{}", report(&out));
    let summary: Vec<(u64, &str, Option<&str>)> = groups
        .iter()
        .map(|g| {
            (
                g["count"].as_u64().unwrap(),
                g["kind"].as_str().unwrap(),
                g["handler"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, "invalid-input", Some("add")),
            (2, "unknown-route", None),
            (1, "invalid-json", None)
        ]
    );
    assert!(groups[0]["reason"].as_str().unwrap().contains("operator_1"));
    assert_eq!(groups[0]["version"].as_str().unwrap().len(), 12);
    assert!(groups[1]["reason"].as_str().unwrap().contains("mul"));

    let out = list(&config, "calculator", &[]);
    assert!(out.status.success(), "{}", report(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "6 dead letter(s) of stage `calculator` in {}",
            topics.dead_letter
        )
    );
    assert!(lines[1].contains("1 more record(s)"), "{table}");
    assert!(
        lines[3].trim_start().starts_with("3  invalid-input  add"),
        "{table}"
    );

    let unknown = list(&config, "nope", &[]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("has no stage `nope` (it has: calculator)"),
        "{}",
        report(&unknown)
    );
}

/// `host dlq redrive CONFIG --stage STAGE ARGS`; its one line of summary.
fn redrive(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["dlq", "redrive"])
        .arg(config)
        .args(["--stage", "calculator"])
        .args(args)
        .output()
        .expect("host runs");
    assert!(out.status.success(), "{}", report(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_after_a_fix_turns_each_letter_into_one_output_once() {
    redrive_after_a_fix(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_into_an_exactly_once_stage_gives_each_output_once() {
    redrive_after_a_fix(true).await;
}

/// Three requests with no route and one that is not JSON are dead-lettered;
/// after a route is added, redrive turns the three into outputs once (read
/// committed, so with `exactly_once` only what the stage's transactions
/// committed counts), a second redrive adds nothing, and the bad one fails
/// again with its redrive count.
async fn redrive_after_a_fix(exactly_once: bool) {
    let topics = Topics::new();
    let mut yaml = calculator_yaml(&topics, 1);
    if exactly_once {
        let group = format!("  group: {}\n", topics.group);
        yaml = yaml.replace(
            &group,
            &format!(
                "{group}  delivery: exactly-once\n  transactions:\n    id: {}\n    commit_interval_ms: 100\n",
                common::unique("redrive-txn")
            ),
        );
        assert!(yaml.contains("exactly-once"), "{yaml}");
    }
    let mut host = HostProcess::start(&yaml);
    tokio::task::block_in_place(|| host.wait_for_log("stagehost running", WAIT));
    let producer = producer();
    for n in 0..3 {
        let value = format!(r#"{{"operation": "plus", "x": {n}, "y": 10}}"#);
        send(
            &producer,
            &topics.input,
            Some(&format!("k{n}")),
            value.as_bytes(),
            &[("trace-id", "t-1")],
        )
        .await;
    }
    send(&producer, &topics.input, Some("bad"), b"{bad", &[]).await;
    let letters = read(&topics.dead_letter, 4, WAIT, Duration::ZERO).await;
    assert_eq!(letters.len(), 4);
    let config = host.config_path().to_path_buf();

    let dry = redrive(&config, &["--kind", "unknown-route", "--dry-run"]);
    assert!(dry.starts_with("would redrive 3 dead letter(s)"), "{dry}");
    // The admin API's redrive (the console's button) says the same.
    let admin = tokio::task::block_in_place(|| host.admin_address(WAIT));
    let (status, body) = common::http(
        admin,
        "POST",
        "/stages/calculator/redrive?kind=unknown-route&dry_run=true",
        None,
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer["sent"].as_u64(), answer["dry_run"].as_bool()),
        (Some(3), Some(true)),
        "{body}"
    );
    let (status, body) = common::http(admin, "POST", "/stages/gone/redrive", None, b"").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no stage `gone`"), "{body}");

    // The fix: `plus` gets a route, read again on SIGHUP.
    let fixed = std::fs::read_to_string(&config).unwrap().replace(
        "        subtract: subtract\n",
        "        subtract: subtract\n        plus: add\n",
    );
    std::fs::write(&config, fixed).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &host.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::task::block_in_place(|| host.wait_for_log("config re-read", WAIT));

    // At least once through the CLI, exactly once through the admin API.
    let first = match exactly_once {
        false => redrive(&config, &["--kind", "unknown-route"]),
        true => {
            let (status, body) = common::http(
                admin,
                "POST",
                "/stages/calculator/redrive?kind=unknown-route",
                None,
                b"",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let answer: Value = serde_json::from_str(&body).unwrap();
            answer["summary"].as_str().unwrap().to_string()
        }
    };
    assert!(
        first.starts_with(&format!(
            "redrove 3 dead letter(s) of stage `calculator` to {} (0 redriven before",
            topics.input
        )),
        "{first}"
    );
    let outputs = read(&topics.output, 3, WAIT, Duration::from_secs(1)).await;
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    let mut results: Vec<i64> = outputs
        .iter()
        .map(|o| o.json()["result"].as_i64().unwrap())
        .collect();
    results.sort_unstable();
    assert_eq!(results, [10, 11, 12]);
    let letter_ids: Vec<String> = letters
        .iter()
        .map(|l| format!("{}/{}/{}", topics.dead_letter, l.partition, l.offset))
        .collect();
    for output in &outputs {
        let of = output.header("stagehost-redrive-of");
        assert!(
            letter_ids.iter().any(|id| id == of),
            "{of} names no letter: {letter_ids:?}"
        );
        assert_eq!(output.header("stagehost-redrive-count"), "1");
        assert_eq!(output.header("trace-id"), "t-1");
        assert!(!output.headers.contains_key("stagehost-error-kind"));
    }

    let second = redrive(&config, &["--kind", "unknown-route"]);
    assert!(
        second.starts_with("redrove 0 dead letter(s)") && second.contains("(3 redriven before"),
        "{second}"
    );
    let after = read(&topics.output, 3, WAIT, Duration::from_secs(2)).await;
    assert_eq!(after.len(), 3, "a second redrive adds nothing: {after:?}");
    let letters_after = read(&topics.dead_letter, 4, WAIT, Duration::from_secs(1)).await;
    assert_eq!(letters_after.len(), 4, "nothing dead-lettered again");

    // A letter that fails again is dead-lettered again, with its count.
    let bad = redrive(&config, &["--kind", "invalid-json"]);
    assert!(bad.starts_with("redrove 1 dead letter(s)"), "{bad}");
    let again = read(&topics.dead_letter, 5, WAIT, Duration::ZERO).await;
    let last = again.iter().max_by_key(|letter| letter.offset).unwrap();
    assert_eq!(last.key.as_deref(), Some("bad"));
    assert_eq!(last.header("stagehost-error-kind"), "invalid-json");
    assert_eq!(last.header("stagehost-redrive-count"), "1");
    assert!(
        last.header("stagehost-redrive-of")
            .starts_with(&topics.dead_letter)
    );
    assert!(host.stop("TERM"), "{}", host.log());

    let gone = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["dlq", "redrive"])
        .arg(&config)
        .args(["--stage", "gone"])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("has no stage `gone`"),
        "{}",
        report(&gone)
    );
}
