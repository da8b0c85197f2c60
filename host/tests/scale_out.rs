//! Scale-out against the real broker: three `host run` processes started
//! from one config (so one consumer group) share a 6-partition topic while
//! uniquely numbered messages flow. Each process's admin `/metrics` shows
//! that it consumed messages and which partitions it fetches. One process
//! is killed with SIGKILL at 40%: the other two take its partitions over.
//! Another is stopped with SIGTERM at 70%: the last one takes everything.
//! A reader counts every id: none may be lost, and per key the first
//! arrivals stay in order; duplicates (at least once) are reported.

mod common;

use common::numbered::{HostProcess, Tally, feed};
use common::{Topics, calculator_yaml, create_topic};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;
const HOSTS: usize = 3;
const COUNT: u64 = 30_000;
/// Ids sent per second: the feed lasts 20 s, long enough for both stops.
const RATE: u64 = 1_500;
const KEYS: u64 = 60;
/// Longest wait for a step (progress, a rebalance): a safety net only.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The calculator config every process runs: a short session timeout, so
/// a killed member's partitions move within seconds, and consumer
/// statistics (which feed `stagehost_consumer_lag`) twice a second.
fn scale_out_yaml(topics: &Topics) -> String {
    calculator_yaml(topics, PARTITIONS).replace(
        "  topics:\n",
        "  consumer:\n    session.timeout.ms: 6000\n    heartbeat.interval.ms: 1000\n    statistics.interval.ms: 500\n  topics:\n",
    )
}

/// What one process's `/metrics` says about the stage.
#[derive(Debug, Default, Clone)]
struct Sample {
    /// `stagehost_messages_in_total`.
    messages_in: u64,
    /// Partitions with a `stagehost_consumer_lag` series: those it fetches.
    partitions: BTreeSet<i32>,
}

/// One `GET /metrics`; `None` when the process does not answer.
fn sample(address: SocketAddr) -> Option<Sample> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // HTTP/1.0: the whole body, never chunked.
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.contains(" 200 ") {
        return None;
    }
    let mut sample = Sample::default();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("stagehost_messages_in_total{") {
            let value = rest.rsplit(' ').next()?;
            sample.messages_in += value.parse::<f64>().ok()? as u64;
        } else if let Some(rest) = line.strip_prefix("stagehost_consumer_lag{") {
            let partition = rest.split("partition=\"").nth(1)?.split('"').next()?;
            sample.partitions.insert(partition.parse().ok()?);
        }
    }
    Some(sample)
}

/// The running processes' samples (`None` for those stopped).
fn sample_all(hosts: &[HostProcess], addresses: &[SocketAddr]) -> Vec<Option<Sample>> {
    hosts
        .iter()
        .zip(addresses)
        .map(|(host, address)| host.is_running().then(|| sample(*address)).flatten())
        .collect()
}

