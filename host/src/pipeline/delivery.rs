//! Handing records to the producer and reading its answers, the same way in
//! both delivery modes: a full producer queue is waited out, an answer is
//! one [`DeliveryError`] or none, a record that must not be lost is sent
//! again with [`Backoff`] until the brokers take it, and a refused output
//! becomes one `produce-failed` dead letter.

use super::Stage;
use super::dead_letter::DeadLetter;
use super::outputs::Record;
use crate::handlers::ErrorKind;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use std::time::Duration;

/// Longest pause between attempts to deliver a record that must not be lost.
const MAX_DELIVERY_BACKOFF: Duration = Duration::from_secs(5);
/// Pause while the producer's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Bounded exponential backoff: each wait doubles, up to a maximum. The one
/// way the host waits between attempts (handler retries, deliveries,
/// transaction calls).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits of `initial`, doubling each time, up to `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    /// The next wait, and the one after it doubled.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Sleeps the next wait.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

/// Why the brokers did not take a record.
pub(crate) type DeliveryError = KafkaError;

/// The error in a delivery answer, if any.
pub(crate) fn delivery_error(
    answer: <DeliveryFuture as std::future::Future>::Output,
) -> Option<DeliveryError> {
    match answer {
        Ok(Ok(_)) => None,
        Ok(Err((err, _))) => Some(err),
        Err(_) => Some(KafkaError::Canceled),
    }
}

/// The reason a dead letter gives for an error.
pub(crate) fn describe(err: &DeliveryError) -> String {
    match err {
        KafkaError::Canceled => "the producer closed before acknowledging".to_string(),
        other => other.to_string(),
    }
}

/// The producer's view of a [`Record`]'s parts.
fn future_record<'a>(
    topic: &'a str,
    partition: Option<i32>,
    key: &'a Option<Vec<u8>>,
    value: &'a Option<Vec<u8>>,
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    if let Some(key) = key {
        record = record.key(key.as_slice());
    }
    if let Some(value) = value {
        record = record.payload(value.as_slice());
    }
    record
}

impl Stage {
    /// Hands a copy of a record to the producer (a dead letter is kept, to be
    /// sent again if refused), waiting while its queue is full.
    pub(crate) async fn enqueue(&self, record: &Record) -> Result<DeliveryFuture, KafkaError> {
        self.send(future_record(
            &record.topic,
            record.partition,
            &record.key,
            &record.value,
            record.headers.clone(),
        ))
        .await
    }

    /// Hands a record to the producer, its headers moved rather than copied.
    pub(crate) async fn enqueue_owned(&self, record: Record) -> Result<DeliveryFuture, KafkaError> {
        let Record {
            topic,
            partition,
            key,
            value,
            headers,
        } = record;
        self.send(future_record(&topic, partition, &key, &value, headers))
            .await
    }

    async fn send(
        &self,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// Delivers a record that must not be lost, retrying with backoff until
    /// it is acknowledged. Returns false only when the drain timeout passed.
    pub(crate) async fn deliver_until_acknowledged(&self, record: &Record) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_DELIVERY_BACKOFF);
        loop {
            let failure = match self.enqueue(record).await {
                Ok(delivery) => match delivery_error(delivery.await) {
                    None => return true,
                    Some(err) => err,
                },
                Err(err) => err,
            };
            tracing::error!(stage = %self.plan.name, topic = %record.topic, cause = %describe(&failure), "delivery failed; retrying");
            tokio::select! {
                _ = self.give_up.cancelled() => {
                    tracing::error!(stage = %self.plan.name, topic = %record.topic, "gave up at shutdown; the input stays uncommitted");
                    return false;
                }
                _ = backoff.wait() => {}
            }
        }
    }

    /// The dead letter of a message whose output the brokers refused.
    pub(crate) fn produce_failed(&self, message: &OwnedMessage, reason: &str) -> Record {
        let letter = DeadLetter {
            kind: ErrorKind::ProduceFailed,
            reason: format!("producing an output failed: {reason}"),
            handler: None,
        };
        self.log_dead_letter(message, &letter);
        self.dead_letter_record(message, &letter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350, 350]);
        let mut fixed = Backoff::new(Duration::from_millis(200), Duration::from_millis(200));
        assert_eq!(fixed.next_wait(), fixed.next_wait());
    }

    #[test]
    fn a_canceled_delivery_is_an_error() {
        assert_eq!(
            describe(&KafkaError::Canceled),
            "the producer closed before acknowledging"
        );
    }
}
