//! The message path of one stage: consume, route, run the handler, produce
//! the outputs (or a dead-letter record), and store the input offset only
//! after everything the message produced is acknowledged.
//!
//! Each input partition has its own worker task, so partitions run in
//! parallel while one partition's outputs are produced in input order. A
//! worker keeps one reusable instance per handler and replaces it when the
//! registry holds a newer version or the instance trapped.
//!
//! In exactly-once mode a stage runs one transactional loop instead (see
//! [`transactional`]).

use crate::bindings::{HeaderRef, MessageRef, Output};
use crate::config::{Limits, RetryConfig, StageConfig, is_internal_topic};
use crate::dead_letter::{self, DeadLetter, RawHeader, Source};
use crate::kafka::HostProducer;
use crate::metrics::{HandlerMetrics, LagContext, StageMetrics};
use crate::registry::SharedRegistry;
use crate::sandbox::{HandlerFailure, HandlerInstance};
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod transactional;

/// Messages queued per partition worker before the consumer waits.
const PARTITION_QUEUE: usize = 512;
/// Messages whose outputs may be awaiting acknowledgement per partition.
const MAX_IN_FLIGHT: usize = 2048;
/// Longest pause between attempts to deliver a record that must not be lost.
const MAX_DELIVERY_BACKOFF: Duration = Duration::from_secs(5);

/// One running stage.
pub struct Stage {
    config: StageConfig,
    /// Where the handlers may write, and how much.
    outputs: OutputRules,
    registry: SharedRegistry,
    producer: HostProducer,
    consumer: StreamConsumer<LagContext>,
    metrics: StageMetrics,
    drain_timeout: Duration,
    /// Exactly-once mode: how often the open transaction is committed.
    transaction_interval: Option<Duration>,
    /// Cancelled when the drain timeout passes: undeliverable records are
    /// then left uncommitted (to be consumed again) instead of retried.
    give_up: CancellationToken,
    /// `parallelism`: permits for handling a message, shared by the
    /// stage's partition workers; `None` lets every partition run at once.
    permits: Option<Arc<Semaphore>>,
}

/// A record to produce.
pub(crate) struct Record {
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: OwnedHeaders,
}

/// Where a stage's handlers may write, and how much one message may make.
#[derive(Debug, Clone)]
pub(crate) struct OutputRules {
    /// The stage's `output`: where an output without a topic goes.
    pub(crate) default_topic: String,
    /// Branch name -> topic.
    pub(crate) branches: BTreeMap<String, String>,
    /// Every topic a handler may name: the output, the branches' topics and
    /// the stage's `allowed_topics`.
    pub(crate) writable: BTreeSet<String>,
    /// The producer's `message.max.bytes`: a larger record is refused here
    /// rather than sent to fail.
    pub(crate) max_record_bytes: u64,
}

/// librdkafka's default `message.max.bytes`.
pub(crate) const DEFAULT_MAX_RECORD_BYTES: u64 = 1_000_000;

impl OutputRules {
    /// The rules of `stage`, for a producer whose `message.max.bytes` is
    /// `max_record_bytes`.
    pub(crate) fn of(stage: &StageConfig, max_record_bytes: u64) -> Self {
        let mut writable: BTreeSet<String> = stage.allowed_topics.iter().cloned().collect();
        writable.insert(stage.output.clone());
        writable.extend(stage.branches.values().cloned());
        Self {
            default_topic: stage.output.clone(),
            branches: stage.branches.clone(),
            writable,
            max_record_bytes,
        }
    }

    /// The topic an output goes to, or why it may not go anywhere.
    fn topic(&self, named: Option<String>) -> Result<String, OutputError> {
        let Some(named) = named else {
            return Ok(self.default_topic.clone());
        };
        if let Some(branch) = self.branches.get(&named) {
            return Ok(branch.clone());
        }
        if is_internal_topic(&named) {
            return Err(OutputError::ForbiddenTopic(format!(
                "the handler named the internal Kafka topic `{}`",
                printable_name(&named)
            )));
        }
        if self.writable.contains(&named) {
            return Ok(named);
        }
        Err(OutputError::ForbiddenTopic(format!(
            "the handler named topic `{}`, which this stage may not write to (it may write to: {}; \
             list more in the stage's `allowed_topics`)",
            printable_name(&named),
            self.writable.iter().cloned().collect::<Vec<_>>().join(", ")
        )))
    }
}

