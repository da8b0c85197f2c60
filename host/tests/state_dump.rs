//! `host state dump CONFIG --stage NAME` against the real broker: a
//! `running-total` stage runs under `host run` (exactly once) on keyed
//! amounts and stops; the dump then prints one entry per account, in the
//! input partition the account's messages went to, whose value is the
//! account's total and count. Records added to the changelog afterwards
//! show the rules: a tombstone deletes, an entry whose expiry has passed is
//! left out, one that expires later is printed with its `expires_at`;
//! `--partition` selects, and a stage without state is refused.

mod common;

use common::numbered::HostProcess;
use common::{brokers, create_topic, producer, read, report, send, unique};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 4;
const ACCOUNTS: u64 = 20;
const AMOUNTS: u64 = 200;

/// `host state dump CONFIG --stage STAGE ARGS`.
fn dump(config: &Path, stage: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["state", "dump"])
        .arg(config)
        .args(["--stage", stage])
        .args(args)
        .output()
        .expect("host runs")
}

/// The dump's lines, parsed, by key; checks each line's fields and order.
fn entries(out: &Output) -> BTreeMap<String, Value> {
    assert!(out.status.success(), "{}", report(out));
    let mut entries = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        assert!(line.starts_with(r#"{"partition":"#), "{line}");
        let entry: Value = serde_json::from_str(line).unwrap();
        let fields: Vec<&String> = entry.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 4, "{line}");
        let key = entry["key"].as_str().unwrap().to_string();
        assert!(entries.insert(key, entry).is_none(), "a key twice: {line}");
    }
    entries
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_stages_state_is_dumped_from_its_changelog() {
    let (input, output, changelog) = (unique("amounts"), unique("totals"), unique("changelog"));
    create_topic(&input, PARTITIONS).await;
    create_topic(&output, PARTITIONS).await;
    let state_dir = std::env::temp_dir().join(unique("stagehost-state"));
    let yaml = format!(
        r#"
state_dir: {state_dir}
kafka:
  brokers: {brokers}
  group: {group}
  delivery: exactly-once
  transactions:
    id: {txn}
    commit_interval_ms: 100
  topics:
    partitions: {PARTITIONS}
handlers:
  running-total:
    path: target/wasm32-wasip2/release/running_total.wasm
stages:
  - name: totals
    input: {input}
    output: {output}
    dead_letter: {dead_letter}
    handler: running-total
    state: {{changelog: {changelog}}}
  - name: plain
    input: {output}
    output: {plain}
    dead_letter: {dead_letter}
    handler: running-total
"#,
        state_dir = state_dir.display(),
        brokers = brokers(),
        group = unique("dump-group"),
        txn = unique("dump-txn"),
        dead_letter = unique("totals-dlq"),
        plain = unique("plain"),
    );
    let mut host = HostProcess::start(&yaml);
    let config = host.config_path().to_path_buf();
    tokio::task::block_in_place(|| {
        host.wait_for_log("stagehost running", Duration::from_secs(120))
    });

    let producer = producer();
    let mut expected: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for index in 0..AMOUNTS {
        let account = format!("account-{:02}", index % ACCOUNTS);
        let amount = (index * 7 % 11) as i64 - 3;
        let value = format!(r#"{{"account": "{account}", "amount": {amount}}}"#);
        send(&producer, &input, Some(&account), value.as_bytes(), &[]).await;
        let (total, count) = expected.entry(account).or_default();
        *total += amount;
        *count += 1;
    }
    // Every output committed, then a clean stop.
    let outputs = read(
        &output,
        AMOUNTS as usize,
        Duration::from_secs(120),
        Duration::ZERO,
    )
    .await;
    assert!(outputs.len() >= AMOUNTS as usize);
    assert!(host.stop("TERM"), "log:\n{}", host.log());
    // The partition each account's messages went to.
    let inputs = read(
        &input,
        AMOUNTS as usize,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .await;
    let partition_of: BTreeMap<String, i32> = inputs
        .iter()
        .map(|record| (record.key.clone().unwrap(), record.partition))
        .collect();

    let dumped = entries(&dump(&config, "totals", &[]));
    assert_eq!(
        dumped.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (account, (total, count)) in &expected {
        let entry = &dumped[account];
        let value: Value = serde_json::from_str(entry["value"].as_str().unwrap()).unwrap();
        assert_eq!(value, json!({"total": total, "count": count}), "{entry}");
        assert_eq!(entry["partition"], partition_of[account], "{entry}");
        assert_eq!(entry["expires_at"], Value::Null, "{entry}");
    }

    // A tombstone, an expired entry and one that expires in an hour.
    let gone = "account-00";
    let partition = partition_of[gone];
    let raw = |key: &str, value: Option<&str>, expires: Option<u64>| {
        let producer = producer.clone();
        let changelog = changelog.clone();
        let (key, value) = (key.to_string(), value.map(str::to_string));
        async move {
            use rdkafka::message::{Header, OwnedHeaders};
            use rdkafka::producer::FutureRecord;
            let expires = expires.map(|at| at.to_string());
            let mut headers = OwnedHeaders::new();
            if let Some(at) = &expires {
                headers = headers.insert(Header {
                    key: "stagehost-expires-at",
                    value: Some(at.as_str()),
                });
            }
            let mut record = FutureRecord::<str, str>::to(&changelog)
                .key(&key)
                .partition(partition)
                .headers(headers);
            if let Some(value) = &value {
                record = record.payload(value);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(err, _)| err)
                .expect("changelog record acknowledged");
        }
    };
    raw(gone, None, None).await;
    raw("expired", Some("1"), Some(now_ms() - 1000)).await;
    let later = now_ms() + 3_600_000;
    raw("later", Some("2"), Some(later)).await;

    let dumped = entries(&dump(&config, "totals", &[]));
    assert!(!dumped.contains_key(gone), "{dumped:?}");
    assert!(!dumped.contains_key("expired"), "{dumped:?}");
    assert_eq!(
        dumped["later"],
        json!({"partition": partition, "key": "later", "value": "2", "expires_at": later})
    );
    assert_eq!(dumped.len(), expected.len());

    let only = entries(&dump(
        &config,
        "totals",
        &["--partition", &partition.to_string()],
    ));
    assert!(!only.is_empty());
    assert!(
        only.values().all(|entry| entry["partition"] == partition),
        "{only:?}"
    );
    let in_partition = dumped
        .values()
        .filter(|entry| entry["partition"] == partition)
        .count();
    assert_eq!(only.len(), in_partition);

    let refused = dump(&config, "plain", &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stage `plain`")
            && String::from_utf8_lossy(&refused.stderr).contains("has no `state:`"),
        "{}",
        report(&refused)
    );
    let missing = dump(&config, "nope", &[]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("has no stage `nope`"),
        "{}",
        report(&missing)
    );
    std::fs::remove_dir_all(&state_dir).ok();
}
