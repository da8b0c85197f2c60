//! Talking to the cluster before the stages start: waiting until the
//! brokers answer (with one clear error when they do not), and creating
//! the topics the stages need.

use super::clients::Clients;
use super::context::HostProducer;
use crate::config::ClientProperties;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

/// How long the host waits for the brokers to answer at start.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Creates the given topics where they are missing.
pub async fn ensure_topics(clients: &Clients, topics: &[&str]) -> anyhow::Result<()> {
    let creation = clients.settings().topics;
    if let Some(embedded) = clients.embedded() {
        for topic in topics {
            embedded.create_topic(topic, creation.partitions)?;
        }
        return Ok(());
    }
    let admin = clients.admin()?;
    let bootstrap = clients.bootstrap();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                creation.partitions,
                // -1 asks the broker for its `default.replication.factor`.
                TopicReplication::Fixed(creation.replication_factor.unwrap_or(-1)),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|err| anyhow::anyhow!("creating topics on {bootstrap}: {err}"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic `{topic}` on {bootstrap}: {code}"),
        }
    }
    Ok(())
}

/// Creates a stateful stage's changelog topic where it is missing:
/// compacted, with as many partitions as the stage's `input` (so input
/// partition N keeps its state in changelog partition N). An existing
/// changelog with fewer partitions than the input is an error.
pub async fn ensure_changelog(
    clients: &Clients,
    changelog: &str,
    input: &str,
) -> anyhow::Result<()> {
    let bootstrap = clients.bootstrap().to_string();
    let partitions_of = |topic: &str| -> anyhow::Result<Option<usize>> {
        let consumer = clients.inspector("stagehost-changelog-check")?;
        let metadata = tokio::task::block_in_place(|| {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
        })
        .map_err(|err| {
            anyhow::anyhow!("reading the partitions of `{topic}` on {bootstrap}: {err}")
        })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|count| *count > 0))
    };
    use rdkafka::consumer::Consumer as _;
    let Some(wanted) = partitions_of(input)? else {
        anyhow::bail!(
            "the input topic `{input}` does not exist on {bootstrap}, so its changelog `{changelog}` cannot be sized"
        );
    };
    if let Some(existing) = partitions_of(changelog)? {
        anyhow::ensure!(
            existing >= wanted,
            "the changelog `{changelog}` has {existing} partition(s), fewer than the {wanted} of its input `{input}`"
        );
        return Ok(());
    }
    if let Some(embedded) = clients.embedded() {
        return embedded.create_topic(changelog, wanted as i32);
    }
    let creation = clients.settings().topics;
    let admin = clients.admin()?;
    let topic = NewTopic::new(
        changelog,
        wanted as i32,
        TopicReplication::Fixed(creation.replication_factor.unwrap_or(-1)),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|err| {
            anyhow::anyhow!("creating the changelog `{changelog}` on {bootstrap}: {err}")
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(
                topic,
                partitions = wanted,
                "created changelog topic (compacted)"
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                anyhow::bail!("creating the changelog `{topic}` on {bootstrap}: {code}")
            }
        }
    }
    Ok(())
}

/// Waits until the brokers answer a metadata request, for at most `wait`,
/// with one clear error when they do not: an authentication failure ends
/// the wait at once, naming the brokers and the SASL mechanism.
pub async fn wait_reachable(
    producer: &HostProducer,
    clients: &Clients,
    wait_for: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let trouble = clients.trouble();
    trouble.set_quiet(true);
    let reached = wait(producer, clients, wait_for).await;
    // After a failure the host stops: its one line said it all.
    if reached.is_ok() {
        trouble.set_quiet(false);
    }
    if reached.is_ok()
        && let Some((first, count)) = trouble.first()
    {
        tracing::info!(complaints = count, first = %first, "the brokers answered after {} ms", started.elapsed().as_millis());
    }
    reached
}

async fn wait(producer: &HostProducer, clients: &Clients, wait: Duration) -> anyhow::Result<()> {
    use rdkafka::producer::Producer as _;
    let started = Instant::now();
    let bootstrap = clients.bootstrap();
    loop {
        let client = producer.clone();
        let answer = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Duration::from_millis(500))
                .map(drop)
        })
        .await?;
        let failure = match answer {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if let Some(reason) = clients.trouble().authentication_failure() {
            anyhow::bail!(
                "authentication failed at {bootstrap} ({}): {reason}",
                security_summary(&clients.settings().properties)
            );
        }
        if started.elapsed() >= wait {
            let cause = match clients.trouble().first() {
                Some((first, count)) => {
                    let first = first.strip_prefix("kafka: ").unwrap_or(&first).to_string();
                    format!("{first} ({count} complaint(s) from librdkafka)")
                }
                None => failure.to_string(),
            };
            anyhow::bail!(
                "cannot reach Kafka at {bootstrap} within {} s: {cause}; \
                 is a broker running there? (`make kafka-up` starts one on 127.0.0.1:9092)",
                wait.as_secs()
            );
        }
    }
}

/// How the clients authenticate, for error messages: the security protocol
/// and the SASL mechanism (never a credential).
pub fn security_summary(properties: &ClientProperties) -> String {
    let protocol = properties
        .producer_property("security.protocol")
        .unwrap_or("plaintext");
    match properties
        .producer_property("sasl.mechanism")
        .or_else(|| properties.producer_property("sasl.mechanisms"))
    {
        Some(mechanism) => format!("security.protocol {protocol}, SASL mechanism {mechanism}"),
        None => format!("security.protocol {protocol}"),
    }
}