/// A topic name a handler chose, cut and made printable for a reason.
fn printable_name(name: &str) -> String {
    let mut shown: String = name
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().count() > 100 {
        shown.push('…');
    }
    shown
}

/// Why a handler's outputs were refused; the whole message is dead-lettered
/// and none of its outputs is produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OutputError {
    /// An output named a topic the stage may not write to.
    #[error("{0}")]
    ForbiddenTopic(String),
    /// Too many outputs, too many bytes, or a record too large for Kafka.
    #[error("{0}")]
    Invalid(String),
}

impl OutputError {
    /// The dead-letter kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            OutputError::ForbiddenTopic(_) => "forbidden-topic",
            OutputError::Invalid(_) => "invalid-output",
        }
    }
}

/// Headers the host sets on every output; a handler's own of these names
/// are replaced.
const HOST_OUTPUT_HEADERS: [&str; 2] = [dead_letter::HANDLER, dead_letter::HANDLER_VERSION];

/// What librdkafka counts of a record against `message.max.bytes`, at most:
/// its key, value and headers with their length prefixes, plus the record
/// overhead.
fn record_size(key: Option<&[u8]>, value: &[u8], headers: &[crate::bindings::Header]) -> u64 {
    const RECORD_OVERHEAD: u64 = 64;
    const HEADER_OVERHEAD: u64 = 10;
    let headers: u64 = headers
        .iter()
        .map(|h| HEADER_OVERHEAD + h.key.len() as u64 + h.value.len() as u64)
        .sum();
    RECORD_OVERHEAD + key.map_or(0, <[u8]>::len) as u64 + value.len() as u64 + headers
}

/// The records a handler's outputs become: to the stage's output, or to the
/// output's topic (a branch name is replaced by its topic), keyed by the
/// output's key or the input's, with the handler and version headers
/// added. The handler's limits and the stage's rules are checked for all
/// outputs before any record is made: one refused output refuses them all.
pub(crate) fn output_records(
    outputs: Vec<Output>,
    rules: &OutputRules,
    limits: &Limits,
    input_key: Option<&[u8]>,
    handler: &str,
    version: &str,
) -> Result<Vec<Record>, OutputError> {
    if outputs.len() as u64 > u64::from(limits.max_outputs) {
        return Err(OutputError::Invalid(format!(
            "the handler returned {} outputs for one message, more than its limits.max_outputs ({})",
            outputs.len(),
            limits.max_outputs
        )));
    }
    let mut total: u64 = 0;
    let mut topics = Vec::with_capacity(outputs.len());
    for (index, output) in outputs.iter().enumerate() {
        topics.push(rules.topic(output.topic.clone())?);
        let key = output.key.as_deref().or(input_key);
        let size = record_size(key, &output.value, &output.headers);
        if size > rules.max_record_bytes {
            return Err(OutputError::Invalid(format!(
                "output {} is about {size} bytes, more than the producer's message.max.bytes ({})",
                index + 1,
                rules.max_record_bytes
            )));
        }
        total += size;
        if total > limits.max_output_bytes {
            return Err(OutputError::Invalid(format!(
                "the handler's outputs for one message add up to more than its limits.max_output_bytes ({} bytes)",
                limits.max_output_bytes
            )));
        }
    }
    Ok(outputs
        .into_iter()
        .zip(topics)
        .map(|(output, topic)| {
            let mut headers = OwnedHeaders::new_with_capacity(output.headers.len() + 2);
            for header in &output.headers {
                if HOST_OUTPUT_HEADERS.contains(&header.key.as_str()) {
                    continue;
                }
                headers = headers.insert(Header {
                    key: &header.key,
                    value: Some(&header.value),
                });
            }
            headers = headers
                .insert(Header {
                    key: dead_letter::HANDLER,
                    value: Some(handler),
                })
                .insert(Header {
                    key: dead_letter::HANDLER_VERSION,
                    value: Some(version),
                });
            Record {
                topic,
                key: output.key.or_else(|| input_key.map(<[u8]>::to_vec)),
                value: Some(output.value),
                headers,
            }
        })
        .collect())
}

