//! `host check CONFIG`: validates the config, loads and initialises every
//! plugin (self-tests included), checks the Kafka properties, and prints the
//! plan it would run, consuming nothing.

use crate::config::{Brokers, Delivery, LoadedConfig};
use crate::handlers::{Registry, Sandbox};
use crate::kafka::{Bootstrap, Clients, consumer_config, producer_config};
use anyhow::Context as _;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;
use std::path::Path;

/// The plan of the config at `path` (with the loaded config), or the first
/// thing wrong with it.
pub fn check(path: &Path) -> anyhow::Result<(String, LoadedConfig)> {
    let config = LoadedConfig::load(path)?;
    let sandbox = Sandbox::for_pipeline(&config.pipeline)?;
    let registry = Registry::load(&config, &sandbox, None)?;
    let kafka = &config.pipeline.kafka;
    // Building the clients validates every librdkafka property; they are
    // dropped before they do anything with the network.
    let bootstrap = match &kafka.brokers {
        Brokers::Servers(servers) => servers.as_str(),
        Brokers::Embedded => "127.0.0.1:9092",
    };
    producer_config(bootstrap, &kafka.properties)
        .create::<FutureProducer>()
        .map(drop)
        .context("kafka.properties / kafka.producer")?;
    let exactly_once = matches!(kafka.delivery, Delivery::ExactlyOnce(_));
    for stage in &config.pipeline.stages {
        consumer_config(
            bootstrap,
            &kafka.properties,
            &stage.group,
            &format!("stagehost-{}", stage.name),
            exactly_once,
        )
        .create::<BaseConsumer>()
        .map(drop)
        .with_context(|| format!("kafka.properties / kafka.consumer (stage `{}`)", stage.name))?;
    }
    let mut plan = format!("{}: OK\n{}", path.display(), config.plan());
    for (name, component) in registry.handlers() {
        plan.push_str(&format!(
            "loaded {name}: version {}, {} bytes, from {}\n",
            component.version(),
            component.size(),
            component.source()
        ));
    }
    Ok((plan, config))
}

/// Asks the brokers for metadata, as `host run` would at start: one line
/// saying they answered, or one clear error within a few seconds.
pub async fn reach_brokers(config: &LoadedConfig) -> anyhow::Result<String> {
    let kafka = &config.pipeline.kafka;
    if let Brokers::Embedded = kafka.brokers {
        return Ok("brokers: embedded (started by `host run`; nothing to contact)\n".to_string());
    }
    let bootstrap = Bootstrap::connect(&kafka.brokers, crate::kafka::embedded_listen()?).await?;
    let clients = Clients::new(&bootstrap, kafka);
    let producer = clients.producer()?;
    crate::kafka::wait_reachable(&producer, &clients, crate::kafka::CONNECT_WAIT).await?;
    Ok(format!("brokers: {} answered\n", bootstrap.bootstrap()))
}
