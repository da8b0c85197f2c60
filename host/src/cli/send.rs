//! `host send TOPIC [JSON]`: produces one message, or one per line of
//! stdin, like the tutorial's program 1.

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::Value;
use std::io::BufRead;
use std::time::Duration;

/// `host send`: produces one message, or one per line of stdin.
pub async fn send(
    brokers: &str,
    topic: &str,
    message: Option<String>,
    key: Option<String>,
    raw: bool,
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "15000")
        .create()
        .context("creating the producer")?;
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
    for (index, text) in messages.iter().enumerate() {
        if !raw {
            serde_json::from_str::<Value>(text).with_context(|| {
                format!(
                    "message {} is not JSON (pass --raw to send it anyway): {text}",
                    index + 1
                )
            })?;
        }
        let mut record = FutureRecord::<str, str>::to(topic).payload(text);
        if let Some(key) = &key {
            record = record.key(key);
        }
        let delivery = producer
            .send(record, Timeout::After(Duration::from_secs(15)))
            .await
            .map_err(|(err, _)| err)
            .with_context(|| format!("sending to `{topic}` on {brokers}"))?;
        println!(
            "sent to {topic} partition {} offset {}",
            delivery.partition, delivery.offset
        );
    }
    Ok(())
}
