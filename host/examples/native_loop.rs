//! The limit the end-to-end benchmark (`host/benches/e2e.rs`) compares the
//! host against: the tutorial's program 2 written by hand in Rust, with no
//! sandbox. One consume → compute → produce loop, the `calc` logic compiled
//! in (`operation` sum/add → `calc::add`, sub/subtract → `calc::subtract`),
//! the host's own client settings (`stagehost::kafka::producer_config` and
//! `consumer_config`: acks=all, idempotence, linger, offsets stored by hand
//! and auto-committed every second) and the host's guarantee: at least once,
//! an input offset is stored only after its output, or its dead letter, is
//! acknowledged.
//!
//! ```sh
//! cargo build --release -p stagehost --example native_loop
//! target/release/examples/native_loop BROKERS INPUT OUTPUT DEAD_LETTER GROUP
//! ```
//!
//! Sends are not awaited one by one: delivery futures wait in input order,
//! and each offset is stored as its future completes. SIGINT or SIGTERM stops
//! fetching, waits for the outputs in flight, commits and exits 0.

use anyhow::Context as _;
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde_json::Value;
use stagehost::config::ClientProperties;
use stagehost::handlers::ErrorKind;
use stagehost::kafka::headers::RecordHeaders;
use stagehost::pipeline::dead_letter::{self, DeadLetter, Source};
use std::future::Future;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// The host's allocator, so the comparison is of the loops alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inputs whose outputs may await acknowledgement at once.
const MAX_IN_FLIGHT: usize = 8192;
/// The stage name in the client id and the dead-letter headers.
const STAGE: &str = "native";

/// The command line: `BROKERS INPUT OUTPUT DEAD_LETTER GROUP`.
struct Args {
    brokers: String,
    input: String,
    output: String,
    dead_letter: String,
    group: String,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let [brokers, input, output, dead_letter, group] =
            <[String; 5]>::try_from(args).map_err(|_| {
                anyhow::anyhow!("usage: native_loop BROKERS INPUT OUTPUT DEAD_LETTER GROUP")
            })?;
        Ok(Self {
            brokers,
            input,
            output,
            dead_letter,
            group,
        })
    }
}

/// What one input becomes: its output, or its dead letter.
enum Outcome {
    Output(Vec<u8>),
    DeadLetter(DeadLetter),
}

/// Routes the message by `operation` and computes it, as the `add` and
/// `subtract` handlers behind the calculator's route do.
fn compute(payload: &[u8]) -> Outcome {
    let letter = |kind, reason: String| {
        Outcome::DeadLetter(DeadLetter {
            kind,
            reason,
            handler: None,
        })
    };
    let value: Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(err) => return letter(ErrorKind::InvalidJson, format!("invalid JSON: {err}")),
    };
    let handler = match value.get("operation") {
        None => return letter(ErrorKind::MissingRoute, "no field `operation`".into()),
        Some(Value::String(op)) => match op.as_str() {
            "sum" | "add" => calc::add,
            "sub" | "subtract" => calc::subtract,
            other => {
                return letter(
                    ErrorKind::UnknownRoute,
                    format!("no handler for operation `{other}`"),
                );
            }
        },
        Some(other) => {
            return letter(
                ErrorKind::UnknownRoute,
                format!("no handler for operation {other}"),
            );
        }
    };
    match handler(value) {
        Ok(output) => Outcome::Output(serde_json::to_vec(&output).expect("a Value serialises")),
        Err(err) => letter(
            if err.is_transient() {
                ErrorKind::Transient
            } else {
                ErrorKind::InvalidInput
            },
            err.reason().to_string(),
        ),
    }
}

/// An input whose record is on its way to the brokers.
struct InFlight {
    /// The input, kept for a dead letter if its record is refused.
    input: OwnedMessage,
    /// Why it was dead-lettered, when its record is a dead letter.
    letter: Option<DeadLetter>,
}

/// Resolves when the brokers acknowledged (or refused) the record.
async fn acknowledged(
    flight: InFlight,
    delivery: DeliveryFuture,
) -> (InFlight, Result<(), String>) {
    let outcome = match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((err, _))) => Err(err.to_string()),
        Err(_) => Err("the producer closed before acknowledging".into()),
    };
    (flight, outcome)
}

struct Loop {
    args: Args,
    producer: FutureProducer,
    consumer: StreamConsumer,
}

