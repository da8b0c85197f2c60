//! Every version a handler has served, kept on disk under the host's data
//! directory (`<data>/versions/<handler>/`): the component's bytes
//! (`<version>.wasm`) and a `history.json` with when each version started
//! serving and why, the stack a rollback walks back through, and the pin.
//!
//! A pin is what an operator chose: a rolled-back or uploaded version, or
//! one pinned explicitly. It stays across SIGHUP and restarts until a new
//! version is explicitly installed: an upload, or the handler's file
//! changing after the pin (the pin remembers which version the file held).
//! The store is best-effort: a write that fails is logged, and the host
//! serves on.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The most history entries kept per handler.
const MAX_HISTORY: usize = 200;

/// How a version came to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// Loaded from its file at start.
    Start,
    /// Its file changed while the host ran.
    File,
    /// Uploaded through the admin API.
    Upload,
    /// A rollback went back to it.
    Rollback,
    /// Pinned by an operator.
    Pin,
    /// Loaded from the re-read config (SIGHUP).
    Config,
    /// Kept at a start or re-read because it is pinned.
    Pinned,
    /// Promoted from a canary.
    Promote,
}

/// One time a version started serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The version (content hash).
    pub version: String,
    /// Where its bytes came from: a file path, or `upload`.
    pub source: String,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Why.
    pub how: How,
}

/// The version an operator chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The pinned version.
    pub version: String,
    /// What the handler's file held when it was pinned: a file changed
    /// since then is a new version installed explicitly, and wins.
    pub file_version: Option<String>,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// One handler's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every time a version started serving, oldest first.
    pub served: Vec<Served>,
    /// The versions a rollback walks back through; the serving one last.
    pub stack: Vec<String>,
    /// The version an operator chose, if any.
    pub pin: Option<Pin>,
}

impl History {
    /// Records that `version` serves now. A rollback walks the stack back
    /// instead of pushing; anything else pushes (once).
    pub fn record(&mut self, served: Served) {
        if served.how != How::Rollback && self.stack.last() != Some(&served.version) {
            self.stack.retain(|version| version != &served.version);
            self.stack.push(served.version.clone());
        }
        self.served.push(served);
        if self.served.len() > MAX_HISTORY {
            let extra = self.served.len() - MAX_HISTORY;
            self.served.drain(..extra);
        }
    }

    /// The version a rollback goes back to, taken off the stack.
    pub fn roll_back(&mut self) -> Option<String> {
        if self.stack.len() < 2 {
            return None;
        }
        self.stack.pop();
        self.stack.last().cloned()
    }

    /// Where `version`'s bytes first came from.
    pub fn first_source(&self, version: &str) -> Option<&str> {
        self.served
            .iter()
            .find(|served| served.version == version && served.how != How::Pinned)
            .map(|served| served.source.as_str())
    }
}

/// The store of every handler's versions.
#[derive(Debug, Clone)]
pub struct VersionStore {
    root: PathBuf,
}

impl VersionStore {
    /// The store under `data_dir` (made when first written).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("versions"),
        }
    }

    fn dir(&self, handler: &str) -> PathBuf {
        self.root.join(handler)
    }

    /// A handler's record (empty when there is none yet, or it cannot be read).
    pub fn history(&self, handler: &str) -> History {
        let path = self.dir(handler).join("history.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(handler, path = %path.display(), cause = %err, "unreadable version history; starting a new one");
                History::default()
            }),
            Err(_) => History::default(),
        }
    }

    /// Writes a handler's record.
    pub fn save(&self, handler: &str, history: &History) {
        let write = || -> std::io::Result<()> {
            let dir = self.dir(handler);
            std::fs::create_dir_all(&dir)?;
            let text = serde_json::to_vec_pretty(history).map_err(std::io::Error::other)?;
            write_atomically(&dir.join("history.json"), &text)
        };
        if let Err(err) = write() {
            tracing::warn!(handler, cause = %err, "could not save the version history");
        }
    }

    /// Keeps a version's bytes, once.
    pub fn keep(&self, handler: &str, version: &str, bytes: &[u8]) {
        let path = self.dir(handler).join(format!("{version}.wasm"));
        if path.exists() {
            return;
        }
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(self.dir(handler))?;
            write_atomically(&path, bytes)
        };
        if let Err(err) = write() {
            tracing::warn!(handler, version, cause = %err, "could not keep the version's bytes");
        }
    }

    /// A kept version's bytes and where they are.
    pub fn bytes(&self, handler: &str, version: &str) -> Option<(Vec<u8>, PathBuf)> {
        let path = self.dir(handler).join(format!("{version}.wasm"));
        std::fs::read(&path).ok().map(|bytes| (bytes, path))
    }
}

/// Writes `bytes` to `path` by way of a temporary file and a rename, so a
/// crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(version: &str, how: How) -> Served {
        Served {
            version: version.into(),
            source: "f.wasm".into(),
            at: "2026-01-01T00:00:00Z".into(),
            how,
        }
    }

    #[test]
    fn rollbacks_walk_back_step_by_step() {
        let mut history = History::default();
        for (version, how) in [("a", How::Start), ("b", How::File), ("c", How::Upload)] {
            history.record(served(version, how));
        }
        assert_eq!(history.roll_back().as_deref(), Some("b"));
        history.record(served("b", How::Rollback));
        assert_eq!(history.roll_back().as_deref(), Some("a"));
        history.record(served("a", How::Rollback));
        assert_eq!(history.roll_back(), None, "nothing older than the first");
        // A new version after rollbacks starts a new branch.
        history.record(served("d", How::File));
        assert_eq!(history.stack, ["a", "d"]);
        assert_eq!(history.served.len(), 6);
        assert_eq!(history.first_source("b"), Some("f.wasm"));
    }

    #[test]
    fn the_store_keeps_bytes_and_history_on_disk() {
        let dir = std::env::temp_dir().join(format!("stagehost-versions-{}", std::process::id()));
        let store = VersionStore::new(&dir);
        assert_eq!(store.history("h"), History::default());
        store.keep("h", "v1", b"one");
        store.keep("h", "v1", b"ignored: kept once");
        let mut history = History::default();
        history.record(served("v1", How::Start));
        history.pin = Some(Pin {
            version: "v1".into(),
            file_version: Some("v0".into()),
            at: "t".into(),
        });
        store.save("h", &history);
        let again = VersionStore::new(&dir);
        assert_eq!(again.history("h"), history);
        assert_eq!(
            again.bytes("h", "v1").map(|(b, _)| b),
            Some(b"one".to_vec())
        );
        assert_eq!(again.bytes("h", "v2"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
