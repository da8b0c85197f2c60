//! Crash safety against the real broker, tested the way Kafka's own
//! transactions system test does it: uniquely numbered messages flow through
//! the calculator while the `host` process is killed with SIGKILL at random
//! points after 20% progress and started again. A reader counts every id:
//! none may be lost, duplicates are counted and reported, and per key the
//! first arrivals stay in order. After a SIGTERM there are no duplicates;
//! in exactly-once mode a `read_committed` reader sees every id once.

mod common;

use common::numbered::{HostProcess, Report, Tally, feed, kill_points};
use common::{Topics, calculator_yaml, create_topic, unique};
use std::time::Duration;

const PARTITIONS: i32 = 4;
const KEYS: u64 = 32;
/// Ids sent per second while the host runs (and is killed).
const RATE: u64 = 5_000;
/// Longest wait for the host to make the progress a step needs.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(240);

/// The calculator config for a crash run: a short session timeout, so the
/// restarted host gets the killed one's partitions within seconds.
fn crash_yaml(topics: &Topics, delivery: &str) -> String {
    calculator_yaml(topics, PARTITIONS).replace(
        "  topics:\n",
        &format!(
            "  consumer:\n    session.timeout.ms: 6000\n    heartbeat.interval.ms: 1000\n  delivery: {delivery}\n  transactions:\n    id: {}\n  topics:\n",
            unique("crash-txn")
        ),
    )
}

async fn topics_for_crash_run() -> Topics {
    let topics = Topics::new();
    create_topic(&topics.input, PARTITIONS).await;
    create_topic(&topics.output, PARTITIONS).await;
    topics
}

/// Runs `count` ids through a host killed with SIGKILL at `kills` random
/// points, then lets a last start finish and stop with SIGTERM.
fn run_with_kills(topics: &Topics, delivery: &str, count: u64, kills: usize) -> Report {
    let tally = Tally::start(&topics.output, PARTITIONS);
    let feeding = feed(&topics.input, count, RATE, KEYS);
    let points = kill_points(kills);
    println!("{delivery}: SIGKILL at {points:.3?} of {count} ids");
    let mut host = HostProcess::start(&crash_yaml(topics, delivery));
    for (round, point) in points.iter().enumerate() {
        // Each start makes some progress of its own before it is killed.
        let target = ((point * count as f64) as usize)
            .max(tally.distinct() + count as usize / 50)
            .min(count as usize);
        tally.wait_for(target, PROGRESS_TIMEOUT, &mut host);
        host.stop("KILL");
        println!(
            "{delivery}: kill {} at {} distinct ids (target {target})",
            round + 1,
            tally.distinct()
        );
        host.restart();
    }
    tally.wait_for(count as usize, PROGRESS_TIMEOUT, &mut host);
    feeding.join().expect("feed thread");
    assert!(
        host.stop("TERM"),
        "SIGTERM must end the host cleanly; log:\n{}",
        host.log()
    );
    let report = tally.finish(count, Duration::from_secs(3));
    println!("{delivery}: {report:?}");
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_three_times_loses_nothing() {
    let topics = topics_for_crash_run().await;
    let report =
        tokio::task::spawn_blocking(move || run_with_kills(&topics, "at-least-once", 50_000, 3))
            .await
            .unwrap();
    report.assert_nothing_lost();
    println!(
        "at-least-once: {} duplicates over 3 kills ({} records for 50000 ids)",
        report.duplicates, report.records
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_sigkill_three_times_gives_every_id_once() {
    let topics = topics_for_crash_run().await;
    let report =
        tokio::task::spawn_blocking(move || run_with_kills(&topics, "exactly-once", 50_000, 3))
            .await
            .unwrap();
    report.assert_nothing_lost();
    assert_eq!(
        report.duplicates, 0,
        "a read_committed reader saw duplicates in exactly-once mode"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_then_restart_repeats_nothing() {
    let topics = topics_for_crash_run().await;
    let report = tokio::task::spawn_blocking(move || {
        let count = 20_000;
        let tally = Tally::start(&topics.output, PARTITIONS);
        let feeding = feed(&topics.input, count, RATE, KEYS);
        let mut host = HostProcess::start(&crash_yaml(&topics, "at-least-once"));
        tally.wait_for(count as usize / 2, PROGRESS_TIMEOUT, &mut host);
        assert!(
            host.stop("TERM"),
            "SIGTERM must end the host cleanly; log:\n{}",
            host.log()
        );
        println!("stopped with SIGTERM at {} distinct ids", tally.distinct());
        host.restart();
        tally.wait_for(count as usize, PROGRESS_TIMEOUT, &mut host);
        feeding.join().expect("feed thread");
        assert!(host.stop("TERM"), "log:\n{}", host.log());
        tally.finish(count, Duration::from_secs(3))
    })
    .await
    .unwrap();
    println!("{report:?}");
    report.assert_nothing_lost();
    assert_eq!(
        report.duplicates, 0,
        "a SIGTERM drain must not repeat outputs"
    );
}