/// Polls the running processes until `done` holds for their samples;
/// returns them and how long it took. Panics after [`STEP_TIMEOUT`].
fn wait_for_samples(
    what: &str,
    hosts: &[HostProcess],
    addresses: &[SocketAddr],
    done: impl Fn(&[Option<Sample>]) -> bool,
) -> (Vec<Option<Sample>>, Duration) {
    let started = Instant::now();
    loop {
        let samples = sample_all(hosts, addresses);
        if done(&samples) {
            return (samples, started.elapsed());
        }
        assert!(
            started.elapsed() < STEP_TIMEOUT,
            "{what}: not after {STEP_TIMEOUT:?}; last samples {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every partition of the topic is fetched by one of the running processes.
fn all_partitions_held(samples: &[Option<Sample>]) -> bool {
    let held: BTreeSet<i32> = samples
        .iter()
        .flatten()
        .flat_map(|s| s.partitions.iter().copied())
        .collect();
    held.len() == PARTITIONS as usize
}

fn show(samples: &[Option<Sample>]) -> String {
    samples
        .iter()
        .enumerate()
        .map(|(i, sample)| match sample {
            Some(s) => format!(
                "host {i}: {} in, partitions {:?}",
                s.messages_in, s.partitions
            ),
            None => format!("host {i}: stopped"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_member_partitions_move_to_the_others() {
    let topics = Topics::new();
    create_topic(&topics.input, PARTITIONS).await;
    create_topic(&topics.output, PARTITIONS).await;
    let report = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let tally = Tally::start(&topics.output, PARTITIONS);
        let feeding = feed(&topics.input, COUNT, RATE, KEYS);
        let yaml = scale_out_yaml(&topics);
        let mut hosts: Vec<HostProcess> = (0..HOSTS).map(|_| HostProcess::start(&yaml)).collect();
        let addresses: Vec<SocketAddr> = hosts
            .iter()
            .map(|host| host.admin_address(STEP_TIMEOUT))
            .collect();

        // The group settles with every process fetching and consuming.
        let (samples, settled) =
            wait_for_samples("every process at work", &hosts, &addresses, |samples| {
                all_partitions_held(samples)
                    && samples
                        .iter()
                        .all(|s| s.as_ref().is_some_and(|s| s.messages_in > 0 && !s.partitions.is_empty()))
            });
        println!(
            "all {HOSTS} processes at work {settled:.1?} after the first sample: {}",
            show(&samples)
        );

        // SIGKILL host 0 at 40%.
        tally.wait_for_hosts(COUNT as usize * 4 / 10, STEP_TIMEOUT, &mut hosts);
        let before_kill = sample_all(&hosts, &addresses);
        let victim = before_kill[0].clone().expect("host 0 answers");
        assert!(
            victim.messages_in > 0 && !victim.partitions.is_empty(),
            "host 0 did no work: {victim:?}"
        );
        hosts[0].stop("KILL");
        let killed_at = tally.distinct();
        println!(
            "SIGKILL host 0 at {killed_at} distinct ids; before: {}",
            show(&before_kill)
        );
        let (after_kill, takeover) =
            wait_for_samples("survivors hold every partition", &hosts, &addresses, all_partitions_held);
        println!(
            "takeover after SIGKILL: {takeover:.1?} until hosts 1 and 2 fetched host 0's partitions {:?} ({} distinct ids by then); {}",
            victim.partitions,
            tally.distinct(),
            show(&after_kill)
        );
        let survivors: BTreeSet<i32> = after_kill
            .iter()
            .flatten()
            .flat_map(|s| s.partitions.iter().copied())
            .collect();
        assert!(victim.partitions.is_subset(&survivors));

        // SIGTERM host 1 at 70% (and at least 10% after the takeover).
        let target = (COUNT as usize * 7 / 10)
            .max(tally.distinct() + COUNT as usize / 10)
            .min(COUNT as usize);
        tally.wait_for_hosts(target, STEP_TIMEOUT, &mut hosts);
        let before_term = sample_all(&hosts, &addresses);
        let term_at = tally.distinct();
        assert!(
            hosts[1].stop("TERM"),
            "SIGTERM must end host 1 cleanly; log:\n{}",
            hosts[1].log()
        );
        println!(
            "SIGTERM host 1 at {term_at} distinct ids; before: {}",
            show(&before_term)
        );
        let (after_term, handover) =
            wait_for_samples("host 2 holds every partition", &hosts, &addresses, all_partitions_held);
        println!(
            "handover after SIGTERM: {handover:.1?} until host 2 fetched all {PARTITIONS} partitions; {}",
            show(&after_term)
        );

        // The last process finishes the feed and stops cleanly.
        tally.wait_for_hosts(COUNT as usize, STEP_TIMEOUT, &mut hosts);
        feeding.join().expect("feed thread");
        let last = sample_all(&hosts, &addresses);
        assert!(
            hosts[2].stop("TERM"),
            "SIGTERM must end host 2 cleanly; log:\n{}",
            hosts[2].log()
        );
        let in_total = victim.messages_in
            + before_term[1].as_ref().map_or(0, |s| s.messages_in)
            + last[2].as_ref().map_or(0, |s| s.messages_in);
        println!(
            "messages in per process (host 0 at its kill, host 1 before its SIGTERM, host 2 at the end): {}, {}, {} (sum {in_total})",
            victim.messages_in,
            before_term[1].as_ref().map_or(0, |s| s.messages_in),
            last[2].as_ref().map_or(0, |s| s.messages_in),
        );
        let report = tally.finish(COUNT, Duration::from_secs(3));
        println!("{report:?}");
        println!("total run time {:.1?}", started.elapsed());
        report
    })
    .await
    .unwrap();
    report.assert_nothing_lost();
    println!(
        "at-least-once: {} duplicates after one SIGKILL and one SIGTERM among {HOSTS} processes ({} records for {COUNT} ids)",
        report.duplicates, report.records
    );
}
