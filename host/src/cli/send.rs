//! `host send TOPIC [JSON]`: produces one message, or one per line of
//! stdin, like the tutorial's program 1, with the key, headers and
//! partition it is given.

use crate::config::ClientProperties;
use crate::kafka::{BrokerTrouble, HostContext, HostProducer, producer_config};
use anyhow::Context as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use serde_json::Value;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

/// How long a message may take to be acknowledged once the brokers answered.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// What `host send` puts on each record besides its value.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Record key.
    pub key: Option<String>,
    /// Headers, in order (a key may repeat).
    pub headers: Vec<(String, String)>,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Send text that is not JSON too.
    pub raw: bool,
}

/// Parses `--header K=V` (the first `=` separates key and value).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not a header: write KEY=VALUE")),
    }
}

/// `host send`: produces one message, or one per non-empty line of stdin.
pub async fn send(
    brokers: &str,
    topic: &str,
    message: Option<String>,
    options: &SendOptions,
) -> anyhow::Result<()> {
    let messages: Vec<String> = match message {
        Some(message) => vec![message],
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading stdin")?
            .into_iter()
            .filter(|line| !line.trim().is_empty())
            .collect(),
    };
    if !options.raw {
        for (index, text) in messages.iter().enumerate() {
            serde_json::from_str::<Value>(text).with_context(|| {
                format!(
                    "message {} is not JSON (pass --raw to send it anyway): {text}",
                    index + 1
                )
            })?;
        }
    }
    let trouble = Arc::new(BrokerTrouble::default());
    let producer: HostProducer = producer_config(brokers, &ClientProperties::default())
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .create_with_context(HostContext::new(trouble.clone()))
        .context("creating the Kafka producer")?;
    {
        let producer = producer.clone();
        let brokers = brokers.to_string();
        tokio::task::spawn_blocking(move || {
            crate::kafka::topic_read::wait_for_brokers(producer.client(), &trouble, &brokers)
        })
        .await??;
    }
    let mut headers = OwnedHeaders::new_with_capacity(options.headers.len());
    for (key, value) in &options.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    for text in &messages {
        let mut record = FutureRecord::<str, str>::to(topic)
            .payload(text)
            .headers(headers.clone());
        if let Some(key) = &options.key {
            record = record.key(key);
        }
        if let Some(partition) = options.partition {
            record = record.partition(partition);
        }
        let delivery = producer
            .send(record, Timeout::After(DELIVERY_TIMEOUT))
            .await
            .map_err(
                |(err, _)| match (err.rdkafka_error_code(), options.partition) {
                    (Some(RDKafkaErrorCode::UnknownPartition), Some(partition)) => {
                        anyhow::anyhow!("topic `{topic}` on {brokers} has no partition {partition}")
                    }
                    // The error's own text (its source repeats it).
                    _ => anyhow::anyhow!("sending to `{topic}` on {brokers}: {err}"),
                },
            )?;
        println!(
            "sent to {topic} partition {} offset {}",
            delivery.partition, delivery.offset
        );
    }
    Ok(())
}
