//! `host test HANDLER.wasm FIXTURES`: runs a handler on the cases of a
//! fixture file in the real sandbox, without a broker, and says for each
//! whether it got the expected answer (like `smdk test` or Kafka Streams'
//! TopologyTestDriver). The cases run through the same runner as a
//! config's `self_test` ([`crate::handlers::self_test::run_cases`]).
//!
//! A fixture file is JSON lines; each non-empty line that does not start
//! with `#` is one case:
//!
//! ```text
//! {"name": "sum", "json": {"x": 5, "y": 2}, "outputs": [{"json": {"x": 5, "y": 2, "result": 7}}]}
//! {"value": "not json", "key": "k", "headers": [["h", "v"]], "error": "invalid-input"}
//! ```
//!
//! A case's message is `json` (any JSON, sent as its text) or `value` (text
//! as is), with an optional `key`, `headers` (`[key, value]` pairs) and
//! `timestamp` (ms since the Unix epoch); it expects `outputs` (each `json`
//! or `value`, and `key`, `topic`, `headers` when they count) or an `error`
//! kind. A handler that imports `state` shares one in-memory state across
//! the cases of a file, so later cases see what earlier ones stored; a case
//! may also set entries before it runs, `"state": {KEY: VALUE}`, and name
//! the entries it must leave, `"expect_state": {KEY: VALUE}` (`null`:
//! absent), the values as JSON:
//!
//! ```text
//! {"key": "alice", "json": {"amount": 5}, "state": {"alice": {"total": 7, "count": 2}}, "outputs": [{"json": {"account": "alice", "amount": 5, "total": 12, "count": 3}}], "expect_state": {"alice": {"total": 12, "count": 3}}}
//! ```

use crate::config::{Limits, LoadedConfig};
use crate::handlers::self_test::{
    CALL_ERROR_KINDS, CaseResult, ExpectedOutput, ExpectedValue, RunOptions, TestCase, TestExpect,
    run_cases, state_without_import,
};
use crate::handlers::{ErrorKind, HandlerSpec, Sandbox, run_guest};
use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What `host test` was asked to do.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The component.
    pub wasm: PathBuf,
    /// The fixture file.
    pub fixtures: PathBuf,
    /// A config whose handler's limits and settings apply.
    pub config: Option<PathBuf>,
    /// That handler's name.
    pub handler: Option<String>,
    /// Settings for `init`, after the config's (a repeated key replaces).
    pub settings: Vec<(String, String)>,
    /// One JSON object per case instead of text.
    pub json: bool,
}

/// How many cases passed and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Cases that got the expected answer.
    pub passed: usize,
    /// Cases that did not.
    pub failed: usize,
}

