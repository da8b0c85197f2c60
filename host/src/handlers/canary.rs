//! Canary swaps: a new version of a handler serves a share of the keys
//! while the stable version serves the rest, each version's outcomes are
//! counted side by side, and the counts decide whether the canary is rolled
//! back (its dead-letter rate exceeds the stable one's by a margin) or
//! promoted (enough messages, or enough time, without that).
//!
//! The share is chosen by a hash of the message key, so a key's messages
//! all go to the same version for as long as the canary runs: a key never
//! goes back to the old version except on rollback. An unkeyed message is
//! chosen by its partition and offset. The hash is FNV-1a, fixed here
//! rather than taken from the standard library, so that every host of a
//! group and every restart choose the same keys.

use super::{ErrorKind, HandlerComponent};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// When a canary is rolled back or promoted by itself.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CanaryRules {
    /// How far (in percentage points) the canary's dead-letter rate may
    /// exceed the stable version's before it is rolled back.
    pub margin_percent: f64,
    /// The canary messages needed before its rate is judged at all.
    pub min_messages: u64,
    /// Promoted after this many canary messages without a rollback.
    pub promote_after_messages: u64,
    /// Promoted after this long (with at least `min_messages`), if sooner.
    #[serde(with = "humantime_serde_option", default)]
    pub promote_after: Option<Duration>,
}

impl Default for CanaryRules {
    fn default() -> Self {
        Self {
            margin_percent: 5.0,
            min_messages: 100,
            promote_after_messages: 1_000,
            promote_after: None,
        }
    }
}

/// `Option<Duration>` as humantime text (`"10m"`) in JSON.
mod humantime_serde_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, out: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => out.serialize_str(&humantime::format_duration(*duration).to_string()),
            None => out.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(input)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Which side of a canary a message went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The version that served before the canary started.
    Stable,
    /// The new version on trial.
    Canary,
}

/// One version's outcomes while a canary runs.
#[derive(Default)]
pub struct VersionTally {
    messages: AtomicU64,
    outputs: AtomicU64,
    dead_letters: AtomicU64,
    call_nanos: AtomicU64,
    calls: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
}

impl VersionTally {
    /// Counts one message that came out as `outputs` records.
    pub fn handled(&self, outputs: usize) {
        self.outputs.fetch_add(outputs as u64, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message that was dead-lettered.
    pub fn dead_lettered(&self, kind: ErrorKind) {
        *self
            .by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind.as_str())
            .or_default() += 1;
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the wall time of one handler call (a batch call's share).
    pub fn call_took(&self, seconds: f64) {
        self.call_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as they stand.
    pub fn counts(&self) -> VersionCounts {
        let calls = self.calls.load(Ordering::Relaxed);
        let nanos = self.call_nanos.load(Ordering::Relaxed);
        VersionCounts {
            messages: self.messages.load(Ordering::Relaxed),
            outputs: self.outputs.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            dead_letters_by_kind: self
                .by_kind
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(kind, count)| (kind.to_string(), *count))
                .collect(),
            mean_call_ms: (calls > 0).then(|| nanos as f64 / calls as f64 / 1e6),
        }
    }
}

/// One version's counts, as the API shows them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VersionCounts {
    /// Messages it handled (outputs or a dead letter).
    pub messages: u64,
    /// Records it produced.
    pub outputs: u64,
    /// Messages it dead-lettered.
    pub dead_letters: u64,
    /// Its dead letters by kind.
    pub dead_letters_by_kind: BTreeMap<String, u64>,
    /// The mean wall time of one handler call, in milliseconds.
    pub mean_call_ms: Option<f64>,
}

impl VersionCounts {
    /// Dead letters per message, as a fraction (0 with no messages).
    pub fn dead_letter_rate(&self) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            self.dead_letters as f64 / self.messages as f64
        }
    }
}

/// What the counts say should happen to a canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Roll it back, for this reason.
    RollBack(String),
    /// Promote it, for this reason.
    Promote(String),
}

/// A canary: the version on trial, its share and rules, and both sides'
/// counts since it started.
pub struct Canary {
    component: Arc<HandlerComponent>,
    stable_version: String,
    percent: u8,
    rules: CanaryRules,
    started_at: SystemTime,
    started: Instant,
    stable: VersionTally,
    canary: VersionTally,
}

