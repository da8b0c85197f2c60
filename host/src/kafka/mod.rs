//! Kafka: the host's clients and what it asks of the cluster.
//!
//! - [`clients`]: producers, stage consumers and the admin client, made from
//!   the resolved settings (the user's properties last);
//! - [`context`]: what librdkafka says, folded into few lines, and the
//!   stage consumers' context (statistics, rebalance logs);
//! - [`topics`]: waiting for the brokers and creating topics;
//! - [`headers`]: reading record headers whose keys may not be UTF-8;
//! - [`topic_read`]: reading a topic to its end without joining a group;
//! - [`embedded`]: the in-memory development broker.

pub mod clients;
pub mod context;
pub mod embedded;
pub mod headers;
pub mod topic_read;
pub mod topics;

pub use clients::{
    Clients, DEFAULT_MAX_RECORD_BYTES, StageConsumer, consumer_config, max_record_bytes,
    producer_config, transactional_config,
};
pub use context::{
    BrokerTrouble, HostContext, HostProducer, PartitionEpochs, PauseSwitch, StageContext,
    StatisticsSink,
};
pub use embedded::{Bootstrap, EmbeddedBroker, embedded_listen};
pub use topics::{CONNECT_WAIT, ensure_changelog, ensure_topics, security_summary, wait_reachable};
