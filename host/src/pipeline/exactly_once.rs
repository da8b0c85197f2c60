//! Exactly-once mode (`kafka.delivery: exactly-once`): each stage consumes,
//! runs its handlers and produces inside Kafka transactions, and sends the
//! input offsets to the same transaction, so a message's outputs (or its
//! dead letter) and its offset are committed together or not at all.
//!
//! The stage runs one loop: it takes what the consumer has already fetched
//! (up to a few `max_batch`es), plans each partition's messages in batches
//! on tasks of their own, so partitions run side by side, then hands the
//! records to its transactional producer in order and notes the offsets. A
//! stateful stage takes one message at a time, since a partition may need
//! its state caught up before its next message. Every
//! `kafka.transactions.commit_interval_ms` (or after
//! [`MAX_TRANSACTION_MESSAGES`]) it waits for the outputs, sends the
//! offsets and commits; meanwhile the messages the consumer holds
//! are planned, to begin the next transaction once the commit is done.
//! When a commit fails, the transaction is aborted and every partition it
//! touched is rewound to where the transaction began, so the same messages
//! are taken again. A message whose output the broker refused
//! for good (too large, say) is dead-lettered as `produce-failed` when taken
//! again, so it cannot block its partition.
//!
//! Fencing: each stage's `transactional.id` is stable across restarts of
//! the host (see `kafka.transactions.id`); the restarted host's
//! `init_transactions` aborts whatever the crashed one left open. A
//! rebalance is covered by the consumer group metadata sent with the
//! offsets: a commit from a member that lost its partitions is refused.

use super::delivery::{Backoff, delivery_error};
use super::outputs::Record;
use super::step::{Plan, WorkerHandlers};
use super::{Stage, by_partition, ready_now};
use crate::config::Transactions;
use crate::kafka::HostProducer;
use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most messages in one transaction, so a commit is never far away.
pub const MAX_TRANSACTION_MESSAGES: usize = 20_000;
/// How long one transaction call to the broker may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a commit that fails with a retriable error before aborting.
const COMMIT_ATTEMPTS: u32 = 3;
/// Pause between those attempts.
const COMMIT_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What the open transaction holds.
#[derive(Default)]
struct OpenTransaction {
    /// Per partition, the offset of the first message taken: where to
    /// rewind to when the transaction is aborted.
    first: HashMap<i32, i64>,
    /// Per partition, the offset of the last message taken.
    last: HashMap<i32, i64>,
    /// Every record handed to the producer, with its input's position.
    deliveries: Vec<((i32, i64), DeliveryFuture)>,
    /// Records the producer refused at once, with their input's position.
    refused: Vec<((i32, i64), String)>,
    /// Whether the producer stopped taking records (an earlier one was
    /// refused): the transaction can only be aborted.
    cut_short: bool,
    messages: usize,
}

impl OpenTransaction {
    fn take(&mut self, partition: i32, offset: i64) {
        self.first.entry(partition).or_insert(offset);
        self.last.insert(partition, offset);
        self.messages += 1;
    }
}

/// Whether a delivery error is the record's own fault and would recur on
/// every attempt (as opposed to the broker being away).
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// Whether a transaction call failed in a way no retry or abort can mend
/// (another process took over the `transactional.id`, say).
fn is_fatal(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(err) => err.is_fatal(),
        _ => false,
    }
}

fn is_retriable(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(err) => err.is_retriable(),
        _ => false,
    }
}