/// A message whose records were handed to the producer.
struct Pending {
    message: OwnedMessage,
    /// One per record, in the order they were sent.
    deliveries: Vec<Delivery>,
    /// The message's dead letter, when that is what was sent.
    letter: Option<Record>,
}

/// One record's way to the brokers.
enum Delivery {
    /// Waiting for the brokers' answer.
    Sent(DeliveryFuture),
    /// Acknowledged, or refused with the reason.
    Done(Result<(), String>),
}

impl From<Result<DeliveryFuture, KafkaError>> for Delivery {
    fn from(sent: Result<DeliveryFuture, KafkaError>) -> Self {
        match sent {
            Ok(future) => Delivery::Sent(future),
            Err(err) => Delivery::Done(Err(err.to_string())),
        }
    }
}

/// Resolves once every record of `pending` is acknowledged or refused. It
/// can be dropped and called again: what was answered is kept.
async fn acknowledged(pending: Option<&mut Pending>) {
    let Some(pending) = pending else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| {
        for delivery in &mut pending.deliveries {
            if let Delivery::Sent(future) = delivery {
                let answer = std::task::ready!(std::pin::Pin::new(future).poll(cx));
                *delivery = Delivery::Done(match answer {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((err, _))) => Err(err.to_string()),
                    Err(_) => Err("the producer closed before acknowledging".to_string()),
                });
            }
        }
        std::task::Poll::Ready(())
    })
    .await
}

/// A partition worker's handlers: per handler its reusable instance and
/// its metric series, kept from message to message.
#[derive(Default)]
pub(crate) struct WorkerHandlers {
    /// Few per stage: a list is quicker to search than a map.
    slots: Vec<(String, HandlerSlot)>,
}

pub(crate) struct HandlerSlot {
    /// `None` before the first message, and after a trap discarded it.
    instance: Option<HandlerInstance>,
    metrics: HandlerMetrics,
}

impl WorkerHandlers {
    fn slot(&mut self, handler: &str, stage: &StageMetrics) -> &mut HandlerSlot {
        let index = match self.slots.iter().position(|(name, _)| name == handler) {
            Some(index) => index,
            None => {
                let slot = HandlerSlot {
                    instance: None,
                    metrics: stage.handler_metrics(handler),
                };
                self.slots.push((handler.to_string(), slot));
                self.slots.len() - 1
            }
        };
        &mut self.slots[index].1
    }
}

