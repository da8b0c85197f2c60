//! Broker failover on a three-node KRaft cluster: the test starts its own
//! cluster with `scripts/kafka.sh` on ports 19092-19094 (so the single
//! broker on 9092 is left alone), and stops it at the end whatever happens.
//! The host creates its topics with replication factor 3; the cluster's
//! default `min.insync.replicas` is 2. Numbered messages flow through a
//! `host run` process while node 2 is killed with SIGKILL at 30%; the
//! pipeline goes on with two brokers and no id is lost, in both delivery
//! modes. At least once, node 2 is started again at 70% (on 2 cores it takes
//! 10 to 30 s to answer, mostly after the last id), which also readies the
//! cluster for the exactly-once run; there it stays down until the end. A
//! `read_committed` reader sees no id twice in exactly-once mode.

mod common;

use common::numbered::{HostProcess, Report, Tally, feed_to};
use common::{Topics, calculator_yaml_on, repo_root, unique};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use std::process::Command;
use std::time::{Duration, Instant};

/// Client port of node 1; nodes 2 and 3 follow, controllers are +1000.
const PORT: u16 = 19092;
const NODES: u16 = 3;
/// The node killed under load.
const VICTIM: u16 = 2;
const PARTITIONS: i32 = 4;
const COUNT: u64 = 20_000;
const RATE: u64 = 2_000;
const KEYS: u64 = 32;
/// Longest wait for a step: a safety net only.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

