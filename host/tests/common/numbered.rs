//! Uniquely numbered messages for the crash and fault tests: a feed that
//! sends ids at a steady rate, a tally that reads the output topic and
//! counts every id (lost, duplicated, out of order per key), and a host
//! process that can be killed and started again on the same config.

use super::{brokers, repo_root, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The calculator request carrying id `id`, keyed by `id % keys`.
pub fn request(id: u64) -> String {
    format!(r#"{{"operation":"add","id":{id},"x":{id},"y":1}}"#)
}

/// Sends ids `0..count` to `topic` at `rate` per second from a thread of
/// its own, keyed over `keys` keys; waits for every acknowledgement.
pub fn feed(topic: &str, count: u64, rate: u64, keys: u64) -> JoinHandle<()> {
    feed_to(&brokers(), topic, count, rate, keys)
}

/// [`feed`] on the cluster at `bootstrap`.
pub fn feed_to(bootstrap: &str, topic: &str, count: u64, rate: u64, keys: u64) -> JoinHandle<()> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "600000")
            .create()
            .unwrap();
        let started = Instant::now();
        let mut sent = 0;
        while sent < count {
            let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(count);
            while sent < due {
                let (key, value) = (format!("k{}", sent % keys), request(sent));
                let mut record = BaseRecord::to(&topic).key(&key).payload(&value);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            record = back;
                            producer.poll(Duration::from_millis(10));
                        }
                    }
                }
                sent += 1;
            }
            producer.poll(Duration::from_millis(2));
        }
        producer
            .flush(Duration::from_secs(600))
            .expect("every test message acknowledged");
    })
}

/// What the tally saw.
#[derive(Debug)]
pub struct Report {
    pub records: usize,
    pub distinct: usize,
    pub lost: Vec<u64>,
    pub duplicates: usize,
    /// First occurrences of ids that came after a higher id of the same key.
    pub out_of_order: usize,
}

impl Report {
    /// No id lost, and per key the first arrivals in input order.
    pub fn assert_nothing_lost(&self) {
        assert!(
            self.lost.is_empty(),
            "{} ids lost, first {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(20)]
        );
        assert_eq!(self.out_of_order, 0, "first arrivals out of order per key");
    }
}

