//! At-least-once mode (the default): each input partition has its own
//! worker task, so partitions run in parallel while one partition's outputs
//! are produced in input order. A worker keeps one reusable instance per
//! handler and replaces it when the registry holds a newer version or the
//! instance trapped. Offsets are stored (and committed in the background)
//! in order, once everything a message produced is acknowledged. What has
//! already arrived for a partition (up to the stage's `max_batch`) is
//! handled as one batch.

use super::delivery::{delivery_error, describe};
use super::outputs::Record;
use super::pending::{Delivery, Pending, PendingQueue};
use super::step::{Plan, WorkerHandlers};
use super::{Stage, by_partition};
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::DeliveryFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Hand-overs (each of what had already arrived for the partition, up to
/// the stage's gather limit) queued per partition worker before the
/// consumer waits.
const PARTITION_QUEUE: usize = 8;
/// Messages whose outputs may be awaiting acknowledgement per partition.
const MAX_IN_FLIGHT: usize = 2048;

/// A partition's messages on their way.
type Queue = PendingQueue<OwnedMessage, DeliveryFuture, Record>;

fn read_answer(answer: <DeliveryFuture as std::future::Future>::Output) -> Option<String> {
    delivery_error(answer).map(|err| describe(&err))
}

impl Stage {
    /// [`Stage::run`] in at-least-once mode.
    pub(super) async fn run_at_least_once(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let stage = self.plan.name.as_str();
        self.consumer.subscribe(&[&self.plan.input])?;
        tracing::info!(
            stage,
            input = %self.plan.input,
            output = %self.plan.output,
            dead_letter = %self.plan.dead_letter,
            "stage consuming"
        );
        let mut workers: HashMap<i32, mpsc::Sender<Vec<OwnedMessage>>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let _pause = self.follow_pause_switch();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        'taking: loop {
            let received = tokio::select! {
                biased;
                _ = &mut cancelled => break,
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    // Workers end only when their queue closes, at the drain.
                    let cause = match ended {
                        Ok(Err(err)) => format!("{err:#}"),
                        Ok(Ok(())) => String::new(),
                        Err(err) => err.to_string(),
                    };
                    anyhow::bail!("stage `{stage}`: a partition worker stopped: {cause}");
                }
                received = self.consumer.recv() => received,
            };
            let Some(first) = self.taken(received).await else {
                continue;
            };
            // What has already arrived goes with it, a hand-over per
            // partition instead of one per message.
            let fetched = self.already_fetched(first, self.gather_limit());
            for (partition, messages) in by_partition(fetched) {
                let worker = workers.entry(partition).or_insert_with(|| {
                    let (sender, receiver) = mpsc::channel(PARTITION_QUEUE);
                    tasks.spawn(self.clone().partition_worker(partition, receiver));
                    sender
                });
                tokio::select! {
                    biased;
                    sent = worker.send(messages) => {
                        if sent.is_err() {
                            anyhow::bail!("stage `{stage}`: the worker for partition {partition} stopped");
                        }
                    }
                    // Not handed over, so never stored: it is consumed again after a restart.
                    _ = &mut cancelled => break 'taking,
                }
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
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(stage, cause = %format!("{err:#}"), "partition worker failed")
                }
                Err(err) => tracing::error!(stage, cause = %err, "partition worker failed"),
            }
        }
        timer.abort();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => tracing::warn!(stage, cause = %err, "final offset commit failed"),
        }
        self.close_state();
        self.consumer.unsubscribe();
        tracing::info!(stage, "stage stopped");
        Ok(())
    }

    async fn partition_worker(
        self: Arc<Self>,
        partition: i32,
        mut incoming: mpsc::Receiver<Vec<OwnedMessage>>,
    ) -> anyhow::Result<()> {
        let mut handlers = WorkerHandlers::default();
        let mut queue = Queue::new(read_answer);
        // Handed over, not yet run.
        let mut waiting: VecDeque<OwnedMessage> = VecDeque::new();
        loop {
            let room = MAX_IN_FLIGHT.saturating_sub(queue.len());
            tokio::select! {
                biased;
                () = queue.oldest_answered(), if !queue.is_empty() => {
                    let done = queue.pop().expect("the awaited message is pending");
                    self.finish_message(partition, done, &mut queue).await;
                    if let Some(state) = &self.state {
                        state.checkpoint_if_due(Some(partition));
                    }
                }
                () = std::future::ready(()), if !waiting.is_empty() && room > 0 => {
                    self.run_waiting(partition, &mut waiting, &mut incoming, room, &mut queue, &mut handlers).await?;
                }
                next = incoming.recv(), if waiting.is_empty() && room > 0 => match next {
                    Some(messages) => {
                        waiting.extend(messages);
                        self.run_waiting(partition, &mut waiting, &mut incoming, room, &mut queue, &mut handlers).await?;
                    }
                    None => break,
                },
            }
        }
        self.drain(partition, &mut queue).await;
        Ok(())
    }

    /// Runs the next batch of the messages waiting (with what else has
    /// already been handed over), at most `room` of them, and queues their
    /// records. The batch is what has already arrived, never waited for. A
    /// stateful stage takes one message at a time: each may need a catch-up
    /// before it.
    async fn run_waiting(
        &self,
        partition: i32,
        waiting: &mut VecDeque<OwnedMessage>,
        incoming: &mut mpsc::Receiver<Vec<OwnedMessage>>,
        room: usize,
        queue: &mut Queue,
        handlers: &mut WorkerHandlers,
    ) -> anyhow::Result<()> {
        if self
            .state
            .as_ref()
            .is_some_and(|state| state.needs_catch_up(partition))
        {
            // The partition moved: its state is read back from the
            // changelog, so every change sent so far must be in it first.
            self.drain(partition, queue).await;
        }
        let limit = match self.state {
            Some(_) => 1,
            None => room.min(self.plan.max_batch.get()),
        };
        while waiting.len() < limit {
            match incoming.try_recv() {
                Ok(messages) => waiting.extend(messages),
                Err(_) => break,
            }
        }
        let batch: Vec<OwnedMessage> = waiting.drain(..limit.min(waiting.len())).collect();
        let permit = match &self.permits {
            Some(permits) => Some(
                permits
                    .acquire()
                    .await
                    .expect("the stage's semaphore is never closed"),
            ),
            None => None,
        };
        let sent = self.process(batch, handlers).await;
        drop(permit);
        for pending in sent? {
            queue.push(pending);
        }
        Ok(())
    }

    /// Waits for every message in the queue to be answered and settles them.
    async fn drain(&self, partition: i32, queue: &mut Queue) {
        while !queue.is_empty() {
            queue.oldest_answered().await;
            let done = queue.pop().expect("the awaited message is pending");
            self.finish_message(partition, done, queue).await;
        }
    }

    /// Settles an answered message and stores its offset when that may be.
    async fn finish_message(
        &self,
        partition: i32,
        done: Pending<OwnedMessage, DeliveryFuture, Record>,
        queue: &mut Queue,
    ) {
        let delivered = self.settle(done).await;
        if let Some(offset) = queue.settled(delivered)
            && let Err(err) = self
                .consumer
                .store_offset(&self.plan.input, partition, offset)
        {
            // The partition was revoked: its new owner starts from the last commit.
            tracing::debug!(stage = %self.plan.name, partition, offset, cause = %err, "offset not stored");
        }
    }

    /// Runs messages of the partition (one batch) and hands their records
    /// (outputs, or a dead letter each) to the producer, in order.
    async fn process(
        &self,
        messages: Vec<OwnedMessage>,
        handlers: &mut WorkerHandlers,
    ) -> anyhow::Result<Vec<Pending<OwnedMessage, DeliveryFuture, Record>>> {
        let delivery = |sent: Result<DeliveryFuture, KafkaError>| match sent {
            Ok(future) => Delivery::Sent(future),
            Err(err) => Delivery::Done(Some(describe(&err))),
        };
        let plans = self.plan_batch(&messages, handlers).await?;
        let mut sent = Vec::with_capacity(messages.len());
        for (message, plan) in messages.into_iter().zip(plans) {
            let (deliveries, letter) = match plan {
                Plan::Outputs(records) => {
                    let mut deliveries = Vec::with_capacity(records.len());
                    for record in records {
                        deliveries.push(delivery(self.enqueue_owned(record).await));
                    }
                    (deliveries, None)
                }
                // Kept: a refused dead letter is sent again until acknowledged.
                Plan::DeadLetter(letter) => {
                    (vec![delivery(self.enqueue(&letter).await)], Some(letter))
                }
            };
            sent.push(Pending {
                offset: message.offset(),
                message,
                deliveries,
                letter,
            });
        }
        Ok(sent)
    }

    /// Once every record of `done` is answered: its offset, after
    /// dead-lettering the message if an output was refused; `None` when not
    /// even its dead letter could be delivered.
    async fn settle(&self, mut done: Pending<OwnedMessage, DeliveryFuture, Record>) -> Option<i64> {
        let Some(reason) = done.failure() else {
            return Some(done.offset);
        };
        let letter = match done.letter {
            Some(letter) => letter,
            None => self.produce_failed(&done.message, &reason),
        };
        self.deliver_until_acknowledged(&letter)
            .await
            .then_some(done.offset)
    }
}
