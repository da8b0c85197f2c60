//! Stages as parts of a graph, against the real broker: one graph split
//! across two hosts by `--stage`, and `parallelism` inside one host (a slow
//! partition stalls the others only when the limit leaves no room).

mod common;

use common::{RunningHost, brokers, config_from, create_topic, producer, read, unique};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_graph_runs_split_across_two_hosts() {
    let (requests, sums, echoed, dlq) = (
        unique("requests"),
        unique("sums"),
        unique("echoed"),
        unique("dlq"),
    );
    let yaml = format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
admin:
  enabled: false
handlers:
  add:
    path: target/wasm32-wasip2/release/add.wasm
  echo:
    path: target/wasm32-wasip2/release/hostile.wasm
sources: [{requests}]
stages:
  - name: first
    input: {requests}
    output: {sums}
    dead_letter: {dlq}
    handler: add
  - name: second
    input: {sums}
    output: {echoed}
    dead_letter: {dlq}
    handler: echo
"#,
        brokers = brokers(),
        group = unique("group"),
    );
    let first_only = config_from(yaml.clone())
        .select_stages(&["first".to_string()])
        .expect("`first` is a stage");
    let second_only = config_from(yaml)
        .select_stages(&["second".to_string()])
        .expect("`second` is a stage");

    // Each host creates the topics of its own stages only.
    create_topic(&echoed, 1).await;
    let host_a = RunningHost::start(first_only);
    let producer = producer();
    common::send(
        &producer,
        &requests,
        Some("k"),
        br#"{"operation": "sum", "operator_1": "5", "operator_2": "2"}"#,
        &[],
    )
    .await;
    let sums_seen = read(&sums, 1, WAIT, Duration::from_millis(200)).await;
    assert_eq!(sums_seen[0].json()["result"], 7);
    // Host A runs only `first`: nothing consumes `sums` yet.
    let echoed_before = read(&echoed, 0, WAIT, Duration::from_secs(3)).await;
    assert!(
        echoed_before.is_empty(),
        "`second` ran on the host that selected only `first`"
    );

    let host_b = RunningHost::start(second_only);
    let echoed_after = read(&echoed, 1, WAIT, Duration::from_secs(1)).await;
    assert_eq!(echoed_after.len(), 1);
    assert_eq!(echoed_after[0].json(), sums_seen[0].json());
    assert_eq!(echoed_after[0].header("stagehost-handler"), "echo");

    host_a.stop().await.expect("host A stops cleanly");
    host_b.stop().await.expect("host B stops cleanly");
}

#[test]
fn selecting_an_unknown_stage_names_the_stages() {
    let yaml = common::calculator_yaml(&common::Topics::new(), 1);
    let err = config_from(yaml)
        .select_stages(&["calculater".to_string()])
        .expect_err("no such stage");
    assert!(
        err.to_string()
            .contains("`--stage calculater`: no such stage (stages: calculator)"),
        "{err}"
    );
}

