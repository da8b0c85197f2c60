//! The message path of one stage: consume, route, run the handler, produce
//! the outputs (or a dead-letter record), and commit the input offset only
//! after everything the message produced is acknowledged.
//!
//! - [`step`]: the per-message step both delivery modes share, ending in a
//!   [`step::Plan`] (outputs or a dead letter);
//! - [`outputs`]: what a handler's outputs become, within the stage's rules;
//! - [`dead_letter`]: the headers of dead letters and outputs;
//! - [`delivery`]: handing records to the producer and reading its answers;
//! - [`pending`]: a partition's in-flight messages, acknowledged in order;
//! - [`at_least_once`]: a worker per input partition (the default);
//! - [`exactly_once`]: Kafka transactions (`kafka.delivery: exactly-once`);
//! - [`state`]: per-key state of a stage with `state:` (local store and
//!   changelog);
//! - [`metrics`]: what the path records;
//! - [`recent`]: the last dead letters, for the admin console.

pub mod at_least_once;
pub mod dead_letter;
pub mod delivery;
pub mod exactly_once;
pub mod metrics;
pub mod outputs;
pub mod pending;
pub mod recent;
pub mod state;
pub mod step;

use crate::config::{StagePlan, Transactions};
use crate::handlers::SharedRegistry;
use crate::kafka::{HostProducer, StageConsumer};
use metrics::StageMetrics;
use outputs::OutputRules;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What a stage is made of.
pub struct StageParts {
    /// The stage, resolved.
    pub plan: StagePlan,
    /// The handlers and routes, swapped by reloads.
    pub registry: SharedRegistry,
    /// The producer: the host's shared one, or (exactly-once) the stage's own
    /// transactional one.
    pub producer: HostProducer,
    /// The stage's consumer, not yet subscribed.
    pub consumer: StageConsumer,
    /// Where the stage records what it does.
    pub metrics: StageMetrics,
    /// How long a shutdown waits for outputs to be acknowledged.
    pub drain_timeout: Duration,
    /// Exactly-once mode: the transaction settings.
    pub transactions: Option<Transactions>,
    /// The producer's `message.max.bytes`.
    pub max_record_bytes: u64,
    /// A stateful stage's state.
    pub state: Option<Arc<state::StageState>>,
}

/// One running stage.
pub struct Stage {
    plan: StagePlan,
    /// Where the handlers may write, and how much.
    outputs: OutputRules,
    registry: SharedRegistry,
    producer: HostProducer,
    consumer: StageConsumer,
    metrics: StageMetrics,
    drain_timeout: Duration,
    transactions: Option<Transactions>,
    /// Cancelled when the drain timeout passes: undeliverable records are
    /// then left uncommitted (to be consumed again) instead of retried.
    give_up: CancellationToken,
    /// `parallelism`: permits for handling a message, shared by the
    /// stage's partition workers; `None` lets every partition run at once.
    permits: Option<Arc<Semaphore>>,
    /// A stateful stage's state.
    state: Option<Arc<state::StageState>>,
}

impl Stage {
    /// A stage ready to run.
    pub fn new(parts: StageParts) -> Arc<Self> {
        let StageParts {
            plan,
            registry,
            producer,
            consumer,
            metrics,
            drain_timeout,
            transactions,
            max_record_bytes,
            state,
        } = parts;
        Arc::new(Self {
            outputs: OutputRules::of(&plan, max_record_bytes),
            permits: plan.parallelism.map(|n| Arc::new(Semaphore::new(n.get()))),
            plan,
            registry,
            producer,
            consumer,
            metrics,
            drain_timeout,
            transactions,
            give_up: CancellationToken::new(),
            state,
        })
    }

