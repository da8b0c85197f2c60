//! Reading a topic from its beginning to its current end, without a running
//! host and without joining a group: what `host state dump`, `host dlq`,
//! `host replay` and the admin API's redrive share. The consumer uses the config's Kafka client properties and reads
//! committed records only (`read_committed`).

use super::{BrokerTrouble, HostContext, consumer_config};
use crate::config::{Brokers, LoadedConfig, StagePlan};
use anyhow::Context as _;
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a read waits for a record before it gives up on a partition
/// that has not reached its end.
const STALL: Duration = Duration::from_secs(30);

/// The stage `name` of the config, or an error naming the stages it has.
pub(crate) fn stage<'a>(config: &'a LoadedConfig, name: &str) -> anyhow::Result<&'a StagePlan> {
    let stages = &config.pipeline.stages;
    stages
        .iter()
        .find(|stage| stage.name == name)
        .with_context(|| {
            let names: Vec<&str> = stages.iter().map(|stage| stage.name.as_str()).collect();
            format!(
                "{} has no stage `{name}` (it has: {})",
                config.path.display(),
                names.join(", ")
            )
        })
}

/// A consumer that reads to the end, with the config's client properties.
pub(crate) struct EndReader {
    pub(crate) consumer: BaseConsumer<HostContext>,
    /// The bootstrap servers, for messages.
    pub(crate) brokers: String,
}

impl EndReader {
    /// Connects to the config's brokers as `client_id`. `embedded` says
    /// where to look instead when the config uses the embedded broker,
    /// whose topics live only inside `host run`.
    pub(crate) fn connect(
        config: &LoadedConfig,
        client_id: &str,
        embedded: &str,
    ) -> anyhow::Result<Self> {
        let kafka = &config.pipeline.kafka;
        let brokers = match &kafka.brokers {
            Brokers::Servers(servers) => servers.clone(),
            Brokers::Embedded => anyhow::bail!(
                "{} uses the embedded broker, whose topics live only inside `host run`: {embedded}",
                config.path.display()
            ),
        };
        let trouble = Arc::new(BrokerTrouble::default());
        // A group id only because librdkafka wants one: the consumer is
        // assigned its partitions and joins no group, commits nothing.
        let mut settings = consumer_config(&brokers, &kafka.properties, client_id, client_id, true);
        settings
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer<HostContext> = settings
            .create_with_context(HostContext::new(trouble.clone()))
            .context("creating the Kafka consumer (check kafka.properties and kafka.consumer)")?;
        wait_for_brokers(consumer.client(), &trouble, &brokers)?;
        Ok(Self { consumer, brokers })
    }