/// Reads an output topic from the beginning (`read_committed`) and keeps
/// every (key, id) in arrival order.
pub struct Tally {
    seen: Arc<Mutex<Vec<(String, u64)>>>,
    distinct: Arc<AtomicUsize>,
    reading: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Tally {
    pub fn start(topic: &str, partitions: i32) -> Self {
        Self::start_on(&brokers(), topic, partitions)
    }

    /// [`Tally::start`] on the cluster at `bootstrap`.
    pub fn start_on(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let distinct = Arc::new(AtomicUsize::new(0));
        let reading = Arc::new(AtomicBool::new(true));
        let reader = {
            let (seen, distinct, reading) = (seen.clone(), distinct.clone(), reading.clone());
            let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
            std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .set("group.id", unique("tally"))
                    .set("enable.auto.commit", "false")
                    .set("isolation.level", "read_committed")
                    .set("topic.metadata.refresh.interval.ms", "1000")
                    .create()
                    .unwrap();
                let mut assignment = TopicPartitionList::new();
                for partition in 0..partitions {
                    assignment
                        .add_partition_offset(&topic, partition, Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&assignment).unwrap();
                let mut ids = HashSet::new();
                while reading.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(20)) else {
                        continue;
                    };
                    // The topic may not exist yet, or the broker may be away.
                    let Ok(message) = message else { continue };
                    let value: serde_json::Value =
                        serde_json::from_slice(message.payload().unwrap_or_default())
                            .expect("outputs are JSON");
                    let id = value["id"].as_u64().expect("outputs carry their id");
                    let key = String::from_utf8_lossy(message.key().unwrap_or_default());
                    seen.lock().unwrap().push((key.into_owned(), id));
                    if ids.insert(id) {
                        distinct.store(ids.len(), Ordering::Relaxed);
                    }
                }
            })
        };
        Self {
            seen,
            distinct,
            reading,
            reader: Some(reader),
        }
    }

    /// Distinct ids seen so far.
    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Waits until at least `count` distinct ids were seen; panics after
    /// `timeout`, or when `host` exits meanwhile.
    pub fn wait_for(&self, count: usize, timeout: Duration, host: &mut HostProcess) {
        self.wait_for_hosts(count, timeout, std::slice::from_mut(host));
    }

    /// [`Tally::wait_for`] with several hosts: panics when any host that
    /// was not stopped by the test exits.
    pub fn wait_for_hosts(&self, count: usize, timeout: Duration, hosts: &mut [HostProcess]) {
        let started = Instant::now();
        let logs = |hosts: &[HostProcess]| {
            let logs: Vec<String> = hosts.iter().map(HostProcess::log).collect();
            logs.join("\n-- next host --\n")
        };
        while self.distinct() < count {
            for host in hosts.iter_mut() {
                if let Some(status) = host.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!(
                        "the host exited ({status}) at {} of {count} ids; log:\n{}",
                        self.distinct(),
                        host.log()
                    );
                }
            }
            assert!(
                started.elapsed() < timeout,
                "only {} of {count} ids after {timeout:?}; host log:\n{}",
                self.distinct(),
                logs(hosts)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops reading after `settle` and counts ids `0..count`.
    pub fn finish(mut self, count: u64, settle: Duration) -> Report {
        std::thread::sleep(settle);
        self.reading.store(false, Ordering::Relaxed);
        self.reader.take().unwrap().join().expect("tally thread");
        let seen = self.seen.lock().unwrap();
        let mut times: HashMap<u64, usize> = HashMap::new();
        let mut highest: HashMap<&str, u64> = HashMap::new();
        let mut out_of_order = 0;
        for (key, id) in seen.iter() {
            let first = {
                let n = times.entry(*id).or_default();
                *n += 1;
                *n == 1
            };
            if first {
                let top = highest.entry(key).or_insert(*id);
                if *id < *top {
                    out_of_order += 1;
                }
                *top = (*top).max(*id);
            }
        }
        Report {
            records: seen.len(),
            distinct: times.len(),
            lost: (0..count).filter(|id| !times.contains_key(id)).collect(),
            duplicates: times.values().map(|n| n - 1).sum(),
            out_of_order,
        }
    }
}

/// A `host run` process on a config file of its own; its log goes to a
/// file beside the config, kept across restarts.
pub struct HostProcess {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// The log's length when the running process was started.
    log_at_start: usize,
}

impl HostProcess {
    /// Writes `yaml` (plugin paths made absolute) and starts the host on it.
    pub fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[])
    }

    /// [`HostProcess::start`] with extra environment variables.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(unique("stagehost-run"));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = yaml.replace(
            "path: target/",
            &format!("path: {}/target/", repo_root().display()),
        );
        let config = dir.join("config.yml");
        std::fs::write(&config, yaml).unwrap();
        let mut host = Self {
            log: dir.join("host.log"),
            config,
            child: None,
            log_at_start: 0,
            env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        host.restart();
        host
    }

    /// Starts the host again (after it was killed or stopped).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the host is still running");
        self.log_at_start = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_host"))
                .args(["run", self.config.to_str().unwrap()])
                .env("RUST_LOG", "info")
                .envs(self.env.iter().map(|(key, value)| (key, value)))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    /// Sends `signal` (`KILL`, `TERM`) and waits for the process to end;
    /// returns whether it exited successfully.
    pub fn stop(&mut self, signal: &str) -> bool {
        let mut child = self.child.take().expect("the host is running");
        if signal != "KILL" {
            // The host catches signals before it logs anything: a signal sent
            // earlier would end it by the default action, not by its own.
            let started = Instant::now();
            while self.log().len() <= self.log_at_start
                && child.try_wait().unwrap().is_none()
                && started.elapsed() < Duration::from_secs(120)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        super::signal(&child, signal);
        child.wait().unwrap().success()
    }

    /// Waits until the running process (not an earlier one) logs a line
    /// containing `needle`; panics with the log after `timeout`. A process
    /// killed before it logged anything leaves no line to count, so waiting
    /// on this one's part of the log is what tells its start.
    pub fn wait_for_log_since_start(&self, needle: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log
                .get(self.log_at_start..)
                .is_some_and(|since| since.contains(needle))
            {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{needle:?} not logged by the running process after {timeout:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file the host runs.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// The host's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Whether the process runs (it was not stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits until a log line contains `needle` and returns it without
    /// colour codes; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let log = strip_ansi(&self.log());
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            assert!(
                started.elapsed() < timeout,
                "no `{needle}` in the host log after {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin port's address, from the host's log (for `listen` port 0).
    pub fn admin_address(&self, timeout: Duration) -> std::net::SocketAddr {
        let line = self.wait_for_log("admin server listening", timeout);
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("address="))
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no address in `{line}`"))
    }
}

/// `text` without ANSI escape sequences (the human log format colours fields).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then one final byte in '@'..='~'.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kill points: `count` sorted fractions in [0.2, 0.9), drawn at random
/// (printed, so a failing run can be told apart).
pub fn kill_points(count: usize) -> Vec<f64> {
    let random = uuid::Uuid::new_v4();
    let mut points: Vec<f64> = random.as_bytes()[..count]
        .iter()
        .map(|byte| 0.2 + 0.7 * f64::from(*byte) / 256.0)
        .collect();
    points.sort_by(f64::total_cmp);
    points
}
