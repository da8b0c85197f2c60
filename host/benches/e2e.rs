//! End-to-end benchmark against the local real broker (`make kafka-up`):
//! Stagehost against the limit, the same consume → compute → produce loop
//! written by hand in Rust (`host/examples/native_loop.rs`), and against the
//! tutorial's Python consumer (`scripts/bench/python_loop.py`), which meets
//! Stagehost again as `stagehost-python`: the host with every request routed
//! to the Python `multiply` component (its outputs hold products). Each contender
//! runs as its own process with the host's client settings and the host's
//! guarantee (at least once: an input offset is stored only after its output
//! is acknowledged).
//!
//! For each contender, on fresh topics each time:
//! - throughput: `MESSAGES` tutorial requests are preloaded, the contender
//!   starts, and the clock runs until a reader has seen every output; then
//!   every output is checked (its result, no request without one, no dead
//!   letter);
//! - latency: the contender is started and warmed up, then gets requests at
//!   half its measured rate for `LATENCY_SECONDS`, each carrying its send
//!   time (`sent_us`), and each output's arrival gives its end-to-end latency.
//!
//! Run: `make bench-e2e`, or `cargo bench -p stagehost --bench e2e` with env
//! `MESSAGES` (1000000), `PARTITIONS` (4), `SIZE` (bytes per request, 100),
//! `CONTENDERS` (`stagehost,native,python,stagehost-python`), `LATENCY_SECONDS` (20; 0 skips
//! the latency runs), `LATENCY_RATE` (msg/s for every latency run; default
//! half of each contender's throughput), `ROUNDS` (3 throughput runs per
//! contender, in alternation, the median reported), `WARMUP_MESSAGES`
//! (200000: a first, discarded run per contender, so that the broker's JIT
//! and caches are warm for every measured one; 0 skips it),
//! `STAGEHOST_TEST_BROKERS` (127.0.0.1:9092). The figures are printed as a
//! Markdown table, never asserted; missing or wrong outputs fail the run.
//! Contender logs go to `target/bench-e2e/`.

use anyhow::{Context as _, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Headers};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ids of the latency runs' warm-up requests start here.
const WARMUP_ID: u64 = 1 << 40;
/// How long a run may go without a new output before it fails.
const STALL: Duration = Duration::from_secs(60);
/// How long a contender may take to start and give its first output.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Linux's fixed unit of process CPU times in /proc (USER_HZ).
const CLOCK_TICKS: f64 = 100.0;

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={text} is not a number")),
        Err(_) => Ok(default),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The benchmark's knobs.
struct Params {
    messages: u64,
    partitions: i32,
    size: usize,
    contenders: Vec<Contender>,
    latency_seconds: u64,
    /// Throughput runs per contender, in alternation; the median is reported.
    rounds: u64,
    /// Requests of the discarded first round that warms the broker up.
    warmup_messages: u64,
    /// A fixed request rate for every latency run, instead of half of each
    /// contender's throughput.
    latency_rate: Option<f64>,
    brokers: String,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let contenders = std::env::var("CONTENDERS")
            .unwrap_or_else(|_| "stagehost,native,python,stagehost-python".into())
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(Contender::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(!contenders.is_empty(), "CONTENDERS names no contender");
        let params = Self {
            messages: env_number("MESSAGES", 1_000_000)?,
            partitions: i32::try_from(env_number("PARTITIONS", 4)?)?,
            size: usize::try_from(env_number("SIZE", 100)?)?,
            contenders,
            latency_seconds: env_number("LATENCY_SECONDS", 20)?,
            rounds: env_number("ROUNDS", 3)?,
            warmup_messages: env_number("WARMUP_MESSAGES", 200_000)?,
            latency_rate: match env_number("LATENCY_RATE", 0)? {
                0 => None,
                rate => Some(rate as f64),
            },
            brokers: std::env::var("STAGEHOST_TEST_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
        };
        ensure!(params.messages > 0, "MESSAGES must be at least 1");
        ensure!(params.rounds > 0, "ROUNDS must be at least 1");
        ensure!(params.partitions > 0, "PARTITIONS must be at least 1");
        Ok(params)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    /// `target/release/host run` with a generated config.
    Stagehost,
    /// `host/examples/native_loop.rs`.
    Native,
    /// `scripts/bench/python_loop.py` in the bench venv.
    Python,
    /// `host run` with every request routed to the Python `multiply`
    /// component (componentize-py): the tutorial's program 2 moved into
    /// the sandbox, against the `python` loop. Its outputs hold products.
    StagehostPython,
}

impl Contender {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "stagehost" => Self::Stagehost,
            "native" => Self::Native,
            "python" => Self::Python,
            "stagehost-python" => Self::StagehostPython,
            other => bail!(
                "unknown contender `{other}` in CONTENDERS (stagehost, native, python, stagehost-python)"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Stagehost => "stagehost",
            Self::Native => "native",
            Self::Python => "python",
            Self::StagehostPython => "stagehost-python",
        }
    }

    /// Whether it is a `host run` process (configured, not given arguments).
    fn is_stagehost(self) -> bool {
        matches!(self, Self::Stagehost | Self::StagehostPython)
    }

    /// The handlers its config names, as built by `make plugins`.
    fn handlers(self) -> &'static [&'static str] {
        match self {
            Self::Stagehost => &["add", "subtract"],
            Self::StagehostPython => &["multiply"],
            Self::Native | Self::Python => &[],
        }
    }