    /// Consumes until `shutdown` is cancelled, then drains: every message
    /// already taken is finished, its outputs delivered and its offset
    /// committed before this returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        match self.transactions.clone() {
            Some(transactions) => self.run_exactly_once(transactions, shutdown).await,
            None => self.run_at_least_once(shutdown).await,
        }
    }

    /// After the drain, before the consumer leaves the group (which revokes
    /// every partition): the stateful stage's checkpoints at the changelog's
    /// end, so the next start reads nothing again.
    fn close_state(&self) {
        if let Some(state) = &self.state {
            tokio::task::block_in_place(|| state.close());
        }
    }

    /// Follows the stage's pause switch on a task of its own until the
    /// returned guard is dropped, so that the message loop does not poll the
    /// switch for every message.
    fn follow_pause_switch(self: &Arc<Self>) -> tokio_util::sync::DropGuard {
        use rdkafka::consumer::Consumer as _;
        let stop = CancellationToken::new();
        let mut switch = self.consumer.context().pause().subscribe();
        let stage = self.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    changed = switch.changed() => match changed {
                        Ok(()) => stage.follow_pause(*switch.borrow_and_update()),
                        Err(_) => break,
                    },
                }
            }
        });
        stop.drop_guard()
    }

    /// Pauses or resumes fetching the partitions assigned now (a partition
    /// assigned later follows the switch in the rebalance). Messages already
    /// fetched are still handled, and nothing is committed past what was
    /// handled, so nothing is lost; lag keeps being reported.
    fn follow_pause(&self, paused: bool) {
        use rdkafka::consumer::Consumer as _;
        let stage = self.plan.name.as_str();
        let done = self.consumer.assignment().and_then(|assignment| {
            if paused {
                self.consumer.pause(&assignment)?;
            } else {
                self.consumer.resume(&assignment)?;
            }
            Ok(assignment.count())
        });
        match done {
            Ok(partitions) if paused => tracing::info!(stage, partitions, "stage paused"),
            Ok(partitions) => tracing::info!(stage, partitions, "stage resumed"),
            Err(err) => {
                tracing::warn!(stage, paused, cause = %err, "could not pause or resume the consumer")
            }
        }
    }

    /// Most messages taken from the consumer at once: a batch for a few
    /// partitions.
    fn gather_limit(&self) -> usize {
        self.plan.max_batch.get() * GATHERED_BATCHES
    }

    /// `first` and the messages the consumer already holds after it, up to
    /// `limit` in all; never waits for more.
    fn already_fetched(&self, first: OwnedMessage, limit: usize) -> Vec<OwnedMessage> {
        let mut batch = vec![first];
        while batch.len() < limit {
            match ready_now(self.consumer.recv()) {
                Some(Ok(message)) => {
                    self.metrics.message_in();
                    batch.push(message.detach());
                }
                // An error is met again, and reported, by the next `recv`.
                Some(Err(_)) | None => break,
            }
        }
        batch
    }

    /// A received message, detached and counted. A consumer error is
    /// logged, and after a short pause the caller goes on with `None`.
    async fn taken(
        &self,
        received: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
    ) -> Option<OwnedMessage> {
        match received {
            Ok(message) => {
                self.metrics.message_in();
                Some(message.detach())
            }
            Err(err) => {
                tracing::warn!(stage = %self.plan.name, cause = %err, "consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }
}

/// Batches taken from the consumer at once (of `max_batch` messages each),
/// so that several partitions' batches go on side by side.
const GATHERED_BATCHES: usize = 4;

/// The future's output if it is ready at the first poll. For
/// `StreamConsumer::recv`, which is cancellation safe: a message already
/// fetched, or `None`.
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// `messages` split by partition, in order of each partition's first
/// message; each partition's messages keep their order.
fn by_partition(messages: Vec<OwnedMessage>) -> Vec<(i32, Vec<OwnedMessage>)> {
    let mut partitions: Vec<(i32, Vec<OwnedMessage>)> = Vec::new();
    for message in messages {
        let partition = message.partition();
        match partitions.iter_mut().find(|(known, _)| *known == partition) {
            Some((_, taken)) => taken.push(message),
            None => partitions.push((partition, vec![message])),
        }
    }
    partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "requests".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn by_partition_keeps_each_partitions_order_and_first_appearance() {
        let taken = [(3, 10), (1, 7), (3, 11), (0, 2), (1, 8), (3, 12)]
            .into_iter()
            .map(|(partition, offset)| message(partition, offset))
            .collect();
        let split: Vec<(i32, Vec<i64>)> = by_partition(taken)
            .into_iter()
            .map(|(partition, messages)| (partition, messages.iter().map(|m| m.offset()).collect()))
            .collect();
        assert_eq!(
            split,
            [(3, vec![10, 11, 12]), (1, vec![7, 8]), (0, vec![2])]
        );
    }

    #[test]
    fn ready_now_takes_only_what_is_ready() {
        assert_eq!(ready_now(std::future::ready(7)), Some(7));
        assert_eq!(ready_now(std::future::pending::<()>()), None);
    }
}