impl Stage {
    /// A stage ready to run. With a `transaction_interval` the stage runs
    /// exactly-once, and `producer` must be its own transactional producer.
    pub fn new(
        config: StageConfig,
        registry: SharedRegistry,
        producer: HostProducer,
        consumer: StreamConsumer<LagContext>,
        drain_timeout: Duration,
        transaction_interval: Option<Duration>,
        max_record_bytes: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            outputs: OutputRules::of(&config, max_record_bytes),
            metrics: consumer.context().stage().clone(),
            permits: config.parallelism.map(|n| Arc::new(Semaphore::new(n))),
            config,
            registry,
            producer,
            consumer,
            drain_timeout,
            transaction_interval,
            give_up: CancellationToken::new(),
        })
    }

    /// Consumes until `shutdown` is cancelled, then drains: every message
    /// already taken is finished, its outputs delivered and its offset
    /// committed before this returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(interval) = self.transaction_interval {
            return self.run_transactional(interval, shutdown).await;
        }
        let stage = self.config.name.as_str();
        self.consumer.subscribe(&[&self.config.input])?;
        tracing::info!(
            stage,
            input = %self.config.input,
            output = %self.config.output,
            dead_letter = %self.config.dead_letter,
            "stage consuming"
        );
        let mut workers: HashMap<i32, mpsc::Sender<OwnedMessage>> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    // Workers end only when their queue closes, at the drain.
                    let cause = ended.err().map(|err| err.to_string()).unwrap_or_default();
                    anyhow::bail!("stage `{stage}`: a partition worker stopped: {cause}");
                }
                received = self.consumer.recv() => received,
            };
            let Some(message) = self.taken(received).await else {
                continue;
            };
            let partition = message.partition();
            let worker = workers.entry(partition).or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(PARTITION_QUEUE);
                tasks.spawn(self.clone().partition_worker(partition, receiver));
                sender
            });
            tokio::select! {
                biased;
                sent = worker.send(message) => {
                    if sent.is_err() {
                        anyhow::bail!("stage `{stage}`: the worker for partition {partition} stopped");
                    }
                }
                // Not handed over, so never stored: it is consumed again after a restart.
                _ = shutdown.cancelled() => break,
            }
        }

        tracing::info!(stage, "draining");
        drop(workers);
        let give_up = self.give_up.clone();
        let timeout = self.drain_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            give_up.cancel();
        });
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(stage, cause = %err, "partition worker failed");
            }
        }
        timer.abort();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => tracing::warn!(stage, cause = %err, "final offset commit failed"),
        }
        self.consumer.unsubscribe();
        tracing::info!(stage, "stage stopped");
        Ok(())
    }

    /// A received message, detached and counted. A consumer error is
    /// logged, and after a short pause the caller goes on with `None`.
    async fn taken(&self, received: KafkaResult<BorrowedMessage<'_>>) -> Option<OwnedMessage> {
        match received {
            Ok(message) => {
                self.metrics.message_in();
                Some(message.detach())
            }
            Err(err) => {
                tracing::warn!(stage = %self.config.name, cause = %err, "consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }

    async fn partition_worker(
        self: Arc<Self>,
        partition: i32,
        mut queue: mpsc::Receiver<OwnedMessage>,
    ) {
        let mut handlers = WorkerHandlers::default();
        // Messages whose records are on their way, in input order. Only the
        // oldest is awaited: its offset is the next one to store.
        let mut pending: VecDeque<Pending> = VecDeque::new();
        // Once a message could not be delivered, later offsets must not be
        // stored either: committing them would skip it.
        let mut storing = true;
        loop {
            tokio::select! {
                biased;
                () = acknowledged(pending.front_mut()), if !pending.is_empty() => {
                    let done = pending.pop_front().expect("the awaited message is pending");
                    let offset = self.settle(done).await;
                    storing = self.store(partition, offset, storing);
                }
                next = queue.recv(), if pending.len() < MAX_IN_FLIGHT => match next {
                    Some(message) => {
                        let permit = match &self.permits {
                            Some(permits) => Some(permits.acquire().await.expect("the stage's semaphore is never closed")),
                            None => None,
                        };
                        let sent = self.process(message, &mut handlers).await;
                        drop(permit);
                        pending.push_back(sent);
                    }
                    None => break,
                },
            }
        }
        while let Some(mut done) = pending.pop_front() {
            acknowledged(Some(&mut done)).await;
            let offset = self.settle(done).await;
            storing = self.store(partition, offset, storing);
        }
    }

    fn store(&self, partition: i32, done: Option<i64>, storing: bool) -> bool {
        match done {
            Some(offset) if storing => {
                if let Err(err) = self
                    .consumer
                    .store_offset(&self.config.input, partition, offset)
                {
                    // The partition was revoked: its new owner starts from the last commit.
                    tracing::debug!(stage = %self.config.name, partition, offset, cause = %err, "offset not stored");
                }
                true
            }
            _ => false,
        }
    }

    /// Runs one message and hands its records (outputs, or its dead letter)
    /// to the producer.
    async fn process(
        self: &Arc<Self>,
        message: OwnedMessage,
        handlers: &mut WorkerHandlers,
    ) -> Pending {
        let (records, is_dead_letter) = self.plan(&message, handlers).await;
        let mut deliveries = Vec::with_capacity(records.len());
        let mut letter = None;
        if is_dead_letter {
            // Kept: a refused dead letter is sent again until acknowledged.
            for record in records {
                deliveries.push(Delivery::from(self.enqueue(&record).await));
                letter = Some(record);
            }
        } else {
            for record in records {
                deliveries.push(Delivery::from(self.enqueue_owned(record).await));
            }
        }
        Pending {
            message,
            deliveries,
            letter,
        }
    }

    /// Once every record of `done` is acknowledged or refused: the offset
    /// to store, after dead-lettering the message if an output was refused
    /// (`None` when not even its dead letter could be delivered).
    async fn settle(&self, done: Pending) -> Option<i64> {
        let Pending {
            message,
            deliveries,
            letter,
        } = done;
        let failure = deliveries.into_iter().find_map(|delivery| match delivery {
            Delivery::Done(Err(reason)) => Some(reason),
            _ => None,
        });
        let Some(reason) = failure else {
            return Some(message.offset());
        };
        let letter = match letter {
            Some(letter) => letter,
            None => {
                let letter = DeadLetter {
                    kind: "produce-failed",
                    reason: format!("producing an output failed: {reason}"),
                    handler: None,
                };
                self.log_dead_letter(&message, &letter);
                self.dead_letter_record(&message, &letter)
            }
        };
        self.deliver_until_acknowledged(&letter)
            .await
            .then(|| message.offset())
    }

    /// The records a message turns into: its outputs, or its dead letter
    /// (then `true`).
    async fn plan(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
    ) -> (Vec<Record>, bool) {
        match self.run_handler(message, handlers).await {
            Ok(records) => (records, false),
            Err(letter) => {
                self.log_dead_letter(message, &letter);
                (vec![self.dead_letter_record(message, &letter)], true)
            }
        }
    }

    /// Routes the message and runs its handler, retrying transient errors.
    async fn run_handler(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
    ) -> Result<Vec<Record>, DeadLetter> {
        let registry = self.registry.load();
        let value = message.payload().unwrap_or_default();
        let route = registry
            .route(&self.config.name)
            .ok_or_else(|| DeadLetter {
                kind: "unknown-route",
                reason: format!("stage `{}` has no routes", self.config.name),
                handler: None,
            })?;
        let name = route.resolve(value).map_err(|err| DeadLetter {
            kind: err.kind(),
            reason: err.to_string(),
            handler: None,
        })?;
        let component = registry.handler(name).ok_or_else(|| DeadLetter {
            kind: "unknown-route",
            reason: format!("handler `{name}` is not loaded"),
            handler: None,
        })?;
        let identity = || Some((name.to_string(), component.version().to_string()));
        let header_texts = HeaderTexts::of(message);
        let headers = header_texts.refs();
        let input = wit_message(message, &headers);
        let RetryConfig {
            max_attempts,
            initial_backoff_ms,
            max_backoff_ms,
        } = self.config.retry;
        let mut backoff = Duration::from_millis(initial_backoff_ms);
        let mut attempt = 1;
        let slot = handlers.slot(name, &self.metrics);
        let outputs = loop {
            let instance = match &mut slot.instance {
                Some(instance) if Arc::ptr_eq(instance.component(), component) => instance,
                _ => {
                    slot.instance = None;
                    match component.instantiate().await {
                        Ok(instance) => slot.instance.insert(instance),
                        Err(failure) => {
                            self.metrics.handler_error(name, failure.kind());
                            break Err(failure);
                        }
                    }
                }
            };
            let started = Instant::now();
            let handled = instance.handle_borrowed(input).await;
            slot.metrics.call_took(started.elapsed().as_secs_f64());
            match handled {
                Ok(outputs) => break Ok(outputs),
                Err(failure) => {
                    self.metrics.handler_error(name, failure.kind());
                    if failure.poisons_instance() {
                        slot.instance = None;
                    }
                    if matches!(failure, HandlerFailure::Transient(_)) && attempt < max_attempts {
                        tracing::debug!(stage = %self.config.name, handler = name, attempt, cause = %failure, "transient error; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(max_backoff_ms));
                        attempt += 1;
                        continue;
                    }
                    break Err(failure);
                }
            }
        };
        let letter = match outputs {
            Ok(outputs) => match output_records(
                outputs,
                &self.outputs,
                &component.limits(),
                message.key(),
                name,
                component.version(),
            ) {
                Ok(records) => {
                    slot.metrics.outputs(records.len() as u64);
                    return Ok(records);
                }
                Err(refused) => DeadLetter {
                    kind: refused.kind(),
                    reason: refused.to_string(),
                    handler: identity(),
                },
            },
            Err(failure) => {
                let mut reason = failure.to_string();
                if matches!(failure, HandlerFailure::Transient(_)) {
                    reason = format!("{reason} (gave up after {attempt} attempts)");
                }
                DeadLetter {
                    kind: failure.kind(),
                    reason,
                    handler: identity(),
                }
            }
        };
        Err(letter)
    }

    fn dead_letter_record(&self, message: &OwnedMessage, letter: &DeadLetter) -> Record {
        let source = Source {
            stage: &self.config.name,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        Record {
            topic: self.config.dead_letter.clone(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: dead_letter::dead_letter_headers(message.headers(), letter, source),
        }
    }

    fn log_dead_letter(&self, message: &OwnedMessage, letter: &DeadLetter) {
        self.metrics.dead_lettered(letter.kind);
        tracing::warn!(
            stage = %self.config.name,
            kind = letter.kind,
            reason = %letter.reason_line(),
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            handler = letter.handler.as_ref().map(|(name, _)| name.as_str()),
            "message dead-lettered"
        );
    }

    /// Hands a copy of a record to the producer, waiting while its queue is
    /// full.
    async fn enqueue(&self, record: &Record) -> Result<DeliveryFuture, KafkaError> {
        let headers = record.headers.clone();
        self.send(future_record(
            &record.topic,
            &record.key,
            &record.value,
            headers,
        ))
        .await
    }

    /// Hands a record to the producer, its headers moved rather than copied.
    async fn enqueue_owned(&self, record: Record) -> Result<DeliveryFuture, KafkaError> {
        let Record {
            topic,
            key,
            value,
            headers,
        } = record;
        self.send(future_record(&topic, &key, &value, headers))
            .await
    }

    /// Sends a record, waiting while the producer's queue is full.
    async fn send(
        &self,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// Delivers a record that must not be lost, retrying with backoff until
    /// it is acknowledged. Returns false only when the drain timeout passed.
    async fn deliver_until_acknowledged(&self, record: &Record) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = match self.enqueue(record).await {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => return true,
                    Ok(Err((err, _))) => err.to_string(),
                    Err(_) => "the producer closed before acknowledging".to_string(),
                },
                Err(err) => err.to_string(),
            };
            tracing::error!(stage = %self.config.name, topic = %record.topic, cause = %outcome, "delivery failed; retrying");
            tokio::select! {
                _ = self.give_up.cancelled() => {
                    tracing::error!(stage = %self.config.name, topic = %record.topic, "gave up at shutdown; the input stays uncommitted");
                    return false;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_DELIVERY_BACKOFF);
        }
    }
}

/// The producer's view of a [`Record`]'s parts.
fn future_record<'a>(
    topic: &'a str,
    key: &'a Option<Vec<u8>>,
    value: &'a Option<Vec<u8>>,
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = key {
        record = record.key(key.as_slice());
    }
    if let Some(value) = value {
        record = record.payload(value.as_slice());
    }
    record
}

/// A consumed record's headers as the handler sees them: keys as text,
/// each invalid UTF-8 sequence replaced, since any producer may send a key
/// that is not UTF-8. Empty (and allocating nothing) for a record without
/// headers.
struct HeaderTexts<'a> {
    raw: Vec<RawHeader<'a>>,
    keys: Vec<Cow<'a, str>>,
}

impl<'a> HeaderTexts<'a> {
    fn of(message: &'a OwnedMessage) -> Self {
        let raw = message
            .headers()
            .map(dead_letter::raw_headers)
            .unwrap_or_default();
        let keys = raw.iter().map(RawHeader::key_text).collect();
        Self { raw, keys }
    }

    fn refs(&self) -> Vec<HeaderRef<'_>> {
        self.keys
            .iter()
            .zip(&self.raw)
            .map(|(key, header)| HeaderRef {
                key,
                value: header.value.unwrap_or_default(),
            })
            .collect()
    }
}

/// The message as the handler sees it, borrowed from the consumed record.
fn wit_message<'a>(message: &'a OwnedMessage, headers: &'a [HeaderRef<'a>]) -> MessageRef<'a> {
    MessageRef {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        value: message.payload().unwrap_or_default(),
        headers,
        timestamp: message.timestamp().to_millis(),
    }
}