impl Loop {
    /// Enqueues a record, waiting for room in librdkafka's queue while it
    /// is full.
    async fn send(&self, record: FutureRecord<'_, [u8], [u8]>) -> anyhow::Result<DeliveryFuture> {
        let mut record = record;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((err, _)) => return Err(err).context("producing"),
            }
        }
    }

    /// Computes one input and enqueues its output or dead letter.
    async fn process(
        &self,
        message: &BorrowedMessage<'_>,
    ) -> anyhow::Result<(InFlight, DeliveryFuture)> {
        let payload = message.payload().unwrap_or_default();
        let (record, letter) = match compute(payload) {
            Outcome::Output(value) => {
                let mut record = FutureRecord::to(&self.args.output).payload(value.as_slice());
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                (self.send(record).await?, None)
            }
            Outcome::DeadLetter(letter) => {
                (self.send_dead_letter(message, &letter).await?, Some(letter))
            }
        };
        let flight = InFlight {
            input: message.detach(),
            letter,
        };
        Ok((flight, record))
    }

    /// Enqueues the dead letter of `input`: its key, value and headers, plus
    /// the dead-letter headers.
    async fn send_dead_letter<M>(
        &self,
        input: &M,
        letter: &DeadLetter,
    ) -> anyhow::Result<DeliveryFuture>
    where
        M: rdkafka::Message,
        M::Headers: RecordHeaders,
    {
        let source = Source {
            stage: STAGE,
            topic: &self.args.input,
            partition: input.partition(),
            offset: input.offset(),
        };
        let mut record = FutureRecord::to(&self.args.dead_letter)
            .payload(input.payload().unwrap_or_default())
            .headers(dead_letter::dead_letter_headers(
                input.headers(),
                letter,
                source,
            ));
        if let Some(key) = input.key() {
            record = record.key(key);
        }
        self.send(record).await
    }

    /// Called in input order as records are acknowledged: stores the input
    /// offset. A refused output is dead-lettered first, and a refused dead
    /// letter is sent again until acknowledged: it must not be lost.
    async fn settle(&self, flight: InFlight, outcome: Result<(), String>) -> anyhow::Result<()> {
        let InFlight { input, letter } = flight;
        if let Err(reason) = outcome {
            let letter = letter.unwrap_or_else(|| DeadLetter {
                kind: ErrorKind::ProduceFailed,
                reason: format!("producing an output failed: {reason}"),
                handler: None,
            });
            eprintln!(
                "native_loop: dead letter for partition {} offset {} ({reason}): {}",
                input.partition(),
                input.offset(),
                letter.reason
            );
            loop {
                match self.send_dead_letter(&input, &letter).await?.await {
                    Ok(Ok(_)) => break,
                    Ok(Err((err, _))) => {
                        eprintln!("native_loop: dead letter not delivered ({err}); retrying")
                    }
                    Err(_) => anyhow::bail!("the producer closed"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if let Err(err) =
            self.consumer
                .store_offset(&self.args.input, input.partition(), input.offset())
        {
            // The partition was revoked: its new owner starts from the last commit.
            eprintln!(
                "native_loop: offset {} of partition {} not stored: {err}",
                input.offset(),
                input.partition()
            );
        }
        Ok(())
    }

    async fn run(&self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.consumer.subscribe(&[&self.args.input])?;
        let mut in_flight = FuturesOrdered::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some((flight, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(flight, outcome).await?;
                }
                received = self.consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT => match received {
                    Ok(message) => {
                        let (flight, delivery) = self.process(&message).await?;
                        in_flight.push_back(acknowledged(flight, delivery));
                    }
                    Err(err) => {
                        eprintln!("native_loop: consumer error ({err}); continuing");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        // Drain: every input taken is settled before the last commit.
        while let Some((flight, outcome)) = in_flight.next().await {
            self.settle(flight, outcome).await?;
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(err) => Err(err).context("final offset commit"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let properties = ClientProperties::default();
    let producer: FutureProducer = stagehost::kafka::producer_config(&args.brokers, &properties)
        .create()
        .context("creating the producer")?;
    let consumer: StreamConsumer = stagehost::kafka::consumer_config(
        &args.brokers,
        &properties,
        &args.group,
        &format!("stagehost-{STAGE}"),
        false,
    )
    .create()
    .context("creating the consumer")?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    eprintln!(
        "native_loop: {} -> {} (dead letters: {}), group {}",
        args.input, args.output, args.dead_letter, args.group
    );
    Loop {
        args,
        producer,
        consumer,
    }
    .run(shutdown)
    .await?;
    eprintln!("native_loop: stopped after the final commit");
    Ok(())
}
