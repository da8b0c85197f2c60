//! The bootstrap servers the clients use: the configured cluster, or the
//! embedded development broker (librdkafka's in-memory mock cluster) that
//! lives as long as the [`Bootstrap`] value.

use crate::config::Brokers;
use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

/// Where the brokers are: a real cluster, or the in-memory mock cluster that
/// lives as long as this value.
pub struct Bootstrap {
    bootstrap: String,
    _embedded: Option<EmbeddedBroker>,
}

/// librdkafka's mock cluster, kept on a thread of its own (it is not `Send`)
/// until dropped.
struct EmbeddedBroker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    fn start() -> anyhow::Result<(Self, String)> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stagehost-embedded-broker".into())
            .spawn(move || match MockCluster::new(1) {
                Ok(cluster) => {
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    let _ = stop_rx.recv();
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })?;
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker thread ended")?
            .context("starting the embedded broker")?;
        Ok((
            Self {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            bootstrap,
        ))
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Bootstrap {
    /// Resolves `kafka.brokers`, starting the embedded broker when asked.
    pub fn connect(brokers: &Brokers) -> anyhow::Result<Self> {
        match brokers {
            Brokers::Embedded => {
                let (embedded, bootstrap) = EmbeddedBroker::start()?;
                tracing::warn!(
                    bootstrap = %bootstrap,
                    "using the embedded in-memory development broker: nothing is persisted, \
                     and it holds at most about 100k messages per partition"
                );
                Ok(Self {
                    bootstrap,
                    _embedded: Some(embedded),
                })
            }
            Brokers::Servers(servers) => Ok(Self {
                bootstrap: servers.clone(),
                _embedded: None,
            }),
        }
    }

    /// The bootstrap servers clients should use.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}