/// `K=V` of `--setting`.
pub fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}`: expected KEY=VALUE")),
    }
}

/// Runs the fixture file's cases on the component and prints one line (or
/// JSON object) per case and a summary. Blocks: call it off the async
/// context.
pub fn test(options: &TestOptions) -> anyhow::Result<Summary> {
    let cases = parse_fixtures(&options.fixtures)?;
    let (name, limits, mut settings) = match (&options.config, &options.handler) {
        (Some(config), Some(handler)) => {
            let loaded = LoadedConfig::load(config)?;
            let plan = loaded.pipeline.handlers.get(handler).with_context(|| {
                let names: Vec<&str> = loaded
                    .pipeline
                    .handlers
                    .keys()
                    .map(String::as_str)
                    .collect();
                format!(
                    "{} has no handler `{handler}` (it has: {})",
                    config.display(),
                    names.join(", ")
                )
            })?;
            (handler.clone(), plan.limits, plan.settings.clone())
        }
        (None, None) => {
            let name = options
                .wasm
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| "handler".into());
            (name, Limits::default(), Vec::new())
        }
        (Some(_), None) => anyhow::bail!("--config needs --handler NAME: whose limits to take"),
        (None, Some(_)) => anyhow::bail!("--handler needs --config CONFIG: where the handler is"),
    };
    for (key, value) in &options.settings {
        match settings.iter_mut().find(|(known, _)| known == key) {
            Some(setting) => setting.1 = value.clone(),
            None => settings.push((key.clone(), value.clone())),
        }
    }
    let bytes = std::fs::read(&options.wasm)
        .with_context(|| format!("reading {}", options.wasm.display()))?;
    let sandbox = Sandbox::new(limits.fuel.is_some())?;
    let component = sandbox.load(
        HandlerSpec {
            name,
            source: options.wasm.display().to_string(),
            limits,
            settings,
        },
        &bytes,
    )?;
    if let Some(complaint) = state_without_import(&component, &cases) {
        anyhow::bail!("{}: {complaint}", options.fixtures.display());
    }
    let run = RunOptions {
        topic: "test",
        stop_at_first_failure: false,
        self_test: false,
    };
    let json_lines = options.json;
    let results = run_guest(run_cases(&component, &cases, run, |case, result| {
        let text = if json_lines {
            format!("{}\n", case_json(case, result))
        } else {
            case_text(case, result)
        };
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }))
    .map_err(|failure| anyhow::anyhow!("handler `{}`: {failure}", component.name()))?;
    let passed = results.iter().filter(|result| result.passed).count();
    let summary = Summary {
        passed,
        failed: results.len() - passed,
    };
    let line = format!("{} passed, {} failed", summary.passed, summary.failed);
    match json_lines {
        // stdout stays one JSON object per line.
        true => eprintln!("{line}"),
        false => println!("{line}"),
    }
    Ok(summary)
}

/// A case's line, and the diff of what it expected and got when it failed.
pub fn case_text(case: &TestCase, result: &CaseResult) -> String {
    let status = if result.passed { "ok  " } else { "FAIL" };
    let mut text = format!("{status} {} {}\n", result.number, case_label(case));
    if !result.passed {
        let expected = pretty(&case.expected_json());
        let got = pretty(&case.got_json(result));
        text.push_str("    --- expected\n    +++ got\n");
        for line in diff_lines(&expected, &got) {
            text.push_str("    ");
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// A case as one JSON object (`--json`).
pub fn case_json(case: &TestCase, result: &CaseResult) -> Value {
    json!({
        "case": result.number,
        "name": case.name,
        "passed": result.passed,
        "expected": case.expected_json(),
        "got": case.got_json(result),
        "duration_ms": result.elapsed.as_secs_f64() * 1000.0,
    })
}

/// The case's name, or else the start of its message.
fn case_label(case: &TestCase) -> String {
    if let Some(name) = &case.name {
        return name.clone();
    }
    let value = String::from_utf8_lossy(&case.value);
    let mut label: String = value.chars().take(60).collect();
    if value.chars().nth(60).is_some() {
        label.push('…');
    }
    label
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `expected` and `got` line by line: common lines with two spaces, the
/// expected's own with `- `, the answer's own with `+ ` (a longest common
/// subsequence of lines).
fn diff_lines(expected: &str, got: &str) -> Vec<String> {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut lines = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || common[i][j + 1] >= common[i + 1][j]) {
            lines.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            lines.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    // Within a changed run, the expected lines first.
    let mut ordered = Vec::with_capacity(lines.len());
    let mut added = Vec::new();
    for line in lines {
        match line.as_bytes().first() {
            Some(b'+') => added.push(line),
            Some(b'-') => ordered.push(line),
            _ => {
                ordered.append(&mut added);
                ordered.push(line);
            }
        }
    }
    ordered.append(&mut added);
    ordered
}

/// One line of a fixture file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureCase {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    json: Option<Value>,
    value: Option<String>,
    key: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    timestamp: Option<i64>,
    #[serde(default)]
    state: BTreeMap<String, Value>,
    #[serde(default)]
    expect_state: BTreeMap<String, Value>,
    outputs: Option<Vec<FixtureOutput>>,
    error: Option<String>,
}

/// One expected output, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureOutput {
    #[serde(default, deserialize_with = "present")]
    json: Option<Value>,
    value: Option<String>,
    #[serde(default, deserialize_with = "present")]
    key: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    topic: Option<Option<String>>,
    headers: Option<Vec<(String, String)>>,
}

/// A field that is there, even as `null`, is `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Reads a fixture file's cases; an error names the file and the line.
pub fn parse_fixtures(path: &Path) -> anyhow::Result<Vec<TestCase>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cases = parse_fixture_text(&text)
        .map_err(|(line, reason)| anyhow::anyhow!("{}:{line}: {reason}", path.display()))?;
    anyhow::ensure!(!cases.is_empty(), "{} has no test cases", path.display());
    Ok(cases)
}