impl Stage {
    /// [`Stage::run`] in exactly-once mode.
    pub(super) async fn run_exactly_once(
        self: Arc<Self>,
        transactions: Transactions,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let interval = transactions.commit_interval;
        let stage = self.plan.name.as_str();
        let producer = self.producer.clone();
        // Subscribed first, so that joining the group (in librdkafka's
        // background) overlaps `init_transactions`; nothing is taken before
        // the transactions are ready.
        self.consumer.subscribe(&[&self.plan.input])?;
        tokio::task::block_in_place(|| producer.init_transactions(TRANSACTION_TIMEOUT))
            .with_context(|| format!("stage `{stage}`: initialising transactions"))?;
        tracing::info!(
            stage,
            input = %self.plan.input,
            output = %self.plan.output,
            dead_letter = %self.plan.dead_letter,
            commit_interval_ms = interval.as_millis() as u64,
            "stage consuming (exactly-once)"
        );
        // Per partition its handlers' instances, so partitions can be
        // planned side by side.
        let mut partition_handlers: HashMap<i32, WorkerHandlers> = HashMap::new();
        let mut open: Option<OpenTransaction> = None;
        // Inputs whose output the broker refused for good in an aborted
        // transaction: dead-lettered when taken again.
        let mut refused: HashMap<(i32, i64), String> = HashMap::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let _pause = self.follow_pause_switch();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                _ = ticker.tick() => {
                    if let Some(transaction) = open.take() {
                        open = self
                            .finish_while_planning(transaction, &mut refused, &mut partition_handlers)
                            .await?;
                    }
                }
                received = self.consumer.recv() => {
                    let Some(message) = self.taken(received).await else {
                        continue;
                    };
                    if self.state.is_none() {
                        let room = MAX_TRANSACTION_MESSAGES
                            .saturating_sub(open.as_ref().map_or(0, |transaction| transaction.messages));
                        let batch = self.already_fetched(message, room.min(self.gather_limit()));
                        let transaction = match open.as_mut() {
                            Some(transaction) => transaction,
                            None => {
                                producer.begin_transaction().with_context(|| {
                                    format!("stage `{stage}`: beginning a transaction")
                                })?;
                                open.insert(OpenTransaction::default())
                            }
                        };
                        let planned = self
                            .clone()
                            .plan_partitions(batch, &mut partition_handlers, &mut refused)
                            .await?;
                        for (message, records) in planned {
                            let position = (message.partition(), message.offset());
                            self.hand_over(records, position, transaction).await;
                            transaction.take(position.0, position.1);
                        }
                    } else {
                        let partition = message.partition();
                        if self.state.as_ref().is_some_and(|state| state.needs_catch_up(partition))
                            && let Some(transaction) = open.take()
                        {
                            // The partition moved since its state was caught up:
                            // end the transaction (a commit across the move is
                            // refused), then catch up before its next message.
                            let rewinds = transaction.first.contains_key(&partition);
                            if !self.finish(transaction, &mut refused).await? && rewinds {
                                // Rewound: this message comes again.
                                continue;
                            }
                        }
                        let transaction = match open.as_mut() {
                            Some(transaction) => transaction,
                            None => {
                                // Local to the producer: no broker round trip.
                                producer.begin_transaction().with_context(|| {
                                    format!("stage `{stage}`: beginning a transaction")
                                })?;
                                open.insert(OpenTransaction::default())
                            }
                        };
                        let position = (message.partition(), message.offset());
                        let records = match refused.remove(&position) {
                            Some(reason) => vec![self.produce_failed(&message, &reason)],
                            None => {
                                let handlers = partition_handlers.entry(partition).or_default();
                                match self.plan(&message, handlers).await? {
                                    Plan::Outputs(records) => records,
                                    Plan::DeadLetter(letter) => vec![letter],
                                }
                            }
                        };
                        self.hand_over(records, position, transaction).await;
                        transaction.take(position.0, position.1);
                    }
                    if open.as_ref().is_some_and(|transaction| transaction.messages >= MAX_TRANSACTION_MESSAGES)
                        && let Some(transaction) = open.take()
                    {
                        open = self
                            .finish_while_planning(transaction, &mut refused, &mut partition_handlers)
                            .await?;
                        // The next commit is an interval after this one, not
                        // at the tick this transaction would have had.
                        ticker.reset();
                    }
                }
            }
        }
        tracing::info!(stage, "draining");
        if let Some(transaction) = open.take() {
            self.finish(transaction, &mut refused).await?;
        }
        self.close_state();
        self.consumer.unsubscribe();
        tracing::info!(stage, "stage stopped");
        Ok(())
    }

    /// [`Stage::finish`], while the messages the consumer holds are planned
    /// beside the commit (on a task of their own, since the commit blocks
    /// its thread), gather after gather until the commit is done or a
    /// transaction's worth is planned; then those records begin the next
    /// transaction, which is returned. Planning is a function of the message
    /// alone in a stage without state, so a plan made during an aborted
    /// commit stays good, except for the partitions the abort rewound:
    /// their plans are dropped, and once planning has stopped they are
    /// rewound again, since planning may have taken their messages after
    /// the abort's rewind. A stage with state plans nothing meanwhile (its
    /// state moves with each commit).
    async fn finish_while_planning(
        self: &Arc<Self>,
        transaction: OpenTransaction,
        refused: &mut HashMap<(i32, i64), String>,
        partition_handlers: &mut HashMap<i32, WorkerHandlers>,
    ) -> anyhow::Result<Option<OpenTransaction>> {
        let fetched = match self.state {
            None => ready_now(self.consumer.recv()),
            Some(_) => None,
        };
        let first = match fetched {
            Some(received) => self.taken(received).await,
            None => None,
        };
        let Some(first) = first else {
            self.finish(transaction, refused).await?;
            return Ok(None);
        };
        let rewind_to = transaction.first.clone();
        let mut handlers = std::mem::take(partition_handlers);
        // The planner reads refusals from a copy: the commit may add some.
        let mut known_refusals = refused.clone();
        let committed_or_aborted = CancellationToken::new();
        let done = committed_or_aborted.clone();
        let stage = self.clone();
        let planning = tokio::spawn(async move {
            let planned = stage
                .plan_until(first, &done, &mut handlers, &mut known_refusals)
                .await;
            (planned, handlers)
        });
        let committed = self.finish(transaction, refused).await;
        committed_or_aborted.cancel();
        let (planned, handlers) = planning.await.context("planning beside a commit failed")?;
        *partition_handlers = handlers;
        let (committed, mut planned) = (committed?, planned?);
        if !committed {
            planned.retain(|(message, _)| !rewind_to.contains_key(&message.partition()));
            for (&partition, &offset) in &rewind_to {
                // Revoked meanwhile: its new owner starts from the last commit.
                let _ = self.consumer.seek(
                    &self.plan.input,
                    partition,
                    Offset::Offset(offset),
                    TRANSACTION_TIMEOUT,
                );
            }
        }
        for (message, _) in &planned {
            // Planned, so its refusal (if any) has been used.
            refused.remove(&(message.partition(), message.offset()));
        }
        if planned.is_empty() {
            return Ok(None);
        }
        self.producer
            .begin_transaction()
            .with_context(|| format!("stage `{}`: beginning a transaction", self.plan.name))?;
        let mut next = OpenTransaction::default();
        for (message, records) in planned {
            let position = (message.partition(), message.offset());
            self.hand_over(records, position, &mut next).await;
            next.take(position.0, position.1);
        }
        Ok(Some(next))
    }

    /// Plans `first` and what the consumer has fetched after it, gather
    /// after gather, until `done` is cancelled (waiting for messages only
    /// until then) or [`MAX_TRANSACTION_MESSAGES`] are planned.
    async fn plan_until(
        self: &Arc<Self>,
        first: OwnedMessage,
        done: &CancellationToken,
        partition_handlers: &mut HashMap<i32, WorkerHandlers>,
        refused: &mut HashMap<(i32, i64), String>,
    ) -> anyhow::Result<Vec<(OwnedMessage, Vec<Record>)>> {
        let mut planned = Vec::new();
        let mut next = Some(first);
        loop {
            if let Some(first) = next.take() {
                let room = MAX_TRANSACTION_MESSAGES - planned.len();
                let batch = self.already_fetched(first, room.min(self.gather_limit()));
                planned.extend(
                    self.clone()
                        .plan_partitions(batch, partition_handlers, refused)
                        .await?,
                );
            }
            if done.is_cancelled() || planned.len() >= MAX_TRANSACTION_MESSAGES {
                return Ok(planned);
            }
            let received = match ready_now(self.consumer.recv()) {
                Some(received) => received,
                None => tokio::select! {
                    biased;
                    _ = done.cancelled() => return Ok(planned),
                    received = self.consumer.recv() => received,
                },
            };
            next = self.taken(received).await;
        }
    }

    /// The records of each message, in the order taken. Each partition's
    /// messages are planned in batches on a task of their own, so the
    /// partitions of one transaction run on every core, as they do in
    /// at-least-once mode; within a partition the order is kept.
    async fn plan_partitions(
        self: Arc<Self>,
        batch: Vec<OwnedMessage>,
        partition_handlers: &mut HashMap<i32, WorkerHandlers>,
        refused: &mut HashMap<(i32, i64), String>,
    ) -> anyhow::Result<Vec<(OwnedMessage, Vec<Record>)>> {
        let partitions = by_partition(batch);
        let mut tasks = Vec::with_capacity(partitions.len());
        for (partition, messages) in partitions {
            // Inputs whose output the broker refused for good are
            // dead-lettered as `produce-failed`, not run again.
            let refusals: Vec<Option<String>> = messages
                .iter()
                .map(|message| refused.remove(&(partition, message.offset())))
                .collect();
            let mut handlers = partition_handlers.remove(&partition).unwrap_or_default();
            let stage = self.clone();
            let plan = async move {
                let planned = stage
                    .plan_in_batches(messages, refusals, &mut handlers)
                    .await;
                (partition, handlers, planned)
            };
            tasks.push(plan);
        }
        let results: Vec<_> = if tasks.len() == 1 {
            vec![tasks.pop().expect("one task").await]
        } else {
            let spawned: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
            let mut results = Vec::with_capacity(spawned.len());
            for task in spawned {
                results.push(task.await.context("a partition's planning task failed")?);
            }
            results
        };
        let mut planned = Vec::new();
        for (partition, handlers, records) in results {
            partition_handlers.insert(partition, handlers);
            planned.extend(records?);
        }
        Ok(planned)
    }

    /// One partition's messages planned in batches of `max_batch`.
    async fn plan_in_batches(
        &self,
        messages: Vec<OwnedMessage>,
        refusals: Vec<Option<String>>,
        handlers: &mut WorkerHandlers,
    ) -> anyhow::Result<Vec<(OwnedMessage, Vec<Record>)>> {
        let mut planned = Vec::with_capacity(messages.len());
        let mut pending: Vec<OwnedMessage> = Vec::new();
        let max_batch = self.plan.max_batch.get();
        for (message, refusal) in messages.into_iter().zip(refusals) {
            match refusal {
                Some(reason) => {
                    self.plan_pending(&mut pending, handlers, &mut planned)
                        .await?;
                    let letter = self.produce_failed(&message, &reason);
                    planned.push((message, vec![letter]));
                }
                None => {
                    pending.push(message);
                    if pending.len() == max_batch {
                        self.plan_pending(&mut pending, handlers, &mut planned)
                            .await?;
                    }
                }
            }
        }
        self.plan_pending(&mut pending, handlers, &mut planned)
            .await?;
        Ok(planned)
    }

    /// Plans the messages of `pending` as one batch and moves them, with
    /// their records, to `planned`.
    async fn plan_pending(
        &self,
        pending: &mut Vec<OwnedMessage>,
        handlers: &mut WorkerHandlers,
        planned: &mut Vec<(OwnedMessage, Vec<Record>)>,
    ) -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let plans = self.plan_batch(pending, handlers).await?;
        for (message, plan) in pending.drain(..).zip(plans) {
            let records = match plan {
                Plan::Outputs(records) => records,
                Plan::DeadLetter(letter) => vec![letter],
            };
            planned.push((message, records));
        }
        Ok(())
    }

    /// Hands a message's records to the transactional producer.
    async fn hand_over(
        &self,
        records: Vec<Record>,
        position: (i32, i64),
        transaction: &mut OpenTransaction,
    ) {
        for record in records {
            match self.enqueue_owned(record).await {
                Ok(delivery) => transaction.deliveries.push((position, delivery)),
                // Once an output of the transaction is refused, the producer
                // takes no more until the abort: the transaction fails, but
                // this record is not at fault.
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::State)) => {
                    transaction.cut_short = true;
                }
                Err(err) => transaction.refused.push((position, err.to_string())),
            }
        }
    }

    /// Commits the transaction with its offsets (and then its state changes
    /// into the stores); when that fails, aborts it, drops its state changes
    /// and rewinds its partitions so its messages are taken again. Whether it
    /// committed; errors only when the producer or a store can no longer be
    /// used.
    async fn finish(
        &self,
        transaction: OpenTransaction,
        refused: &mut HashMap<(i32, i64), String>,
    ) -> anyhow::Result<bool> {
        let stage = self.plan.name.as_str();
        let started = std::time::Instant::now();
        let OpenTransaction {
            first,
            last,
            deliveries,
            refused: refused_at_once,
            cut_short,
            messages,
        } = transaction;
        let mut failed = cut_short || !refused_at_once.is_empty();
        for (position, reason) in refused_at_once {
            refused.entry(position).or_insert(reason);
        }
        // Every output is acknowledged before the offsets are sent. Sending
        // them while the outputs were still in flight made most commits
        // wait about 100 ms more (BENCHMARKS.md section 10).
        for ((partition, offset), delivery) in deliveries {
            let Some(err) = delivery_error(delivery.await) else {
                continue;
            };
            failed = true;
            if err.rdkafka_error_code().is_some_and(refused_for_good) {
                refused
                    .entry((partition, offset))
                    .or_insert(err.to_string());
            }
        }
        let delivered = started.elapsed();
        if !failed {
            let mut offsets = TopicPartitionList::new();
            for (&partition, &offset) in &last {
                offsets.add_partition_offset(
                    &self.plan.input,
                    partition,
                    Offset::Offset(offset + 1),
                )?;
            }
            match self.commit(&offsets) {
                Ok(()) => {
                    tracing::debug!(
                        stage,
                        messages,
                        delivered_ms = delivered.as_secs_f64() * 1e3,
                        committed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "transaction committed"
                    );
                    if let Some(state) = &self.state {
                        tokio::task::block_in_place(|| state.commit())
                            .with_context(|| format!("stage `{stage}`: writing committed state"))?;
                        // No transaction is open now: the changelog holds
                        // only what the stores hold.
                        state.checkpoint_if_due(None);
                    }
                    return Ok(true);
                }
                Err(err) if is_fatal(&err) => {
                    return Err(err).context(format!(
                        "stage `{stage}`: committing a transaction failed for good \
                         (is another host using the same kafka.transactions.id?)"
                    ));
                }
                Err(err) => {
                    tracing::warn!(stage, cause = %err, "transaction commit failed; aborting it");
                }
            }
        } else {
            tracing::warn!(
                stage,
                "an output of the transaction was not accepted by the producer; aborting it"
            );
        }
        let producer = &self.producer;
        tokio::task::block_in_place(|| producer.abort_transaction(TRANSACTION_TIMEOUT))
            .with_context(|| format!("stage `{stage}`: aborting a transaction"))?;
        if let Some(state) = &self.state {
            state.abort();
        }
        for (&partition, &offset) in &first {
            let rewound = self.consumer.seek(
                &self.plan.input,
                partition,
                Offset::Offset(offset),
                TRANSACTION_TIMEOUT,
            );
            if let Err(err) = rewound {
                // The partition was revoked: its new owner starts from the
                // last committed offset.
                tracing::debug!(stage, partition, offset, cause = %err, "partition not rewound");
            }
        }
        tracing::info!(
            stage,
            messages,
            "transaction aborted; its messages will be taken again"
        );
        Ok(false)
    }

    /// Sends the offsets to the transaction and commits it, retrying each
    /// step the broker says is retriable.
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        let producer = &self.producer;
        // Without group metadata (not a member right now) nothing can be committed.
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::State))?;
        tokio::task::block_in_place(|| {
            retrying(|| {
                producer.send_offsets_to_transaction(offsets, &metadata, TRANSACTION_TIMEOUT)
            })?;
            until_outputs_released(producer);
            retrying(|| producer.commit_transaction(TRANSACTION_TIMEOUT))
        })
    }
}

