//! The last dead letters of a host, kept in memory for the admin console
//! (`GET /dead-letters`): a small ring, newest first, that costs nothing
//! until a message is dead-lettered.

use super::dead_letter::DeadLetter;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// How many dead letters [`RecentDeadLetters`] keeps.
pub const RECENT_DEAD_LETTERS: usize = 50;

/// One dead letter as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecentDeadLetter {
    /// Counts every letter recorded since start, from 1.
    pub seq: u64,
    /// The stage that dead-lettered the message.
    pub stage: String,
    /// The error kind, as in the `stagehost-error-kind` header.
    pub kind: &'static str,
    /// The reason, on one line.
    pub reason: String,
    /// The handler, when one was chosen.
    pub handler: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Where the message came from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When it was dead-lettered, RFC 3339 UTC.
    pub at: String,
}

/// The last [`RECENT_DEAD_LETTERS`] dead letters of every stage.
#[derive(Debug, Default)]
pub struct RecentDeadLetters {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    letters: VecDeque<RecentDeadLetter>,
    recorded: u64,
}

impl RecentDeadLetters {
    /// Keeps one dead letter of `stage`, `reason` being its one-line reason;
    /// the oldest kept goes when the ring is full.
    pub fn record(&self, stage: &str, message: &OwnedMessage, letter: &DeadLetter, reason: String) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.recorded += 1;
        let (handler, version) = match &letter.handler {
            Some((name, version)) => (Some(name.clone()), Some(version.clone())),
            None => (None, None),
        };
        let entry = RecentDeadLetter {
            seq: ring.recorded,
            stage: stage.to_string(),
            kind: letter.kind.as_str(),
            reason,
            handler,
            version,
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        if ring.letters.len() == RECENT_DEAD_LETTERS {
            ring.letters.pop_back();
        }
        ring.letters.push_front(entry);
    }

    /// The letters kept, newest first.
    pub fn newest_first(&self) -> Vec<RecentDeadLetter> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.letters.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::ErrorKind;
    use rdkafka::Timestamp;

    fn message(offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "requests".into(),
            Timestamp::NotAvailable,
            2,
            offset,
            None,
        )
    }

    #[test]
    fn keeps_the_newest_letters_first_and_drops_the_oldest() {
        let recent = RecentDeadLetters::default();
        let letter = DeadLetter {
            kind: ErrorKind::InvalidInput,
            reason: "x is not a number".into(),
            handler: Some(("add".into(), "5d4c0e9a1b2f".into())),
        };
        for offset in 0..(RECENT_DEAD_LETTERS as i64 + 5) {
            recent.record(
                "calculator",
                &message(offset),
                &letter,
                letter.reason_line(),
            );
        }
        let kept = recent.newest_first();
        assert_eq!(kept.len(), RECENT_DEAD_LETTERS);
        assert_eq!(kept[0].offset, RECENT_DEAD_LETTERS as i64 + 4);
        assert_eq!(kept[0].seq, RECENT_DEAD_LETTERS as u64 + 5);
        assert_eq!(kept.last().unwrap().offset, 5);
        let first = &kept[0];
        assert_eq!(
            (first.stage.as_str(), first.kind, first.reason.as_str()),
            ("calculator", "invalid-input", "x is not a number")
        );
        assert_eq!(first.handler.as_deref(), Some("add"));
        assert_eq!(first.version.as_deref(), Some("5d4c0e9a1b2f"));
        assert_eq!((first.topic.as_str(), first.partition), ("requests", 2));
        assert!(first.at.ends_with('Z'), "{}", first.at);
    }
}