/// The cases of fixture text, or the first bad line's number (from 1) and
/// what is wrong with it.
pub fn parse_fixture_text(text: &str) -> Result<Vec<TestCase>, (usize, String)> {
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = index + 1;
        let written: FixtureCase = serde_json::from_str(line).map_err(|err| {
            let reason = err.to_string();
            // Each line is a document of its own: its column is what counts.
            let reason = reason
                .rsplit_once(" at line ")
                .map_or(reason.as_str(), |(reason, _)| reason);
            (number, format!("column {}: {reason}", err.column()))
        })?;
        cases.push(fixture_case(written).map_err(|reason| (number, reason))?);
    }
    Ok(cases)
}

fn fixture_case(written: FixtureCase) -> Result<TestCase, String> {
    let value = match (written.json, written.value) {
        (Some(json), None) => json.to_string().into_bytes(),
        (None, Some(text)) => text.into_bytes(),
        (None, None) => return Err("a case needs its message: `json` or `value`".into()),
        (Some(_), Some(_)) => return Err("a case has `json` or `value`, not both".into()),
    };
    let expect = match (written.outputs, written.error) {
        (Some(outputs), None) => TestExpect::Outputs(
            outputs
                .into_iter()
                .enumerate()
                .map(|(index, output)| {
                    expected_output(output).map_err(|e| format!("outputs[{index}]: {e}"))
                })
                .collect::<Result<_, _>>()?,
        ),
        (None, Some(kind)) => TestExpect::Error(
            ErrorKind::parse(&kind)
                .filter(|kind| CALL_ERROR_KINDS.contains(kind))
                .ok_or_else(|| {
                    let kinds: Vec<&str> = CALL_ERROR_KINDS.iter().map(|k| k.as_str()).collect();
                    format!(
                        "`error`: `{kind}` is not an error a handler call can end with ({})",
                        kinds.join(", ")
                    )
                })?,
        ),
        (None, None) => {
            return Err(
                "a case needs its expectation: `outputs` (a list, empty when filtered out) or `error`"
                    .into(),
            );
        }
        (Some(_), Some(_)) => return Err("a case expects `outputs` or an `error`, not both".into()),
    };
    Ok(TestCase {
        name: written.name,
        key: written.key.map(String::into_bytes),
        value,
        headers: headers(written.headers),
        timestamp: written.timestamp,
        state: written
            .state
            .into_iter()
            .map(|(key, value)| (key.into_bytes(), value))
            .collect(),
        expect_state: written
            .expect_state
            .into_iter()
            .map(|(key, value)| (key.into_bytes(), Some(value).filter(|v| !v.is_null())))
            .collect(),
        expect,
    })
}

fn expected_output(written: FixtureOutput) -> Result<ExpectedOutput, String> {
    let value = match (written.json, written.value) {
        (Some(json), None) => ExpectedValue::Json(json),
        (None, Some(text)) => ExpectedValue::Bytes(text.into_bytes()),
        (None, None) => return Err("an output needs `json` or `value`".into()),
        (Some(_), Some(_)) => return Err("an output has `json` or `value`, not both".into()),
    };
    Ok(ExpectedOutput {
        value,
        key: written.key.map(|key| key.map(String::into_bytes)),
        topic: written.topic,
        headers: written.headers.map(headers),
    })
}

