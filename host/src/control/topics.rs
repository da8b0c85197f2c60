//! `GET /topics`: where each running stage's input stands, partition by
//! partition: the watermarks, the stage's committed offset and its lag.

use super::handlers::TopicInfo;
use super::reload::TopicSource;
use crate::config::LoadedConfig;
use crate::kafka::Clients;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// How long one question to the brokers may take.
const ASK: Duration = Duration::from_secs(5);

/// The answer of `GET /topics` for the stages `config` runs. Blocking: the
/// admin API calls it on the blocking pool.
pub fn source(clients: Clients, config: LoadedConfig) -> Arc<TopicSource> {
    Arc::new(move || topics(&clients, &config).map_err(|err| format!("{err:#}")))
}

fn topics(clients: &Clients, config: &LoadedConfig) -> anyhow::Result<Vec<TopicInfo>> {
    let mut all = Vec::new();
    for stage in config.running_stages() {
        let consumer = clients.inspector(&stage.group)?;
        let metadata = consumer.fetch_metadata(Some(&stage.input), ASK)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|topic| topic.name() == stage.input)
            .flat_map(|topic| topic.partitions().iter().map(|p| p.id()))
            .collect();
        let mut list = TopicPartitionList::new();
        for &partition in &partitions {
            list.add_partition(&stage.input, partition);
        }
        let committed = consumer.committed_offsets(list, ASK)?;
        for partition in partitions {
            let (low, high) = consumer.fetch_watermarks(&stage.input, partition, ASK)?;
            let committed = committed
                .find_partition(&stage.input, partition)
                .and_then(|element| match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            all.push(TopicInfo {
                stage: stage.name.clone(),
                topic: stage.input.clone(),
                partition,
                low,
                high,
                committed,
                lag: high - committed.unwrap_or(low).max(low),
            });
        }
    }
    Ok(all)
}
