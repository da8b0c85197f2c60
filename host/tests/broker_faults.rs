//! Broker loss under load: the only broker is killed with SIGKILL while
//! numbered messages flow through a running host, and started again. The
//! host reconnects by itself and no id is lost; in exactly-once mode, where
//! the failed transactions are aborted and their partitions rewound, a
//! `read_committed` reader sees no id twice either. This is its own test
//! binary, and the two modes run one after the other in one test, so that no
//! other test runs while the broker is down.

mod common;

use common::numbered::{HostProcess, Report, Tally, feed};
use common::{Topics, calculator_yaml, create_topic, repo_root, unique};
use std::process::Command;
use std::time::Duration;

const PARTITIONS: i32 = 4;

fn kafka(command: &str) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/kafka.sh"))
        .arg(command)
        .status()
        .expect("running scripts/kafka.sh");
    assert!(status.success(), "scripts/kafka.sh {command} failed");
}

/// Starts the broker again when the test ends, whatever happened.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        kafka("up");
    }
}

/// Runs 30,000 ids through a host in `delivery` mode while the broker is
/// killed at 30% and started again 5 s later.
async fn kill_the_broker_under_load(delivery: &str) -> Report {
    let topics = Topics::new();
    create_topic(&topics.input, PARTITIONS).await;
    create_topic(&topics.output, PARTITIONS).await;
    let yaml = calculator_yaml(&topics, PARTITIONS).replace(
        "  topics:\n",
        &format!(
            "  delivery: {delivery}\n  transactions:\n    id: {}\n  topics:\n",
            unique("fault-txn")
        ),
    );
    let delivery = delivery.to_string();
    tokio::task::spawn_blocking(move || {
        let count = 30_000;
        let tally = Tally::start(&topics.output, PARTITIONS);
        let feeding = feed(&topics.input, count, 3_000, 32);
        let mut host = HostProcess::start(&yaml);
        tally.wait_for(count as usize * 3 / 10, Duration::from_secs(120), &mut host);
        let _back = BrokerBack;
        kafka("kill");
        let at_kill = tally.distinct();
        std::thread::sleep(Duration::from_secs(5));
        kafka("up");
        println!(
            "{delivery}: broker killed at {at_kill} distinct ids, down for 5 s plus its start"
        );
        tally.wait_for(count as usize, Duration::from_secs(300), &mut host);
        feeding.join().expect("feed thread");
        assert!(
            host.stop("TERM"),
            "SIGTERM must end the host cleanly; log:\n{}",
            host.log()
        );
        let report = tally.finish(count, Duration::from_secs(3));
        println!("{delivery}: {report:?}");
        report
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_and_restarted_under_load_loses_nothing() {
    let at_least_once = kill_the_broker_under_load("at-least-once").await;
    at_least_once.assert_nothing_lost();
    let exactly_once = kill_the_broker_under_load("exactly-once").await;
    exactly_once.assert_nothing_lost();
    assert_eq!(
        exactly_once.duplicates, 0,
        "a read_committed reader saw duplicates in exactly-once mode"
    );
}