fn headers(written: Vec<(String, String)>) -> Vec<(String, Vec<u8>)> {
    written
        .into_iter()
        .map(|(key, value)| (key, value.into_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_file_parses_into_cases() {
        let text = r#"
# a comment, then a blank line

{"name": "sum", "json": {"x": 5, "y": 2}, "outputs": [{"json": {"x": 5, "y": 2, "result": 7}}]}
{"value": "five", "key": "k", "headers": [["h", "v"]], "error": "invalid-input"}
{"json": null, "outputs": [{"value": "x", "key": null, "topic": "t", "headers": []}, {"json": null}]}
{"json": 1, "outputs": []}
"#;
        let cases = parse_fixture_text(text).unwrap();
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[0].name.as_deref(), Some("sum"));
        assert_eq!(cases[0].value, br#"{"x":5,"y":2}"#);
        assert_eq!(
            cases[0].expect,
            TestExpect::Outputs(vec![ExpectedOutput::value(ExpectedValue::Json(
                json!({"x": 5, "y": 2, "result": 7})
            ))])
        );
        assert_eq!(cases[1].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(cases[1].headers, vec![("h".to_string(), b"v".to_vec())]);
        assert_eq!(cases[1].expect, TestExpect::Error(ErrorKind::InvalidInput));
        assert_eq!(cases[2].value, b"null");
        assert_eq!(
            cases[2].expect,
            TestExpect::Outputs(vec![
                ExpectedOutput {
                    value: ExpectedValue::Bytes(b"x".to_vec()),
                    key: Some(None),
                    topic: Some(Some("t".into())),
                    headers: Some(Vec::new()),
                },
                ExpectedOutput::value(ExpectedValue::Json(Value::Null)),
            ])
        );
        assert_eq!(cases[3].expect, TestExpect::Outputs(Vec::new()));
    }

    #[test]
    fn a_case_may_start_from_state_and_expect_state() {
        let text = r#"{"key": "a", "json": 1, "state": {"b": {"n": 1}, "a": "x"}, "outputs": [], "expect_state": {"a": {"n": 2}, "c": null}}"#;
        let cases = parse_fixture_text(text).unwrap();
        assert_eq!(
            cases[0].state,
            vec![
                (b"a".to_vec(), json!("x")),
                (b"b".to_vec(), json!({"n": 1}))
            ]
        );
        assert_eq!(
            cases[0].expect_state,
            vec![
                (b"a".to_vec(), Some(json!({"n": 2}))),
                (b"c".to_vec(), None)
            ]
        );
        let plain = parse_fixture_text(r#"{"json": 1, "outputs": []}"#).unwrap();
        assert!(!plain[0].uses_state());
        let (_, reason) =
            parse_fixture_text(r#"{"json": 1, "outputs": [], "state": [1]}"#).unwrap_err();
        assert!(reason.contains("expected a map"), "{reason}");
    }

    #[test]
    fn a_bad_line_is_named_with_the_reason() {
        let bad = |text: &str| parse_fixture_text(text).unwrap_err();
        let (line, reason) =
            bad("# ok\n{\"json\": 1, \"outputs\": []}\n{\"json\": 1, \"outptus\": []}\n");
        assert_eq!(line, 3);
        assert!(reason.contains("unknown field `outptus`"), "{reason}");
        let (line, reason) = bad("{\"json\": 1, \"outputs\": [}\n");
        assert_eq!(line, 1);
        assert!(reason.starts_with("column "), "{reason}");
        assert!(!reason.contains("at line"), "{reason}");
        let (_, reason) = bad(r#"{"outputs": []}"#);
        assert!(reason.contains("`json` or `value`"), "{reason}");
        let (_, reason) = bad(r#"{"json": 1}"#);
        assert!(reason.contains("`outputs`"), "{reason}");
        let (_, reason) = bad(r#"{"json": 1, "error": "unknown-route"}"#);
        assert!(
            reason.contains("`unknown-route` is not an error"),
            "{reason}"
        );
        let (_, reason) = bad(r#"{"json": 1, "outputs": [{"key": "k"}]}"#);
        assert!(reason.starts_with("outputs[0]: "), "{reason}");
    }

    #[test]
    fn a_diff_shows_what_was_expected_and_what_came() {
        let lines = diff_lines(
            "{\n  \"a\": 1,\n  \"b\": 2\n}",
            "{\n  \"a\": 1,\n  \"b\": 3\n}",
        );
        assert_eq!(
            lines,
            [
                "  {",
                "    \"a\": 1,",
                "-   \"b\": 2",
                "+   \"b\": 3",
                "  }"
            ]
        );
    }

    #[test]
    fn settings_are_key_equals_value() {
        assert_eq!(parse_setting("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_setting("=b").is_err());
        assert!(parse_setting("ab").is_err());
    }
}
