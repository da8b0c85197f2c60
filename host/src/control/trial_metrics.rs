//! The Prometheus series of running canaries and shadows, per version:
//! each side's messages, outputs, dead letters by kind and mean call time,
//! and a shadow's agreements and differences. They are drawn from the
//! registry's trials ([`HandlerControl::trials`](super::handlers::HandlerControl::trials))
//! when `/metrics` is read, so they exist only while a trial runs and cost
//! the message path nothing beyond its counters.

use super::handlers::HandlerTrials;
use crate::handlers::canary::VersionCounts;
use std::fmt::Write as _;

/// The trial series of `handlers`, in Prometheus text format (empty when
/// no canary or shadow runs).
pub fn encode(handlers: &[HandlerTrials]) -> String {
    let mut messages = Vec::new();
    let mut outputs = Vec::new();
    let mut dead_letters = Vec::new();
    let mut mean_call = Vec::new();
    let mut agreements = Vec::new();
    let mut differences = Vec::new();
    for info in handlers {
        if let Some(canary) = &info.canary {
            let sides = [
                ("stable", &canary.stable_version, &canary.stable),
                ("canary", &canary.version, &canary.canary),
            ];
            for (side, version, counts) in sides {
                let labels = format!(
                    "handler=\"{}\",side=\"{side}\",version=\"{version}\"",
                    label(&info.name)
                );
                side_series(
                    &labels,
                    counts,
                    [
                        &mut messages,
                        &mut outputs,
                        &mut dead_letters,
                        &mut mean_call,
                    ],
                );
            }
        }
        if let Some(shadow) = &info.shadow {
            let labels = format!(
                "handler=\"{}\",version=\"{}\"",
                label(&info.name),
                shadow.version
            );
            agreements.push(format!("{{{labels}}} {}", shadow.agreements));
            differences.push(format!("{{{labels}}} {}", shadow.differences));
        }
    }
    let mut text = String::new();
    let families = [
        (
            "stagehost_canary_messages",
            "Messages each side of a running canary handled since it started.",
            messages,
        ),
        (
            "stagehost_canary_outputs",
            "Records each side of a running canary produced since it started.",
            outputs,
        ),
        (
            "stagehost_canary_dead_letters",
            "Messages each side of a running canary dead-lettered since it started, by kind.",
            dead_letters,
        ),
        (
            "stagehost_canary_call_seconds_mean",
            "The mean wall time of one handler call on each side of a running canary.",
            mean_call,
        ),
        (
            "stagehost_shadow_agreements",
            "Messages on which a running shadow made what the serving version made.",
            agreements,
        ),
        (
            "stagehost_shadow_differences",
            "Messages on which a running shadow differed from the serving version.",
            differences,
        ),
    ];
    for (name, help, samples) in families {
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for sample in samples {
            let _ = writeln!(text, "{name}{sample}");
        }
    }
    text
}

/// One side's samples: messages, outputs, dead letters (one per kind, a
/// zero `kind=""` when there are none) and the mean call time.
fn side_series(labels: &str, counts: &VersionCounts, into: [&mut Vec<String>; 4]) {
    let [messages, outputs, dead_letters, mean_call] = into;
    messages.push(format!("{{{labels}}} {}", counts.messages));
    outputs.push(format!("{{{labels}}} {}", counts.outputs));
    if counts.dead_letters_by_kind.is_empty() {
        dead_letters.push(format!("{{{labels},kind=\"\"}} 0"));
    }
    for (kind, count) in &counts.dead_letters_by_kind {
        dead_letters.push(format!("{{{labels},kind=\"{kind}\"}} {count}"));
    }
    if let Some(ms) = counts.mean_call_ms {
        mean_call.push(format!("{{{labels}}} {}", ms / 1000.0));
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::shadow::ShadowReport;

    #[test]
    fn nothing_runs_nothing_is_written_and_a_shadow_is_two_series() {
        let mut info = HandlerTrials {
            name: "add".into(),
            canary: None,
            shadow: None,
        };
        assert_eq!(encode(std::slice::from_ref(&info)), "");
        info.shadow = Some(ShadowReport {
            version: "v2".into(),
            serving_version: "v1".into(),
            started_at: "t".into(),
            agreements: 7,
            differences: 3,
            recent_differences: Vec::new(),
            outcome: None,
        });
        let text = encode(&[info]);
        assert!(
            text.contains("stagehost_shadow_agreements{handler=\"add\",version=\"v2\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("stagehost_shadow_differences{handler=\"add\",version=\"v2\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("canary"), "{text}");
    }
}
