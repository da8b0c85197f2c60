//! The bootstrap servers the clients use: the configured cluster, or the
//! embedded development broker that lives as long as the [`Bootstrap`].
//!
//! The embedded broker is librdkafka's in-memory mock cluster, made
//! reachable on a fixed address ([`embedded_listen`]: `127.0.0.1:9092`, where
//! `host send` and `host tail` look by default, or `STAGEHOST_EMBEDDED_LISTEN`): the
//! mock broker listens on a random port, advertises the fixed one, and a
//! small TCP relay forwards the fixed port to it. Topics are created through
//! the mock cluster's own API (it does not serve the admin API's
//! CreateTopics). It keeps nothing, and holds at most about 100k messages or
//! 5 MiB per partition.

use crate::config::Brokers;
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer as _};
use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Where the embedded broker listens: `STAGEHOST_EMBEDDED_LISTEN`, by
/// default `127.0.0.1:9092`.
pub fn embedded_listen() -> anyhow::Result<SocketAddr> {
    match std::env::var("STAGEHOST_EMBEDDED_LISTEN") {
        Ok(address) => address.parse().with_context(|| {
            format!("STAGEHOST_EMBEDDED_LISTEN=`{address}` is not an address like 127.0.0.1:9092")
        }),
        Err(_) => Ok(SocketAddr::from(([127, 0, 0, 1], 9092))),
    }
}

/// Where the brokers are: a real cluster, or the embedded broker.
pub struct Bootstrap {
    bootstrap: String,
    embedded: Option<Arc<EmbeddedBroker>>,
}

impl Bootstrap {
    /// Resolves `kafka.brokers`, starting the embedded broker on `listen`
    /// when asked.
    pub async fn connect(brokers: &Brokers, listen: SocketAddr) -> anyhow::Result<Self> {
        match brokers {
            Brokers::Embedded => {
                let embedded = EmbeddedBroker::start(listen).await?;
                tracing::warn!(
                    address = %listen,
                    "using the embedded in-memory development broker on {listen}: nothing is \
                     persisted, and it holds at most about 100k messages per partition"
                );
                Ok(Self {
                    bootstrap: listen.to_string(),
                    embedded: Some(Arc::new(embedded)),
                })
            }
            Brokers::Servers(servers) => Ok(Self {
                bootstrap: servers.clone(),
                embedded: None,
            }),
        }
    }

    /// The bootstrap servers clients should use.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The embedded broker, when that is where the clients go.
    pub fn embedded(&self) -> Option<&Arc<EmbeddedBroker>> {
        self.embedded.as_ref()
    }
}

/// librdkafka's mock cluster with one broker, reached through a relay on a
/// fixed address. Stops when dropped.
pub struct EmbeddedBroker {
    /// The client that owns the mock cluster (`test.mock.num.brokers`).
    owner: BaseProducer,
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    relay: JoinHandle<()>,
}

// SAFETY: `cluster` belongs to `owner`, which outlives every use of it here;
// librdkafka's mock cluster calls used (topic creation) take the cluster's
// own lock or go through its op queue, so they may come from any thread.
unsafe impl Send for EmbeddedBroker {}
// SAFETY: as for `Send`: no method takes `&mut`, and the calls are
// thread-safe in librdkafka.
unsafe impl Sync for EmbeddedBroker {}

impl EmbeddedBroker {
    async fn start(listen: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!(
                "starting the embedded broker on {listen} (is a Kafka broker already running there? \
                 then set `brokers: {listen}` instead of `embedded`)"
            )
        })?;
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("client.id", "stagehost-embedded-broker")
            .create()
            .context("starting the embedded broker")?;
        // SAFETY: `owner` is a live client; librdkafka returns the mock
        // cluster it made for `test.mock.num.brokers`, owned by that client.
        let cluster = unsafe { rdsys::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
        anyhow::ensure!(
            !cluster.is_null(),
            "starting the embedded broker: librdkafka made no mock cluster"
        );
        // SAFETY: `cluster` is live (owned by `owner`); the string it returns
        // is owned by the cluster and copied here at once.
        let inner = unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        let inner = inner.split(',').next().unwrap_or_default().to_string();
        let host = CString::new(listen.ip().to_string()).expect("an IP address has no NUL");
        // The mock broker (id 1) advertises the fixed address: every client
        // comes back through the relay.
        // SAFETY: `cluster` is live; librdkafka copies `host`.
        unsafe {
            rdsys::rd_kafka_mock_broker_set_host_port(
                cluster,
                1,
                host.as_ptr(),
                i32::from(listen.port()),
            )
        };
        let relay = tokio::spawn(relay(listener, inner));
        Ok(Self {
            owner,
            cluster,
            relay,
        })
    }

    /// Creates a topic (an existing one is left as it is).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let name = CString::new(topic).with_context(|| format!("topic `{topic}`"))?;
        // SAFETY: `cluster` is live (owned by `self.owner`); librdkafka copies
        // the name.
        let answer = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1)
        };
        let code = rdkafka::types::RDKafkaErrorCode::from(answer);
        match code {
            rdkafka::types::RDKafkaErrorCode::NoError
            | rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists => Ok(()),
            other => anyhow::bail!("creating topic `{topic}` on the embedded broker: {other}"),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.relay.abort();
        // The mock cluster goes with its owner.
        let _ = self.owner.flush(std::time::Duration::ZERO);
    }
}

/// Forwards every connection on `listener` to the mock broker at `inner`.
async fn relay(listener: TcpListener, inner: String) {
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(err) => {
                tracing::warn!(cause = %err, "the embedded broker's relay could not accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&inner).await {
                Ok(mut broker) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
                Err(err) => tracing::warn!(cause = %err, "the embedded broker did not answer"),
            }
        });
    }
}