    /// What its outputs' `result` holds.
    fn computes(self) -> Computes {
        match self {
            Self::StagehostPython => Computes::Product,
            Self::Stagehost | Self::Native | Self::Python => Computes::Calculator,
        }
    }
}

/// What a contender computes from a request's operands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Computes {
    /// The tutorial's calculator: the sum, or the difference for `sub`.
    Calculator,
    /// The `multiply` handler: the product, whatever the operation.
    Product,
}

/// What the contenders run, checked or built before the first run.
struct Programs {
    root: PathBuf,
    host: PathBuf,
    native: PathBuf,
    python: PathBuf,
    logs: PathBuf,
}

impl Programs {
    fn prepare(params: &Params) -> anyhow::Result<Self> {
        let root = repo_root();
        let host = PathBuf::from(env!("CARGO_BIN_EXE_host"));
        let release = host.parent().expect("the host binary is in a folder");
        let logs = root.join("target/bench-e2e");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let cache = std::env::var_os("STAGEHOST_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/stagehost"))
            })
            .context("neither STAGEHOST_CACHE nor HOME is set")?;
        let programs = Self {
            native: release.join("examples/native_loop"),
            python: cache.join("bench-venv/bin/python"),
            root,
            host,
            logs,
        };
        let wants = |contender| params.contenders.contains(&contender);
        for contender in params.contenders.iter().filter(|c| c.is_stagehost()) {
            for handler in contender.handlers() {
                let path = programs.plugin(handler);
                ensure!(
                    path.exists(),
                    "{} is missing: build the plugins with `make plugins`",
                    path.display()
                );
            }
        }
        if wants(Contender::Native) {
            // Always asked: cargo does nothing when the example is up to date.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            eprintln!("e2e: cargo build --release -p stagehost --example native_loop");
            let built = Command::new(&cargo)
                .args([
                    "build",
                    "--release",
                    "-p",
                    "stagehost",
                    "--example",
                    "native_loop",
                ])
                .current_dir(&programs.root)
                .status()
                .with_context(|| format!("running {cargo}"))?;
            ensure!(
                built.success() && programs.native.exists(),
                "building the native loop failed; run `cargo build --release -p stagehost --example native_loop`"
            );
        }
        if wants(Contender::Python) && !programs.python_ready() {
            let setup = programs.root.join("scripts/bench/setup-python.sh");
            eprintln!("e2e: {}", setup.display());
            let status = Command::new("bash")
                .arg(&setup)
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("running {}", setup.display()))?;
            ensure!(
                status.success() && programs.python_ready(),
                "the Python contender's venv is not ready; run `scripts/bench/setup-python.sh`"
            );
        }
        Ok(programs)
    }

    fn plugin(&self, handler: &str) -> PathBuf {
        self.root
            .join(format!("target/wasm32-wasip2/release/{handler}.wasm"))
    }

    fn python_ready(&self) -> bool {
        Command::new(&self.python)
            .args(["-c", "import confluent_kafka"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Starts `contender` on `topics`, its output in `log`.
    fn start(&self, contender: Contender, topics: &Topics, log: &Path) -> anyhow::Result<Running> {
        let mut command = match contender {
            Contender::Stagehost | Contender::StagehostPython => {
                let config = log.with_extension("yml");
                std::fs::write(&config, self.stagehost_config(contender, topics))
                    .with_context(|| format!("writing {}", config.display()))?;
                let mut command = Command::new(&self.host);
                command.arg("run").arg(config);
                command
            }
            Contender::Native => Command::new(&self.native),
            Contender::Python => {
                let mut command = Command::new(&self.python);
                command
                    .arg(self.root.join("scripts/bench/python_loop.py"))
                    .env("PYTHONUNBUFFERED", "1");
                command
            }
        };
        if !contender.is_stagehost() {
            command.args([
                &topics.brokers,
                &topics.input,
                &topics.output,
                &topics.dead_letter,
                &topics.group,
            ]);
        }
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", contender.name()))?;
        Ok(Running {
            child,
            name: contender.name(),
            log: log.to_path_buf(),
        })
    }

    /// The calculator of `config.yml` on the run's topics, admin off; for
    /// `stagehost-python`, its routes all lead to `multiply`.
    fn stagehost_config(&self, contender: Contender, topics: &Topics) -> String {
        let handlers: String = contender
            .handlers()
            .iter()
            .map(|handler| {
                format!(
                    "  {handler}:\n    path: {}\n    watch: false\n",
                    self.plugin(handler).display()
                )
            })
            .collect();
        let routes = match contender.computes() {
            Computes::Calculator => {
                "sum: add\n        add: add\n        sub: subtract\n        subtract: subtract"
            }
            Computes::Product => "sum: multiply\n        sub: multiply",
        };
        format!(
            "kafka:\n  brokers: {brokers}\n  group: {group}\n  topics:\n    create: false\n\
             admin:\n  enabled: false\n\
             handlers:\n{handlers}\
             stages:\n  - name: calculator\n    input: {input}\n    output: {output}\n    dead_letter: {dead_letter}\n    \
             route:\n      field: operation\n      to:\n        {routes}\n",
            brokers = topics.brokers,
            group = topics.group,
            input = topics.input,
            output = topics.output,
            dead_letter = topics.dead_letter,
        )
    }
}

/// A contender's process; killed if the bench fails while it runs.
struct Running {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Running {
    /// Fails, with the end of its log, if the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}){}", self.name, self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("; the end of {}:\n{tail}", self.log.display())
    }

    /// (peak RSS in MiB, CPU seconds) so far.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmHWM:"))
                    .and_then(|rest| {
                        rest.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
            })
            .unwrap_or(f64::NAN);
        let cpu_ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command name: utime and stime are the 12th and 13th.
                let rest = &stat[stat.rfind(')')? + 1..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
            })
            .unwrap_or(f64::NAN);
        (rss_kib / 1024.0, cpu_ticks / CLOCK_TICKS)
    }

    /// SIGTERM, then waits for a clean exit (the contender drains and commits).
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(
            sent.success(),
            "could not send SIGTERM to {} (pid {pid})",
            self.name
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not exit within 60 s of SIGTERM{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(
            status.success(),
            "{} exited with {status} after SIGTERM{}",
            self.name,
            self.log_tail()
        );
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fresh topics and group for one run.
struct Topics {
    brokers: String,
    input: String,
    output: String,
    dead_letter: String,
    group: String,
}

impl Topics {
    fn fresh(brokers: &str, contender: Contender, phase: &str) -> Self {
        let run = format!(
            "e2e-{}-{phase}-{}",
            contender.name(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self {
            brokers: brokers.to_string(),
            input: format!("{run}-in"),
            output: format!("{run}-out"),
            dead_letter: format!("{run}-dlq"),
            group: run,
        }
    }

    fn all(&self) -> [&str; 3] {
        [&self.input, &self.output, &self.dead_letter]
    }

    /// The consumer group `contender` commits its input offsets in.
    fn input_group(&self, contender: Contender) -> String {
        match contender {
            // `<kafka.group>.<stage>`, as the generated config says.
            Contender::Stagehost | Contender::StagehostPython => {
                format!("{}.calculator", self.group)
            }
            Contender::Native | Contender::Python => self.group.clone(),
        }
    }
}

/// Fails unless `group` committed the end of every input partition: a
/// contender stopped with SIGTERM after taking every input must have
/// committed them all, so that a restart repeats nothing.
fn check_committed(topics: &Topics, group: &str, partitions: i32) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &topics.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(&topics.input, partition);
    }
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    for partition in 0..partitions {
        let (_, high) =
            consumer.fetch_watermarks(&topics.input, partition, Duration::from_secs(10))?;
        let offset = committed
            .find_partition(&topics.input, partition)
            .map(|entry| entry.offset());
        ensure!(
            offset == Some(Offset::Offset(high)) || (high == 0 && offset == Some(Offset::Invalid)),
            "group {group} committed {offset:?} for partition {partition} of {}, whose end is {high}",
            topics.input
        );
    }
    Ok(())
}

struct Admin {
    client: AdminClient<DefaultClientContext>,
}

impl Admin {
    fn connect(brokers: &str) -> anyhow::Result<Self> {
        let client: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        client
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .with_context(|| {
                format!("no Kafka broker answers on {brokers}; start one with `make kafka-up`")
            })?;
        Ok(Self { client })
    }

    fn create(&self, topics: &Topics, partitions: i32) -> anyhow::Result<()> {
        let new: Vec<NewTopic<'_>> = topics
            .all()
            .iter()
            .map(|topic| {
                let count = if *topic == topics.dead_letter {
                    1
                } else {
                    partitions
                };
                // The broker stamps each output as it is appended: the
                // throughput clock, whatever the reader's own delay.
                NewTopic::new(topic, count, TopicReplication::Fixed(1))
                    .set("message.timestamp.type", "LogAppendTime")
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in futures::executor::block_on(self.client.create_topics(&new, &options))? {
            result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
        }
        Ok(())
    }

    fn delete(&self, topics: &Topics) {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        if let Err(err) =
            futures::executor::block_on(self.client.delete_topics(&topics.all(), &options))
        {
            eprintln!("e2e: deleting the topics of {} failed: {err}", topics.group);
        }
    }
}

/// The tutorial's requests, numbered, padded to about `SIZE` bytes.
struct Requests {
    pad: String,
}

impl Requests {
    fn new(size: usize, timed: bool) -> Self {
        let sample = Self { pad: String::new() };
        let typical = sample.request(123_456, timed.then_some(1_700_000_000_000_000));
        let pad = size.saturating_sub(typical.len());
        Self {
            pad: "x".repeat(pad),
        }
    }

    /// The operation and operands of request `id`: varied, three sums to a
    /// difference, with negative numbers too.
    fn operands(id: u64) -> (&'static str, i64, i64) {
        let first = (id.wrapping_mul(7919) % 2_000_001) as i64 - 1_000_000;
        let second = (id % 1000) as i64;
        (if id % 4 == 3 { "sub" } else { "sum" }, first, second)
    }

    fn expected(id: u64, computes: Computes) -> i64 {
        match (computes, Self::operands(id)) {
            (Computes::Product, (_, first, second)) => first * second,
            (Computes::Calculator, ("sub", first, second)) => first - second,
            (Computes::Calculator, (_, first, second)) => first + second,
        }
    }

    fn request(&self, id: u64, sent_us: Option<u64>) -> String {
        let (operation, first, second) = Self::operands(id);
        let sent = sent_us
            .map(|us| format!(r#","sent_us":{us}"#))
            .unwrap_or_default();
        format!(
            r#"{{"operation":"{operation}","operator_1":"{first}","operator_2":"{second}","id":{id}{sent},"pad":"{}"}}"#,
            self.pad
        )
    }
}

/// Counts the deliveries the brokers refused.
#[derive(Default)]
struct Refusals(AtomicU64);

impl ClientContext for Refusals {}

impl ProducerContext for Refusals {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn request_producer(brokers: &str, linger_ms: &str) -> anyhow::Result<BaseProducer<Refusals>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .create_with_context(Refusals::default())?)
}

/// Enqueues one request, serving delivery reports while the queue is full.
fn send(producer: &BaseProducer<Refusals>, topic: &str, payload: &str) {
    let mut record = BaseRecord::<(), str>::to(topic).payload(payload);
    while let Err((_, back)) = producer.send(record) {
        record = back;
        producer.poll(Duration::from_millis(5));
    }
}

fn flush(producer: &BaseProducer<Refusals>) -> anyhow::Result<()> {
    producer.flush(Duration::from_secs(120))?;
    let refused = producer.context().0.load(Ordering::Relaxed);
    ensure!(refused == 0, "the broker refused {refused} requests");
    Ok(())
}

/// Loads `count` requests as fast as the broker takes them.
fn preload(brokers: &str, topic: &str, size: usize, count: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let producer = request_producer(brokers, "20")?;
    let requests = Requests::new(size, false);
    for id in 0..count {
        send(&producer, topic, &requests.request(id, None));
    }
    flush(&producer)?;
    Ok(started.elapsed())
}

/// A reader of every partition of `topic` from its beginning.
fn reader(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The number after `"field":` in a compact JSON object, found without
/// parsing the whole object (the readers share the cores with the contender).
fn number_field(payload: &[u8], field: &str) -> Option<u64> {
    let pattern = format!("\"{field}\":");
    let at = payload
        .windows(pattern.len())
        .position(|window| window == pattern.as_bytes())?
        + pattern.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// What a check of a run's output topic found.
struct Checked {
    duplicates: u64,
}

/// Reads the whole output topic and checks every output: a known id, the
/// right result, the request echoed, and each of the `count` ids present.
/// Warm-up outputs are checked too, not counted. Fails when the dead-letter
/// topic holds anything.
fn check_outputs(
    topics: &Topics,
    computes: Computes,
    partitions: i32,
    size: usize,
    count: u64,
    timed: bool,
) -> anyhow::Result<Checked> {
    let consumer = reader(&topics.brokers, &topics.dead_letter, 1)?;
    let (low, high) = consumer.fetch_watermarks(&topics.dead_letter, 0, Duration::from_secs(10))?;
    if high > low {
        let mut why = String::new();
        if let Some(Ok(letter)) = consumer.poll(Duration::from_secs(10)) {
            for header in letter.headers().iter().flat_map(|headers| headers.iter()) {
                if header.key.ends_with("error-kind") || header.key.ends_with("error-reason") {
                    let value = String::from_utf8_lossy(header.value.unwrap_or_default());
                    why.push_str(&format!(" {}={value}", header.key));
                }
            }
        }
        bail!(
            "{} dead letters in {} (the first:{why})",
            high - low,
            topics.dead_letter
        );
    }

    let consumer = reader(&topics.brokers, &topics.output, partitions)?;
    let mut total = 0;
    for partition in 0..partitions {
        let (low, high) =
            consumer.fetch_watermarks(&topics.output, partition, Duration::from_secs(10))?;
        total += high - low;
    }
    let pad_len = Requests::new(size, timed).pad.len();
    let mut seen = vec![false; usize::try_from(count)?];
    let (mut read, mut duplicates) = (0, 0);
    let mut last_read = Instant::now();
    while read < total {
        ensure!(
            last_read.elapsed() < STALL,
            "checking {}: read only {read} of {total} records",
            topics.output
        );
        let Some(received) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let payload = received?.payload().unwrap_or_default().to_vec();
        read += 1;
        last_read = Instant::now();
        let text = String::from_utf8_lossy(&payload);
        let value: serde_json::Value = serde_json::from_slice(&payload)
            .with_context(|| format!("an output is not JSON: {text}"))?;
        let id = value["id"]
            .as_u64()
            .with_context(|| format!("an output has no id: {text}"))?;
        let (operation, first, second) = Requests::operands(id);
        ensure!(
            value["result"].as_i64() == Some(Requests::expected(id, computes))
                && value["operation"] == operation
                && value["operator_1"].as_str().and_then(|n| n.parse().ok()) == Some(first)
                && value["operator_2"].as_str().and_then(|n| n.parse().ok()) == Some(second)
                && value["pad"].as_str().map(str::len) == Some(pad_len)
                && value.get("sent_us").is_some() == timed,
            "wrong output for request {id} (expected result {}): {text}",
            Requests::expected(id, computes)
        );
        if id >= WARMUP_ID {
            continue;
        }
        let slot = seen
            .get_mut(id as usize)
            .with_context(|| format!("an output for request {id}, which was never sent: {text}"))?;
        if std::mem::replace(slot, true) {
            duplicates += 1;
        }
    }
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, seen)| !**seen)
        .map(|(id, _)| id)
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {count} requests have no output in {} (the first missing: {:?})",
        missing.len(),
        topics.output,
        &missing[..missing.len().min(10)]
    );
    Ok(Checked { duplicates })
}

/// One contender's throughput run.
struct Throughput {
    /// From the first output to the last.
    steady: f64,
    /// From the process start to the last output.
    whole: f64,
    first_output: Duration,
    last_output: Duration,
    preload: Duration,
    cpu_us_per_message: f64,
    peak_rss_mib: f64,
    duplicates: u64,
    load: String,
}

fn throughput(
    params: &Params,
    programs: &Programs,
    admin: &Admin,
    contender: Contender,
    messages: u64,
) -> anyhow::Result<Throughput> {
    let name = contender.name();
    let topics = Topics::fresh(&params.brokers, contender, "rate");
    admin.create(&topics, params.partitions)?;
    eprintln!(
        "e2e: {name}: preloading {} requests into {}",
        messages, topics.input
    );
    let preloaded = preload(&params.brokers, &topics.input, params.size, messages)?;
    let consumer = reader(&params.brokers, &topics.output, params.partitions)?;
    let _ = consumer.poll(Duration::from_millis(100));

    eprintln!(
        "e2e: {name}: preloaded in {:.1} s; starting it",
        preloaded.as_secs_f64()
    );
    let log = programs.logs.join(format!("{name}-throughput.log"));
    let started = Instant::now();
    let started_ms = (now_us() / 1000) as i64;
    let mut running = programs.start(contender, &topics, &log)?;
    let (mut seen, mut first, mut progress) = (0u64, None, Instant::now());
    let (mut first_ms, mut last_ms) = (i64::MAX, i64::MIN);
    let mut checked_at = Instant::now();
    while seen < messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(output)) => {
                seen += 1;
                progress = Instant::now();
                first.get_or_insert(progress);
                let appended = output
                    .timestamp()
                    .to_millis()
                    .context("an output without a timestamp")?;
                first_ms = first_ms.min(appended);
                last_ms = last_ms.max(appended);
            }
            Some(Err(err)) => eprintln!("e2e: {name}: reader error: {err}"),
            None => {}
        }
        if checked_at.elapsed() > Duration::from_millis(500) {
            checked_at = Instant::now();
            running.check_alive()?;
            let limit = if first.is_some() {
                STALL
            } else {
                START_TIMEOUT
            };
            ensure!(
                progress.elapsed() < limit,
                "{name}: only {seen} of {} outputs after {:.0} s (no new output for {:.0} s){}",
                messages,
                started.elapsed().as_secs_f64(),
                progress.elapsed().as_secs_f64(),
                running.log_tail()
            );
        }
    }
    let (peak_rss_mib, cpu_seconds) = running.usage();
    let load = load_average();
    running.stop()?;
    check_committed(&topics, &topics.input_group(contender), params.partitions)?;
    let checked = check_outputs(
        &topics,
        contender.computes(),
        params.partitions,
        params.size,
        messages,
        false,
    )?;
    admin.delete(&topics);

    let count = messages as f64;
    let since_start = |ms: i64| Duration::from_millis((ms - started_ms).max(0) as u64);
    let result = Throughput {
        // Append times have millisecond resolution: at least 1 ms.
        steady: (count - 1.0).max(1.0) / ((last_ms - first_ms).max(1) as f64 / 1e3),
        whole: count / since_start(last_ms).as_secs_f64().max(1e-3),
        first_output: since_start(first_ms),
        last_output: since_start(last_ms),
        preload: preloaded,
        cpu_us_per_message: cpu_seconds * 1e6 / count,
        peak_rss_mib,
        duplicates: checked.duplicates,
        load,
    };
    eprintln!(
        "e2e: {name}: {:.0} msg/s first to last output, {:.0} msg/s from start (first output after {:.2} s), all {} outputs checked",
        result.steady,
        result.whole,
        result.first_output.as_secs_f64(),
        messages
    );
    Ok(result)
}

/// One contender's latency run.
struct Latency {
    rate: f64,
    samples: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    peak_rss_mib: f64,
    load: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as u64
}

/// What the latency run's reader thread shares.
#[derive(Default)]
struct Progress {
    warm: AtomicBool,
    /// Distinct measured requests with an output.
    answered: AtomicU64,
    stop: AtomicBool,
}

/// Reads outputs until told to stop; returns each measured request's
/// latency in microseconds (the first output of each).
fn latency_reader(consumer: BaseConsumer, progress: Arc<Progress>) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    let mut seen: Vec<bool> = Vec::new();
    while !progress.stop.load(Ordering::Relaxed) {
        let Some(received) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let received = received?;
        let arrived = now_us();
        let payload = received.payload().unwrap_or_default();
        let (Some(id), Some(sent)) = (
            number_field(payload, "id"),
            number_field(payload, "sent_us"),
        ) else {
            bail!(
                "an output without id or sent_us: {}",
                String::from_utf8_lossy(payload)
            );
        };
        if id >= WARMUP_ID {
            progress.warm.store(true, Ordering::Relaxed);
            continue;
        }
        let id = id as usize;
        if seen.len() <= id {
            seen.resize(id + 1, false);
        }
        if !std::mem::replace(&mut seen[id], true) {
            latencies.push(arrived.saturating_sub(sent));
            progress.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(latencies)
}

fn latency(
    params: &Params,
    programs: &Programs,
    admin: &Admin,
    contender: Contender,
    rate: f64,
) -> anyhow::Result<Latency> {
    let name = contender.name();
    let topics = Topics::fresh(&params.brokers, contender, "latency");
    admin.create(&topics, params.partitions)?;
    let progress = Arc::new(Progress::default());
    let consumer = reader(&params.brokers, &topics.output, params.partitions)?;
    let reading = {
        let progress = progress.clone();
        std::thread::spawn(move || latency_reader(consumer, progress))
    };
    let outcome = (|| {
        let log = programs.logs.join(format!("{name}-latency.log"));
        let mut running = programs.start(contender, &topics, &log)?;
        // A 1 ms linger: the requests leave about when they are stamped.
        let producer = request_producer(&params.brokers, "1")?;
        let requests = Requests::new(params.size, true);

        eprintln!("e2e: {name}: warming up");
        let started = Instant::now();
        let mut warmup = WARMUP_ID;
        while !progress.warm.load(Ordering::Relaxed) {
            running.check_alive()?;
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "{name}: no output for a warm-up request within {} s{}",
                START_TIMEOUT.as_secs(),
                running.log_tail()
            );
            send(
                &producer,
                &topics.input,
                &requests.request(warmup, Some(now_us())),
            );
            producer.poll(Duration::ZERO);
            warmup += 1;
            std::thread::sleep(Duration::from_millis(200));
        }

        eprintln!(
            "e2e: {name}: {rate:.0} msg/s for {} s",
            params.latency_seconds
        );
        let window = Duration::from_secs(params.latency_seconds);
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < window {
            let due = (rate * started.elapsed().as_secs_f64()) as u64;
            while sent < due {
                send(
                    &producer,
                    &topics.input,
                    &requests.request(sent, Some(now_us())),
                );
                sent += 1;
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(1));
        }
        let achieved = sent as f64 / started.elapsed().as_secs_f64();
        flush(&producer)?;

        let (mut answered, mut at) = (0, Instant::now());
        while answered < sent {
            running.check_alive()?;
            // The reader stopped on a bad output: its error says which.
            if reading.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            let now = progress.answered.load(Ordering::Relaxed);
            if now > answered {
                (answered, at) = (now, Instant::now());
            }
            ensure!(
                at.elapsed() < STALL,
                "{name}: only {answered} of {sent} outputs, none new for {} s{}",
                STALL.as_secs(),
                running.log_tail()
            );
        }
        let (peak_rss_mib, _) = running.usage();
        let load = load_average();
        running.stop()?;
        check_outputs(
            &topics,
            contender.computes(),
            params.partitions,
            params.size,
            sent,
            true,
        )?;
        anyhow::Ok((achieved, peak_rss_mib, load))
    })();
    progress.stop.store(true, Ordering::Relaxed);
    let mut latencies = reading.join().expect("the reader thread does not panic")?;
    let (rate, peak_rss_mib, load) = outcome?;
    admin.delete(&topics);
    ensure!(!latencies.is_empty(), "{name}: no latency measured");
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index =
            ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_micros(latencies[index])
    };
    let result = Latency {
        rate,
        samples: latencies.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        peak_rss_mib,
        load,
    };
    eprintln!(
        "e2e: {name}: latency at {:.0} msg/s: p50 {}, p99 {}, max {} ({} outputs checked)",
        result.rate,
        millis(result.p50),
        millis(result.p99),
        millis(result.max),
        result.samples
    );
    Ok(result)
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_string();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({model}), {memory_gib:.1} GiB memory")
}

fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// `1234567.8` → `1,234,568`.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    let admin = Admin::connect(&params.brokers)?;
    let programs = Programs::prepare(&params)?;
    let load_at_start = load_average();
    if params.warmup_messages > 0 {
        for &contender in &params.contenders {
            eprintln!("e2e: {}: warm-up run (not counted)", contender.name());
            throughput(
                &params,
                &programs,
                &admin,
                contender,
                params.warmup_messages,
            )?;
        }
    }
    // Rounds in alternation, each starting with the next contender, so that
    // none always runs first or last.
    let count = params.contenders.len();
    let mut runs: Vec<Vec<Throughput>> = params.contenders.iter().map(|_| Vec::new()).collect();
    for round in 0..params.rounds as usize {
        for turn in 0..count {
            let index = (round + turn) % count;
            let contender = params.contenders[index];
            eprintln!(
                "e2e: round {} of {}: {}",
                round + 1,
                params.rounds,
                contender.name()
            );
            runs[index].push(throughput(
                &params,
                &programs,
                &admin,
                contender,
                params.messages,
            )?);
        }
    }
    let mut rows = Vec::new();
    for (&contender, mut rates) in params.contenders.iter().zip(runs) {
        rates.sort_by(|a, b| a.steady.total_cmp(&b.steady));
        let each: Vec<String> = rates.iter().map(|rate| grouped(rate.steady)).collect();
        let rate = rates.swap_remove(rates.len() / 2);
        let latency = if params.latency_seconds > 0 {
            Some(latency(
                &params,
                &programs,
                &admin,
                contender,
                params.latency_rate.unwrap_or(rate.steady / 2.0),
            )?)
        } else {
            None
        };
        rows.push((contender, rate, each, latency));
    }

    let native = rows
        .iter()
        .find(|(contender, ..)| *contender == Contender::Native)
        .map(|(_, rate, ..)| rate.steady);
    println!();
    println!("## End-to-end: Kafka → contender → Kafka");
    println!();
    println!(
        "machine: {}; broker {} on the same machine",
        machine(),
        params.brokers
    );
    println!(
        "parameters: MESSAGES={} ROUNDS={} PARTITIONS={} SIZE={} (a request is about {} bytes) LATENCY_SECONDS={} LATENCY_RATE={}",
        params.messages,
        params.rounds,
        params.partitions,
        params.size,
        Requests::new(params.size, false)
            .request(123_456, None)
            .len(),
        params.latency_seconds,
        params
            .latency_rate
            .map_or("half of each msg/s".into(), |rate| rate.to_string())
    );
    println!("load average (1 min) at the start: {load_at_start}");
    println!();
    println!(
        "| contender | msg/s | vs native | every round | msg/s from start | first output | CPU µs/msg | latency at | p50 | p99 | max | peak RSS MiB | load after |"
    );
    println!(
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for (contender, rate, each, latency) in &rows {
        let ratio = native.map_or("n/a".into(), |native| {
            format!("{:.2}", rate.steady / native)
        });
        let (at, p50, p99, max) = latency.as_ref().map_or_else(
            || {
                (
                    "–".to_string(),
                    "–".to_string(),
                    "–".to_string(),
                    "–".to_string(),
                )
            },
            |l| {
                (
                    format!("{} msg/s", grouped(l.rate)),
                    millis(l.p50),
                    millis(l.p99),
                    millis(l.max),
                )
            },
        );
        let rss = latency
            .as_ref()
            .map_or(rate.peak_rss_mib, |l| l.peak_rss_mib.max(rate.peak_rss_mib));
        let load = match latency {
            Some(l) => format!("{} / {}", rate.load, l.load),
            None => rate.load.clone(),
        };
        println!(
            "| {} | {} | {ratio} | {} | {} | {:.2} s | {:.1} | {at} | {p50} | {p99} | {max} | {rss:.0} | {load} |",
            contender.name(),
            grouped(rate.steady),
            each.join(" / "),
            grouped(rate.whole),
            rate.first_output.as_secs_f64(),
            rate.cpu_us_per_message,
        );
    }
    println!();
    println!(
        "msg/s: {} preloaded requests over the time from the first output to the last (the broker's \
         append times), the median of the rounds (every round: each run's figure, sorted; the other \
         columns come from the median run); from start: from the process start to the last output. CPU µs/msg: the \
         contender's user and system CPU time over the throughput run, start-up included, per message. \
         Latency: from send to the output read, at half the contender's msg/s, after a warm-up, over \
         every request of the window. Peak RSS: VmHWM over both runs. Load after: the 1-minute load \
         average when the throughput / latency run ended (the run itself accounts for about 2 of it).",
        params.messages
    );
    for (contender, rate, _, latency) in &rows {
        println!(
            "- {}: preload {:.1} s, last output {:.2} s after start, duplicates {}{}",
            contender.name(),
            rate.preload.as_secs_f64(),
            rate.last_output.as_secs_f64(),
            rate.duplicates,
            latency
                .as_ref()
                .map(|l| format!(", {} latency samples", l.samples))
                .unwrap_or_default()
        );
    }
    Ok(())
}