impl Canary {
    /// A canary of `component` on `percent` (1-99) of the keys, against the
    /// version `stable_version`.
    pub fn new(
        component: Arc<HandlerComponent>,
        stable_version: String,
        percent: u8,
        rules: CanaryRules,
    ) -> Self {
        Self {
            component,
            stable_version,
            percent,
            rules,
            started_at: SystemTime::now(),
            started: Instant::now(),
            stable: VersionTally::default(),
            canary: VersionTally::default(),
        }
    }

    /// The version on trial.
    pub fn component(&self) -> &Arc<HandlerComponent> {
        &self.component
    }

    /// The share of keys it gets, in percent.
    pub fn percent(&self) -> u8 {
        self.percent
    }

    /// The version it is compared with.
    pub fn stable_version(&self) -> &str {
        &self.stable_version
    }

    /// Whether a message goes to the canary: by its key's hash, or, when
    /// it has no key, by its partition and offset.
    pub fn takes(&self, key: Option<&[u8]>, partition: i32, offset: i64) -> bool {
        bucket(key, partition, offset) < u64::from(self.percent)
    }

    /// The tally of one side.
    pub fn tally(&self, side: Side) -> &VersionTally {
        match side {
            Side::Stable => &self.stable,
            Side::Canary => &self.canary,
        }
    }

    /// Whether the canary should be rolled back or promoted now.
    pub fn verdict(&self) -> Option<Verdict> {
        judge(
            &self.rules,
            &self.canary.counts(),
            &self.stable.counts(),
            self.started.elapsed(),
        )
    }

    /// The canary as the API shows it.
    pub fn report(&self) -> CanaryReport {
        let canary = self.canary.counts();
        let stable = self.stable.counts();
        CanaryReport {
            version: self.component.version().to_string(),
            stable_version: self.stable_version.clone(),
            percent: self.percent,
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            messages: canary.messages,
            dead_letters: canary.dead_letters,
            stable_messages: stable.messages,
            stable_dead_letters: stable.dead_letters,
            canary,
            stable,
            rules: self.rules,
            outcome: None,
        }
    }
}

/// A canary as `GET /handlers/NAME` shows it (running, or the last one,
/// with its outcome).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CanaryReport {
    /// The version on trial.
    pub version: String,
    /// The version it was compared with.
    pub stable_version: String,
    /// Its share of the keys, in percent.
    pub percent: u8,
    /// When it started, RFC 3339 UTC.
    pub started_at: String,
    /// Messages the canary handled.
    pub messages: u64,
    /// Of those, dead-lettered.
    pub dead_letters: u64,
    /// Messages the stable version handled meanwhile.
    pub stable_messages: u64,
    /// Of those, dead-lettered.
    pub stable_dead_letters: u64,
    /// The canary's counts in full.
    pub canary: VersionCounts,
    /// The stable version's counts in full.
    pub stable: VersionCounts,
    /// When it is rolled back or promoted by itself.
    pub rules: CanaryRules,
    /// How it ended, for the last canary: `promoted` or `rolled back`,
    /// by whom and why.
    pub outcome: Option<String>,
}

/// What the rules say of a canary's counts against the stable version's,
/// `elapsed` after it started: nothing before `min_messages`, then a
/// rollback if its dead-letter rate is over the stable one's by more than
/// the margin, else a promotion once it has had enough messages or time.
pub fn judge(
    rules: &CanaryRules,
    canary: &VersionCounts,
    stable: &VersionCounts,
    elapsed: Duration,
) -> Option<Verdict> {
    if canary.messages < rules.min_messages.max(1) {
        return None;
    }
    let (canary_rate, stable_rate) = (canary.dead_letter_rate(), stable.dead_letter_rate());
    if (canary_rate - stable_rate) * 100.0 > rules.margin_percent {
        return Some(Verdict::RollBack(format!(
            "its dead-letter rate {:.1}% ({} of {}) exceeds the stable version's {:.1}% ({} of {}) by more than {} points",
            canary_rate * 100.0,
            canary.dead_letters,
            canary.messages,
            stable_rate * 100.0,
            stable.dead_letters,
            stable.messages,
            rules.margin_percent
        )));
    }
    let rates = format!(
        "a dead-letter rate of {:.1}% against the stable version's {:.1}%",
        canary_rate * 100.0,
        stable_rate * 100.0
    );
    if canary.messages >= rules.promote_after_messages {
        return Some(Verdict::Promote(format!(
            "{} messages with {rates}",
            canary.messages
        )));
    }
    match rules.promote_after {
        Some(after) if elapsed >= after => Some(Verdict::Promote(format!(
            "{} with {rates}",
            humantime::format_duration(after)
        ))),
        _ => None,
    }
}