/// Runs one stage of the hostile handler over 3 partitions with the given
/// `parallelism`. A message that loops until its 3 s time limit goes to
/// partition 0 first; once it runs, 30 echo messages go to partitions 1
/// and 2. Returns how many echoes were produced before the looping
/// message's dead letter.
async fn echoes_before_the_slow_message(parallelism: usize) -> usize {
    let (input, output, dlq) = (unique("slow-in"), unique("slow-out"), unique("slow-dlq"));
    create_topic(&input, 3).await;
    let yaml = format!(
        r#"
kafka:
  brokers: {brokers}
  group: {group}
admin:
  enabled: false
handlers:
  hostile:
    path: target/wasm32-wasip2/release/hostile.wasm
    limits:
      timeout_ms: 3000
stages:
  - name: slow
    input: {input}
    output: {output}
    dead_letter: {dlq}
    handler: hostile
    parallelism: {parallelism}
"#,
        brokers = brokers(),
        group = unique("group"),
    );
    let host = RunningHost::start(config_from(yaml));
    let producer = producer();
    let send_to = |partition: i32, value: String| {
        let producer = producer.clone();
        let input = input.clone();
        async move {
            producer
                .send(
                    FutureRecord::<str, str>::to(&input)
                        .partition(partition)
                        .payload(&value),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await
                .map_err(|(err, _)| err)
                .expect("test message acknowledged");
        }
    };
    // A first echo proves the stage consumes before the slow message goes in.
    send_to(1, r#"{"do": "echo", "n": -1}"#.to_string()).await;
    read(&output, 1, WAIT, Duration::ZERO).await;
    send_to(0, r#"{"do": "loop"}"#.to_string()).await;
    // Let the looping call start; its limit is 3 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..30 {
        send_to(1 + n % 2, format!(r#"{{"do": "echo", "n": {n}}}"#)).await;
    }
    let echoes = read(&output, 31, WAIT, Duration::from_millis(500)).await;
    let letters = read(&dlq, 1, WAIT, Duration::from_millis(500)).await;
    assert_eq!(echoes.len(), 31, "every echo comes out once");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("stagehost-error-kind"), "timeout");
    host.stop().await.expect("host stops cleanly");
    let dead_lettered_at = letters[0].timestamp.expect("dead letter has a timestamp");
    echoes[1..]
        .iter()
        .filter(|echo| echo.timestamp.expect("output has a timestamp") < dead_lettered_at)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_partition_does_not_stall_the_others() {
    let before = echoes_before_the_slow_message(2).await;
    assert_eq!(
        before, 30,
        "with room for 2 partitions, every echo on partitions 1 and 2 should pass the looping message on 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallelism_one_handles_one_partition_at_a_time() {
    let before = echoes_before_the_slow_message(1).await;
    assert_eq!(
        before, 0,
        "with parallelism 1, the looping message holds the only permit until its time limit"
    );
}

/// The summed lag `GET /topics` reports for the stage `calculator`: the
/// records of its input it has not committed.
async fn committed_lag(admin: std::net::SocketAddr) -> i64 {
    let (status, body) = common::http(admin, "GET", "/topics", None, b"").await;
    assert_eq!(status, 200, "{body}");
    let partitions: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    partitions
        .iter()
        .filter(|p| p["stage"] == "calculator")
        .map(|p| p["lag"].as_i64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stage_takes_nothing_until_resumed_and_loses_nothing() {
    let topics = common::Topics::new();
    let (admin_sender, admin_address) = tokio::sync::oneshot::channel();
    let host = RunningHost::start_with(
        config_from(common::calculator_yaml(&topics, 2)),
        move |ready| {
            let _ = admin_sender.send(ready.admin.expect("the admin port listens"));
        },
    );
    let admin = admin_address.await.unwrap();
    let producer = producer();
    let send_numbered = |range: std::ops::Range<u32>| {
        let (producer, input) = (producer.clone(), topics.input.clone());
        async move {
            for n in range {
                let value = format!(r#"{{"operation": "sum", "x": {n}, "y": 1}}"#);
                common::send(
                    &producer,
                    &input,
                    Some(&format!("k{n}")),
                    value.as_bytes(),
                    &[],
                )
                .await;
            }
        }
    };
    send_numbered(0..5).await;
    read(&topics.output, 5, WAIT, Duration::ZERO).await;

    let (status, body) = common::http(admin, "POST", "/stages/calculator/pause", None, b"").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["paused"], true);
    assert_eq!(answer["changed"], true);
    let (status, body) = common::http(admin, "POST", "/stages/calculator/pause", None, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""changed":false"#), "{body}");
    let (status, body) = common::http(admin, "GET", "/healthz", None, b"").await;
    assert_eq!((status, body.as_str()), (200, "ok; paused: calculator"));
    let (status, body) = common::http(admin, "POST", "/stages/no-such/pause", None, b"").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no stage `no-such`"), "{body}");

    // While paused: the new requests wait in the topic, and the lag says so.
    send_numbered(5..10).await;
    let started = std::time::Instant::now();
    while committed_lag(admin).await != 5 {
        assert!(
            started.elapsed() < WAIT,
            "the lag never showed 5 waiting requests"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let while_paused = read(&topics.output, 5, WAIT, Duration::from_secs(2)).await;
    assert_eq!(while_paused.len(), 5, "nothing taken while paused");

    let (status, body) = common::http(admin, "POST", "/stages/calculator/resume", None, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""paused":false"#), "{body}");
    let results = read(&topics.output, 10, WAIT, Duration::from_secs(1)).await;
    let (_, body) = common::http(admin, "GET", "/healthz", None, b"").await;
    assert_eq!(body, "ok");
    host.stop().await.expect("host stops cleanly");

    let mut keys: Vec<String> = results.iter().filter_map(|r| r.key.clone()).collect();
    keys.sort_by_key(|key| key[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..10).map(|n| format!("k{n}")).collect();
    assert_eq!(keys, expected, "each request once, none lost");
}