    /// The partitions of `topic` to read: `wanted`, or all of them. Fails
    /// when the topic or a wanted partition does not exist; `missing` is
    /// what to say of a topic that does not.
    pub(crate) fn partitions(
        &self,
        topic: &str,
        wanted: &[i32],
        missing: &str,
    ) -> anyhow::Result<Vec<i32>> {
        let brokers = &self.brokers;
        let started = Instant::now();
        let all: BTreeSet<i32> = loop {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .with_context(|| format!("reading the metadata of `{topic}` from {brokers}"))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            match (
                found,
                found.and_then(|t| t.error()).map(RDKafkaErrorCode::from),
            ) {
                (None, _) | (_, Some(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    anyhow::bail!("the topic `{topic}` does not exist on {brokers} ({missing})")
                }
                // A topic just created may have no leaders for a moment.
                (Some(_), Some(RDKafkaErrorCode::LeaderNotAvailable))
                    if started.elapsed() < crate::kafka::CONNECT_WAIT =>
                {
                    continue;
                }
                (Some(_), Some(code)) => {
                    anyhow::bail!("reading the metadata of `{topic}` from {brokers}: {code}")
                }
                (Some(found), None) => break found.partitions().iter().map(|p| p.id()).collect(),
            }
        };
        for partition in wanted {
            anyhow::ensure!(
                all.contains(partition),
                "the topic `{topic}` on {brokers} has no partition {partition} (it has {})",
                match all.len() {
                    1 => "partition 0".to_string(),
                    n => format!("partitions 0 to {}", n - 1),
                }
            );
        }
        Ok(match wanted.is_empty() {
            true => all.into_iter().collect(),
            false => wanted
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
    }

    /// Reads `partitions` of `topic` from their beginning to their end (the
    /// end of what is committed), handing each record to `each`.
    pub(crate) fn read_to_end(
        &self,
        topic: &str,
        partitions: &[i32],
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) -> anyhow::Result<()> {
        let consumer = &self.consumer;
        let mut assignment = TopicPartitionList::new();
        let mut reading = BTreeSet::new();
        for &partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| {
                    format!("reading the offsets of `{topic}` partition {partition}")
                })?;
            if low < high {
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
                reading.insert(partition);
            }
        }
        if reading.is_empty() {
            return Ok(());
        }
        consumer.assign(&assignment)?;
        let mut progressed = Instant::now();
        while !reading.is_empty() {
            let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
                if progressed.elapsed() >= STALL {
                    let waiting: Vec<String> = reading.iter().map(i32::to_string).collect();
                    anyhow::bail!(
                        "reading `{topic}`: no record for {} s before partition(s) {} reached their end",
                        STALL.as_secs(),
                        waiting.join(", ")
                    );
                }
                continue;
            };
            match polled {
                Ok(message) => {
                    progressed = Instant::now();
                    each(&message);
                }
                // With read_committed, the end of what is committed.
                Err(KafkaError::PartitionEOF(partition)) => {
                    reading.remove(&partition);
                }
                Err(err) => read_error(consumer.context().trouble(), topic, err)?,
            }
        }
        Ok(())
    }
}

/// Waits until the brokers at `brokers` answer a metadata request, for at
/// most [`CONNECT_WAIT`](super::CONNECT_WAIT), as the host does at start: librdkafka's
/// complaints meanwhile are only counted, and a failure is one error naming
/// the address (an authentication failure ends the wait at once).
pub fn wait_for_brokers<C: ClientContext>(
    client: &Client<C>,
    trouble: &BrokerTrouble,
    brokers: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    trouble.set_quiet(true);
    loop {
        let failure = match client.fetch_metadata(None, Duration::from_millis(500)) {
            Ok(_) => {
                trouble.set_quiet(false);
                return Ok(());
            }
            Err(err) => err,
        };
        if let Some(reason) = trouble.authentication_failure() {
            anyhow::bail!("authentication failed at {brokers}: {reason}");
        }
        if started.elapsed() >= super::CONNECT_WAIT {
            let cause = match trouble.first() {
                Some((first, count)) => {
                    let first = first.strip_prefix("kafka: ").unwrap_or(&first).to_string();
                    format!("{first} ({count} complaint(s) from librdkafka)")
                }
                None => failure.to_string(),
            };
            anyhow::bail!(
                "cannot reach Kafka at {brokers} within {} s: {cause}; \
                 is a broker running there? (`make kafka-up` starts one on 127.0.0.1:9092)",
                super::CONNECT_WAIT.as_secs()
            );
        }
    }
}

/// An error while reading: fatal when the topic is gone or may not be read;
/// otherwise (the brokers' trouble) folded into `trouble` with librdkafka's
/// other complaints, and the consumer goes on. (`host state dump` reads the
/// same way.)
pub fn read_error(trouble: &BrokerTrouble, topic: &str, err: KafkaError) -> anyhow::Result<()> {
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => Err(anyhow::Error::new(err).context(format!("reading `{topic}`"))),
        _ => {
            let reason = format!("reading `{topic}`: {err}");
            trouble.error(&err, &reason);
            Ok(())
        }
    }
}