fn bootstrap() -> String {
    (0..NODES)
        .map(|i| format!("127.0.0.1:{}", PORT + i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `scripts/kafka.sh ARGS` for the test's cluster; true on success.
fn kafka(args: &[&str]) -> bool {
    Command::new("bash")
        .arg(repo_root().join("scripts/kafka.sh"))
        .args(args)
        .env("KAFKA_PORT", PORT.to_string())
        .env("KAFKA_NODES", NODES.to_string())
        .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
        .status()
        .expect("running scripts/kafka.sh")
        .success()
}

/// The test's cluster: started by [`Cluster::up`], stopped when dropped,
/// also when the test fails.
struct Cluster;

impl Cluster {
    fn up() -> Self {
        let cluster = Cluster;
        let started = Instant::now();
        assert!(kafka(&["up"]), "the three-node cluster did not start");
        println!("cluster up on {} in {:.1?}", bootstrap(), started.elapsed());
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !kafka(&["down"]) {
            eprintln!(
                "scripts/kafka.sh down failed for the cluster on {}",
                bootstrap()
            );
        }
    }
}

/// Checks what the host created: every partition of `topics` on 3 replicas,
/// `min.insync.replicas` 2 (the cluster default, the host sets no topic
/// config). Returns the input partitions node [`VICTIM`] leads.
fn check_topics(topics: &Topics) -> usize {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut victim_leads = 0;
    for topic in [&topics.input, &topics.output, &topics.dead_letter] {
        // The broker asked may learn of a new topic a moment later.
        let asked = Instant::now();
        let metadata = loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(topic), Duration::from_secs(30))
                .expect("topic metadata");
            if metadata.topics()[0].error().is_none()
                && metadata.topics()[0].partitions().len() == PARTITIONS as usize
            {
                break metadata;
            }
            assert!(
                asked.elapsed() < STEP_TIMEOUT,
                "{topic} has no {PARTITIONS} partitions"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let partitions = metadata.topics()[0].partitions();
        for partition in partitions {
            assert_eq!(
                partition.replicas().len(),
                NODES as usize,
                "{topic} partition {} replicas",
                partition.id()
            );
            if topic == &topics.input && partition.leader() == i32::from(VICTIM) {
                victim_leads += 1;
            }
        }
        let configs = runtime
            .block_on(admin.describe_configs(
                &[ResourceSpecifier::Topic(topic)],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("describe topic configs");
        let config = configs[0].as_ref().expect("topic config");
        let entry = config.entry_map()["min.insync.replicas"];
        assert_eq!(
            entry.value.as_deref(),
            Some("2"),
            "{topic} min.insync.replicas ({:?})",
            entry.source
        );
    }
    victim_leads
}

/// Waits like [`Tally::wait_for`]; returns the longest time without a new id.
fn wait_noting_gaps(tally: &Tally, count: usize, host: &mut HostProcess) -> Duration {
    let mut longest = Duration::ZERO;
    while tally.distinct() < count {
        let waiting = Instant::now();
        tally.wait_for(tally.distinct() + 1, STEP_TIMEOUT, host);
        longest = longest.max(waiting.elapsed());
    }
    longest
}

/// Runs `COUNT` ids through a host in `delivery` mode while node
/// [`VICTIM`] is killed at 30% and, with `restart`, started again at 70%.
fn lose_a_broker_under_load(delivery: &str, restart: bool) -> Report {
    let started = Instant::now();
    let topics = Topics::new();
    let yaml = calculator_yaml_on(&bootstrap(), &topics, PARTITIONS).replace(
        "  topics:\n",
        &format!(
            "  delivery: {delivery}\n  transactions:\n    id: {}\n  topics:\n    replication_factor: {NODES}\n",
            unique("failover-txn")
        ),
    );
    // The host creates the topics before it says it runs.
    let mut host = HostProcess::start(&yaml);
    host.wait_for_log("stagehost running", STEP_TIMEOUT);
    let victim_leads = check_topics(&topics);
    println!(
        "{delivery}: topics on {NODES} replicas, min.insync.replicas 2; node {VICTIM} leads {victim_leads} of {PARTITIONS} input partitions"
    );

    let tally = Tally::start_on(&bootstrap(), &topics.output, PARTITIONS);
    let feeding = feed_to(&bootstrap(), &topics.input, COUNT, RATE, KEYS);
    let feeding_since = Instant::now();
    tally.wait_for(1, STEP_TIMEOUT, &mut host);
    let first = feeding_since.elapsed();
    let before = wait_noting_gaps(&tally, COUNT as usize * 3 / 10, &mut host);
    assert!(
        kafka(&["kill", &VICTIM.to_string()]),
        "killing node {VICTIM}"
    );
    let killed = Instant::now();
    let at_kill = tally.distinct();
    let down = wait_noting_gaps(&tally, COUNT as usize * 7 / 10, &mut host);
    let at_restart = tally.distinct();
    println!(
        "{delivery}: node {VICTIM} killed at {at_kill} distinct ids; {} ids came out in the {:.1?} it was down, longest pause {down:.1?} (before the kill: first id {first:.1?} after the feed began, then longest pause {before:.1?})",
        at_restart - at_kill,
        killed.elapsed()
    );
    let restart = restart.then(|| {
        std::thread::spawn(|| {
            let restarting = Instant::now();
            (kafka(&["up"]), restarting.elapsed())
        })
    });
    let after = wait_noting_gaps(&tally, COUNT as usize, &mut host);
    let last_id = killed.elapsed();
    feeding.join().expect("feed thread");
    match restart {
        Some(restart) => {
            let (restarted, restart_time) = restart.join().expect("restart thread");
            assert!(restarted, "node {VICTIM} did not start again");
            println!(
                "{delivery}: last id {last_id:.1?} after the kill; node {VICTIM} started again at 70%, answered after {restart_time:.1?}; longest pause from 70% to the last id {after:.1?}"
            );
        }
        None => println!(
            "{delivery}: last id {last_id:.1?} after the kill, node {VICTIM} still down; longest pause from 70% to the last id {after:.1?}"
        ),
    }
    assert!(
        host.stop("TERM"),
        "SIGTERM must end the host cleanly; log:\n{}",
        host.log()
    );
    let report = tally.finish(COUNT, Duration::from_secs(3));
    println!(
        "{delivery}: {report:?}, {} duplicates, {:.1?} in all",
        report.duplicates,
        started.elapsed()
    );
    report
}

#[test]
fn broker_lost_from_three_loses_nothing() {
    let started = Instant::now();
    let cluster = Cluster::up();
    let at_least_once = lose_a_broker_under_load("at-least-once", true);
    at_least_once.assert_nothing_lost();
    let exactly_once = lose_a_broker_under_load("exactly-once", false);
    exactly_once.assert_nothing_lost();
    assert_eq!(
        exactly_once.duplicates, 0,
        "a read_committed reader saw duplicates in exactly-once mode"
    );
    let stopping = Instant::now();
    drop(cluster);
    println!(
        "cluster down in {:.1?}; {:.1?} in all",
        stopping.elapsed(),
        started.elapsed()
    );
}