/// Waits (briefly) until the producer no longer counts any output of the
/// transaction, all of which are acknowledged by now. rdkafka's
/// `commit_transaction` flushes first, and while librdkafka still counts a
/// message whose delivery report the polling thread has handled but not
/// yet released, that flush waits up to 100 ms on the event queue for a
/// report the polling thread takes: one commit in twelve waited so
/// (BENCHMARKS.md section 10). Released, the flush returns at once.
fn until_outputs_released(producer: &HostProducer) {
    let started = std::time::Instant::now();
    while producer.flush(Duration::ZERO).is_err() && started.elapsed() < RELEASE_WAIT {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// How long [`until_outputs_released`] waits before committing anyway.
const RELEASE_WAIT: Duration = Duration::from_millis(100);

/// Runs a transaction call again while it fails with a retriable error, up
/// to [`COMMIT_ATTEMPTS`] times. Blocking: the transaction calls are.
fn retrying(mut call: impl FnMut() -> KafkaResult<()>) -> KafkaResult<()> {
    let mut backoff = Backoff::new(COMMIT_RETRY_PAUSE, COMMIT_RETRY_PAUSE);
    let mut attempt = 1;
    loop {
        match call() {
            Err(err) if is_retriable(&err) && attempt < COMMIT_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(backoff.next_wait());
            }
            outcome => return outcome,
        }
    }
}
