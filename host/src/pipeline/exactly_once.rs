//! Exactly-once mode (`kafka.delivery: exactly-once`): each stage consumes,
//! runs its handlers and produces inside Kafka transactions, and sends the
//! input offsets to the same transaction, so a message's outputs (or its
//! dead letter) and its offset are committed together or not at all.
//!
//! The stage runs one loop: it takes a message, plans its records, hands
//! them to its transactional producer and notes the offset. Every
//! `kafka.transactions.commit_interval_ms` (or after
//! [`MAX_TRANSACTION_MESSAGES`]) it waits for the outputs, sends the offsets
//! and commits. When a commit fails, the transaction is aborted and every
//! partition it touched is rewound to where the transaction began, so the
//! same messages are taken again. A message whose output the broker refused
//! for good (too large, say) is dead-lettered as `produce-failed` when taken
//! again, so it cannot block its partition.
//!
//! Fencing: each stage's `transactional.id` is stable across restarts of
//! the host (see `kafka.transactions.id`); the restarted host's
//! `init_transactions` aborts whatever the crashed one left open. A
//! rebalance is covered by the consumer group metadata sent with the
//! offsets: a commit from a member that lost its partitions is refused.

use super::Stage;
use super::delivery::{Backoff, delivery_error};
use super::step::{Plan, WorkerHandlers};
use crate::config::Transactions;
use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
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
        tokio::task::block_in_place(|| producer.init_transactions(TRANSACTION_TIMEOUT))
            .with_context(|| format!("stage `{stage}`: initialising transactions"))?;
        self.consumer.subscribe(&[&self.plan.input])?;
        tracing::info!(
            stage,
            input = %self.plan.input,
            output = %self.plan.output,
            dead_letter = %self.plan.dead_letter,
            commit_interval_ms = interval.as_millis() as u64,
            "stage consuming (exactly-once)"
        );
        let mut handlers = WorkerHandlers::default();
        let mut open: Option<OpenTransaction> = None;
        // Inputs whose output the broker refused for good in an aborted
        // transaction: dead-lettered when taken again.
        let mut refused: HashMap<(i32, i64), String> = HashMap::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    if let Some(transaction) = open.take() {
                        self.finish(transaction, &mut refused).await?;
                    }
                }
                received = self.consumer.recv() => {
                    let Some(message) = self.taken(received).await else {
                        continue;
                    };
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
                            producer
                                .begin_transaction()
                                .with_context(|| format!("stage `{stage}`: beginning a transaction"))?;
                            open.insert(OpenTransaction::default())
                        }
                    };
                    let position = (message.partition(), message.offset());
                    let records = match refused.remove(&position) {
                        Some(reason) => vec![self.produce_failed(&message, &reason)],
                        None => match self.plan(&message, &mut handlers).await? {
                            Plan::Outputs(records) => records,
                            Plan::DeadLetter(letter) => vec![letter],
                        },
                    };
                    for record in records {
                        match self.enqueue_owned(record).await {
                            Ok(delivery) => transaction.deliveries.push((position, delivery)),
                            Err(err) => transaction.refused.push((position, err.to_string())),
                        }
                    }
                    transaction.take(position.0, position.1);
                    if transaction.messages >= MAX_TRANSACTION_MESSAGES
                        && let Some(transaction) = open.take()
                    {
                        self.finish(transaction, &mut refused).await?;
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
        let mut failed = false;
        for ((partition, offset), delivery) in transaction.deliveries {
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
        for (position, reason) in transaction.refused {
            failed = true;
            refused.entry(position).or_insert(reason);
        }
        if !failed {
            let mut offsets = TopicPartitionList::new();
            for (&partition, &offset) in &transaction.last {
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
                        messages = transaction.messages,
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
                "an output of the transaction was not delivered; aborting it"
            );
        }
        let producer = &self.producer;
        tokio::task::block_in_place(|| producer.abort_transaction(TRANSACTION_TIMEOUT))
            .with_context(|| format!("stage `{stage}`: aborting a transaction"))?;
        if let Some(state) = &self.state {
            state.abort();
        }
        for (&partition, &offset) in &transaction.first {
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
            messages = transaction.messages,
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
            retrying(|| producer.commit_transaction(TRANSACTION_TIMEOUT))
        })
    }
}

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
