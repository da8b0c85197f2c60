//! `host dlq list CONFIG --stage NAME` against the real broker: the
//! calculator runs under `host run`, dead-letters a known mix of bad
//! requests, and the summary counts them by kind, handler, version and
//! reason, most frequent first; a record another stage wrote to the same
//! topic is not counted, and an unknown stage is refused with the stages
//! the config has.

mod common;

use common::{Topics, producer, read, send, signal, spawn_host, wait_output};
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

fn report(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