/// The bucket (0-99) of a message: FNV-1a of its key, or of its partition
/// and offset when it has none.
fn bucket(key: Option<&[u8]>, partition: i32, offset: i64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = |bytes: &mut dyn Iterator<Item = u8>| {
        bytes.fold(OFFSET_BASIS, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
    };
    let hashed = match key {
        Some(key) if !key.is_empty() => hash(&mut key.iter().copied()),
        _ => hash(
            &mut partition
                .to_be_bytes()
                .into_iter()
                .chain(offset.to_be_bytes()),
        ),
    };
    hashed % 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_bucket_and_buckets_spread() {
        assert_eq!(bucket(Some(b"key-1"), 0, 0), bucket(Some(b"key-1"), 3, 99));
        let mut counts = [0u32; 100];
        for n in 0..100_000 {
            counts[bucket(Some(format!("key-{n}").as_bytes()), 0, 0) as usize] += 1;
        }
        // 1,000 expected per bucket; FNV-1a spreads these keys within 20%.
        assert!(
            counts.iter().all(|&count| (800..1200).contains(&count)),
            "{counts:?}"
        );
        let unkeyed: Vec<u64> = (0..1000).map(|offset| bucket(None, 1, offset)).collect();
        assert!(unkeyed.iter().any(|&b| b < 10) && unkeyed.iter().any(|&b| b >= 90));
        assert_eq!(bucket(None, 1, 7), bucket(Some(b""), 1, 7));
    }

    fn counts(messages: u64, dead_letters: u64) -> VersionCounts {
        VersionCounts {
            messages,
            dead_letters,
            ..VersionCounts::default()
        }
    }

    #[test]
    fn a_canary_is_judged_only_after_its_minimum_and_then_by_the_margin() {
        let rules = CanaryRules {
            margin_percent: 5.0,
            min_messages: 100,
            promote_after_messages: 1_000,
            promote_after: Some(Duration::from_secs(60)),
        };
        let soon = Duration::from_secs(1);
        // Every message failed, but too few to judge.
        assert_eq!(judge(&rules, &counts(99, 99), &counts(500, 0), soon), None);
        assert!(matches!(
            judge(&rules, &counts(100, 100), &counts(500, 0), soon),
            Some(Verdict::RollBack(_))
        ));
        // 10% against 6%: within five points.
        assert_eq!(
            judge(&rules, &counts(100, 10), &counts(500, 30), soon),
            None
        );
        // 12% against 6%: over.
        assert!(matches!(
            judge(&rules, &counts(100, 12), &counts(500, 30), soon),
            Some(Verdict::RollBack(_))
        ));
        assert!(matches!(
            judge(&rules, &counts(1_000, 0), &counts(500, 0), soon),
            Some(Verdict::Promote(_))
        ));
        assert!(matches!(
            judge(
                &rules,
                &counts(100, 0),
                &counts(500, 0),
                Duration::from_secs(60)
            ),
            Some(Verdict::Promote(_))
        ));
        // Time alone promotes nothing before the minimum.
        assert_eq!(
            judge(
                &rules,
                &counts(10, 0),
                &counts(500, 0),
                Duration::from_secs(600)
            ),
            None
        );
    }

    #[test]
    fn counts_give_rates_and_the_dead_letter_rate_of_nothing_is_zero() {
        let tally = VersionTally::default();
        assert_eq!(tally.counts().dead_letter_rate(), 0.0);
        tally.handled(2);
        tally.dead_lettered(ErrorKind::Trap);
        tally.dead_lettered(ErrorKind::Trap);
        tally.handled(1);
        let counts = tally.counts();
        assert_eq!(
            (counts.messages, counts.outputs, counts.dead_letters),
            (4, 3, 2)
        );
        assert_eq!(counts.dead_letters_by_kind.get("trap"), Some(&2));
        assert_eq!(counts.dead_letter_rate(), 0.5);
    }
}
