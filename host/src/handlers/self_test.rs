//! The checks every new version passes before it may serve: compiled,
//! linked and initialised ([`Sandbox::load`]), then its self-test cases run
//! in an instance, each within the handler's limits.
//!
//! One runner, [`run_cases`], runs test cases for the config's `self_test`
//! (through [`self_test`]) and for `host test` (fixture files): a
//! [`TestCase`] is a message and the answer it must get; the runner reuses
//! one instance from case to case, as the message path does, and takes a
//! fresh one after a case that poisons it.
//!
//! A case for a handler that imports `state` may set entries before it runs
//! ([`TestCase::state`]) and name the entries it must leave
//! ([`TestCase::expect_state`]); the values are JSON, stored as their text.

use super::bindings::{Header, Message, Output};
use super::failure::{ErrorKind, HandlerFailure};
use super::sandbox::{
    HandlerComponent, HandlerInstance, HandlerSpec, LoadError, Sandbox, run_guest,
};
use super::state::{MemoryState, StateAccess as _};
use crate::config::{Expect, SelfTestCase};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kinds a handler call can end with ([`HandlerFailure::kind`]): the
/// errors a test case may expect.
pub const CALL_ERROR_KINDS: [ErrorKind; 7] = [
    ErrorKind::InvalidInput,
    ErrorKind::Transient,
    ErrorKind::Trap,
    ErrorKind::Timeout,
    ErrorKind::MemoryLimit,
    ErrorKind::FuelExhausted,
    ErrorKind::InstantiateFailed,
];

/// One test case: a message and the answer the handler must give it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// What it checks, for the report.
    pub name: Option<String>,
    /// The message's key.
    pub key: Option<Vec<u8>>,
    /// The message's value.
    pub value: Vec<u8>,
    /// The message's headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The message's timestamp, in ms since the Unix epoch (also the clock
    /// a stateful handler's entries expire by).
    pub timestamp: Option<i64>,
    /// State entries set before the call (key, JSON value), over what the
    /// cases before left.
    pub state: Vec<(Vec<u8>, Value)>,
    /// State entries the case must leave (key, JSON value; `None`: absent),
    /// compared after the call.
    pub expect_state: Vec<(Vec<u8>, Option<Value>)>,
    /// The answer it must get.
    pub expect: TestExpect,
}

/// The entries a case's `expect_state` names, as the case left them (key,
/// the stored bytes; `None`: absent).
pub type StateSeen = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What a test case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum TestExpect {
    /// Exactly these outputs, in order (none: the message is filtered out).
    Outputs(Vec<ExpectedOutput>),
    /// A failure of this kind (one of [`CALL_ERROR_KINDS`]).
    Error(ErrorKind),
}

/// One expected output. The key, topic and headers are compared only when
/// the expectation names them.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedOutput {
    /// Its value.
    pub value: ExpectedValue,
    /// The key it is produced with (the output's, or else the input's);
    /// `Some(None)`: none.
    pub key: Option<Option<Vec<u8>>>,
    /// The topic or branch it names; `Some(None)`: none (the stage's output).
    pub topic: Option<Option<String>>,
    /// Its headers, in order.
    pub headers: Option<Vec<(String, Vec<u8>)>>,
}

impl ExpectedOutput {
    /// An output with this value, whatever its key, topic and headers.
    pub fn value(value: ExpectedValue) -> Self {
        Self {
            value,
            key: None,
            topic: None,
            headers: None,
        }
    }
}

/// How an output's value is compared.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedValue {
    /// As JSON: the value must parse and equal this.
    Json(Value),
    /// Byte for byte.
    Bytes(Vec<u8>),
}

impl From<&SelfTestCase> for TestCase {
    fn from(case: &SelfTestCase) -> Self {
        let expect = match &case.expect {
            Expect::Output(output) => TestExpect::Outputs(vec![ExpectedOutput::value(
                ExpectedValue::Json(output.clone()),
            )]),
            Expect::Error(kind) => TestExpect::Error(
                ErrorKind::parse(kind.as_str()).expect("a self-test error is a dead-letter kind"),
            ),
        };
        TestCase {
            name: None,
            key: case.key.clone().map(String::into_bytes),
            value: case.input.to_string().into_bytes(),
            headers: Vec::new(),
            timestamp: None,
            state: case
                .state
                .iter()
                .map(|(key, value)| (key.clone().into_bytes(), value.clone()))
                .collect(),
            expect_state: case
                .expect_state
                .iter()
                .map(|(key, value)| (key.clone().into_bytes(), value.clone()))
                .collect(),
            expect,
        }
    }
}

impl TestCase {
    /// The message the handler gets for the case at `index` (from 0).
    fn message(&self, topic: &str, index: usize) -> Message {
        Message {
            topic: topic.into(),
            partition: 0,
            offset: index as i64,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            timestamp: self.timestamp,
        }
    }

    /// Whether the case sets or checks state.
    pub fn uses_state(&self) -> bool {
        !self.state.is_empty() || !self.expect_state.is_empty()
    }

    /// The expectation as JSON, in the fixture format: `{"outputs": [...]}`
    /// or `{"error": KIND}`, with `"state": {KEY: VALUE|null}` when the case
    /// names entries it must leave.
    pub fn expected_json(&self) -> Value {
        let mut expected = self.expected_answer_json();
        if !self.expect_state.is_empty() {
            let entries = self
                .expect_state
                .iter()
                .map(|(key, value)| (text(key), value.clone().unwrap_or(Value::Null)))
                .collect();
            expected["state"] = Value::Object(entries);
        }
        expected
    }

    /// What a case got as JSON, shaped like [`TestCase::expected_json`]: the
    /// answer ([`TestCase::answer_json`]) and, when the case names entries
    /// it must leave, those entries as they are after it (as JSON when they
    /// parse, else as text).
    pub fn got_json(&self, result: &CaseResult) -> Value {
        let mut got = self.answer_json(&result.answer);
        if !self.expect_state.is_empty() {
            let entries = result
                .state
                .iter()
                .map(|(key, value)| {
                    let shown = value.as_deref().map_or(Value::Null, |bytes| {
                        serde_json::from_slice(bytes).unwrap_or_else(|_| text(bytes).into())
                    });
                    (text(key), shown)
                })
                .collect();
            got["state"] = Value::Object(entries);
        }
        got
    }

    /// Whether the entries the case left are the ones it expects.
    pub fn state_matches(&self, seen: &StateSeen) -> bool {
        self.expect_state.len() == seen.len()
            && self
                .expect_state
                .iter()
                .zip(seen)
                .all(|((key, expected), (seen_key, value))| {
                    key == seen_key
                        && match (expected, value) {
                            (None, None) => true,
                            (Some(expected), Some(bytes)) => serde_json::from_slice::<Value>(bytes)
                                .is_ok_and(|got| &got == expected),
                            _ => false,
                        }
                })
    }

    fn expected_answer_json(&self) -> Value {
        match &self.expect {
            TestExpect::Error(kind) => json!({"error": kind.as_str()}),
            TestExpect::Outputs(outputs) => {
                let outputs = outputs
                    .iter()
                    .map(|output| {
                        let mut shown = serde_json::Map::new();
                        match &output.value {
                            ExpectedValue::Json(value) => {
                                shown.insert("json".into(), value.clone())
                            }
                            ExpectedValue::Bytes(bytes) => {
                                shown.insert("value".into(), text(bytes).into())
                            }
                        };
                        if let Some(key) = &output.key {
                            shown.insert("key".into(), key.as_deref().map(text).into());
                        }
                        if let Some(topic) = &output.topic {
                            shown.insert("topic".into(), topic.clone().into());
                        }
                        if let Some(headers) = &output.headers {
                            shown.insert("headers".into(), headers_json(headers));
                        }
                        Value::Object(shown)
                    })
                    .collect::<Vec<_>>();
                json!({ "outputs": outputs })
            }
        }
    }

    /// The answer as JSON, shaped like the expectation (so that the two
    /// compare line by line): each output as `json` when the expectation
    /// compares as JSON and the value parses, else as `value`; its key,
    /// topic and headers when the expectation names them. A failure is
    /// `{"error": KIND, "reason": ...}`.
    pub fn answer_json(&self, answer: &Result<Vec<Output>, HandlerFailure>) -> Value {
        let outputs = match answer {
            Err(failure) => {
                return json!({"error": failure.kind().as_str(), "reason": failure.to_string()});
            }
            Ok(outputs) => outputs,
        };
        let expected = match &self.expect {
            TestExpect::Outputs(expected) => expected.as_slice(),
            TestExpect::Error(_) => &[],
        };
        let outputs = outputs
            .iter()
            .enumerate()
            .map(|(index, output)| {
                let like = expected.get(index).or(expected.first());
                let mut shown = serde_json::Map::new();
                let as_json = !matches!(
                    like,
                    Some(ExpectedOutput {
                        value: ExpectedValue::Bytes(_),
                        ..
                    })
                );
                match serde_json::from_slice::<Value>(&output.value) {
                    Ok(value) if as_json => shown.insert("json".into(), value),
                    _ => shown.insert("value".into(), text(&output.value).into()),
                };
                if like.is_some_and(|like| like.key.is_some()) {
                    let key = self.produced_key(output);
                    shown.insert("key".into(), key.map(text).into());
                }
                if like.is_some_and(|like| like.topic.is_some()) {
                    shown.insert("topic".into(), output.topic.clone().into());
                }
                if like.is_some_and(|like| like.headers.is_some()) {
                    let headers: Vec<(String, Vec<u8>)> = output
                        .headers
                        .iter()
                        .map(|header| (header.key.clone(), header.value.clone()))
                        .collect();
                    shown.insert("headers".into(), headers_json(&headers));
                }
                Value::Object(shown)
            })
            .collect::<Vec<_>>();
        json!({ "outputs": outputs })
    }

    /// The key an output is produced with: its own, or else the input's.
    fn produced_key<'a>(&'a self, output: &'a Output) -> Option<&'a [u8]> {
        output.key.as_deref().or(self.key.as_deref())
    }

    /// Whether `answer` is what the case expects.
    pub fn accepts(&self, answer: &Result<Vec<Output>, HandlerFailure>) -> bool {
        match (&self.expect, answer) {
            (TestExpect::Error(kind), Err(failure)) => failure.kind() == *kind,
            (TestExpect::Outputs(expected), Ok(outputs)) => {
                expected.len() == outputs.len()
                    && expected
                        .iter()
                        .zip(outputs)
                        .all(|(expected, output)| self.output_matches(expected, output))
            }
            _ => false,
        }
    }

    fn output_matches(&self, expected: &ExpectedOutput, output: &Output) -> bool {
        let value = match &expected.value {
            ExpectedValue::Json(value) => {
                serde_json::from_slice::<Value>(&output.value).is_ok_and(|got| &got == value)
            }
            ExpectedValue::Bytes(bytes) => bytes == &output.value,
        };
        let key = expected
            .key
            .as_ref()
            .is_none_or(|key| key.as_deref() == self.produced_key(output));
        let topic = expected
            .topic
            .as_ref()
            .is_none_or(|topic| topic == &output.topic);
        let headers = expected.headers.as_ref().is_none_or(|headers| {
            headers.len() == output.headers.len()
                && headers
                    .iter()
                    .zip(&output.headers)
                    .all(|((key, value), got)| key == &got.key && value == &got.value)
        });
        value && key && topic && headers
    }
}

/// Bytes as text, for the report (invalid UTF-8 replaced).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn headers_json(headers: &[(String, Vec<u8>)]) -> Value {
    headers
        .iter()
        .map(|(key, value)| json!([key, text(value)]))
        .collect()
}

/// How [`run_cases`] runs.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    /// The topic the messages seem to come from.
    pub topic: &'a str,
    /// Stop after the first case that fails.
    pub stop_at_first_failure: bool,
    /// Tag the instances' guest output as a self-test's (logged at debug level).
    pub self_test: bool,
}

/// What one case got.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's number, from 1.
    pub number: usize,
    /// Whether the answer was the expected one (and the state the expected
    /// state).
    pub passed: bool,
    /// What the handler answered.
    pub answer: Result<Vec<Output>, HandlerFailure>,
    /// The entries the case's `expect_state` names, as the case left them.
    pub state: StateSeen,
    /// How long the call took (with a fresh instance's instantiation).
    pub elapsed: Duration,
}

/// Runs `cases` in order, in one instance of `component` (a fresh one
/// after a case whose failure poisons it), and reports each result to
/// `report` as it comes. Fails only when the first instance cannot be
/// created; a later instantiation failure is that case's answer.
///
/// A component that imports `state` is lent one [`MemoryState`] for all
/// the cases, so that a case sees what the cases before it stored; its
/// clock (`now_ms`) is the case's timestamp, or 0. A case's `state` entries
/// are set in it before the call (they stay, whatever the call does); a
/// call that fails leaves the state as it was, as a dead-lettered message
/// does on a stage. The entries of `expect_state` are read after the call.
/// A component that does not import `state` ignores a case's state: the
/// callers refuse such cases first ([`state_without_import`]).
pub async fn run_cases(
    component: &Arc<HandlerComponent>,
    cases: &[TestCase],
    options: RunOptions<'_>,
    mut report: impl FnMut(&TestCase, &CaseResult) + Send,
) -> Result<Vec<CaseResult>, HandlerFailure> {
    let fresh = || async {
        let instance = component.instantiate().await?;
        if options.self_test {
            instance.for_self_test();
        }
        Ok::<HandlerInstance, HandlerFailure>(instance)
    };
    let mut instance = Some(fresh().await?);
    let mut state = component.uses_state().then(MemoryState::default);
    let mut results = Vec::with_capacity(cases.len());
    for (index, case) in cases.iter().enumerate() {
        let started = Instant::now();
        let current = match instance.take() {
            Some(current) => Ok(current),
            None => fresh().await,
        };
        let answer = match current {
            Ok(mut current) => {
                if let Some(state) = &mut state {
                    for (key, value) in &case.state {
                        state.set(key.clone(), value.to_string().into_bytes(), None);
                    }
                    let mut lent = state.clone();
                    lent.now_ms = case.timestamp.map_or(0, |ms| ms.max(0) as u64);
                    current.lend_state(Box::new(lent));
                }
                let answer = current.handle(&case.message(options.topic, index)).await;
                let after = current
                    .take_state()
                    .and_then(|lent| lent.into_any().downcast::<MemoryState>().ok());
                if let (Ok(_), Some(after)) = (&answer, after) {
                    state = Some(*after);
                }
                if !answer.as_ref().is_err_and(HandlerFailure::poisons_instance) {
                    instance = Some(current);
                }
                answer
            }
            Err(failure) => Err(failure),
        };
        let elapsed = started.elapsed();
        let seen: StateSeen = case
            .expect_state
            .iter()
            .map(|(key, _)| {
                let value = state.as_mut().and_then(|state| {
                    state.now_ms = case.timestamp.map_or(0, |ms| ms.max(0) as u64);
                    state.get(key)
                });
                (key.clone(), value)
            })
            .collect();
        let result = CaseResult {
            number: index + 1,
            passed: case.accepts(&answer) && case.state_matches(&seen),
            answer,
            state: seen,
            elapsed,
        };
        report(case, &result);
        let stop = !result.passed && options.stop_at_first_failure;
        results.push(result);
        if stop {
            break;
        }
    }
    Ok(results)
}

/// The complaint about cases that set or check state for a component that
/// does not import `state` (their state would be ignored), naming the first
/// such case (from 1); `None` when there is none.
pub fn state_without_import(component: &HandlerComponent, cases: &[TestCase]) -> Option<String> {
    if component.uses_state() {
        return None;
    }
    let index = cases.iter().position(TestCase::uses_state)?;
    Some(format!(
        "case {} has `state` or `expect_state`, but handler `{}` does not import `state`",
        index + 1,
        component.name()
    ))
}

/// Compiles a candidate and runs its self-test.
pub fn validate(
    sandbox: &Arc<Sandbox>,
    spec: HandlerSpec,
    bytes: &[u8],
    cases: &[SelfTestCase],
) -> Result<Arc<HandlerComponent>, String> {
    let component = sandbox
        .load(spec, bytes)
        .map_err(|err: LoadError| err.to_string())?;
    self_test(&component, cases)?;
    Ok(component)
}

/// Runs the self-test cases in an instance of `component`, up to the first
/// that fails. Blocks: call it from synchronous code only.
pub fn self_test(component: &Arc<HandlerComponent>, cases: &[SelfTestCase]) -> Result<(), String> {
    if cases.is_empty() {
        return Ok(());
    }
    let name = component.name();
    let tests: Vec<TestCase> = cases.iter().map(TestCase::from).collect();
    if let Some(complaint) = state_without_import(component, &tests) {
        return Err(format!("self-test {complaint}"));
    }
    let options = RunOptions {
        topic: "self-test",
        stop_at_first_failure: true,
        self_test: true,
    };
    let results = run_guest(run_cases(component, &tests, options, |_, _| {}))
        .map_err(|failure| format!("handler `{name}`: {failure}"))?;
    let Some(failed) = results.iter().find(|result| !result.passed) else {
        return Ok(());
    };
    let case = &cases[failed.number - 1];
    let test = &tests[failed.number - 1];
    let mismatch = match test.accepts(&failed.answer) {
        true => {
            let got = test.got_json(failed);
            format!(
                "expected state {}, got {}",
                test.expected_json()["state"],
                got["state"]
            )
        }
        false => self_test_mismatch(&case.expect, &failed.answer),
    };
    Err(format!(
        "handler `{name}` version {}: self-test case {} failed: input {}: {mismatch}",
        component.version(),
        failed.number,
        case.input,
    ))
}

/// What a failed self-test case got instead of what it expected.
fn self_test_mismatch(expect: &Expect, answer: &Result<Vec<Output>, HandlerFailure>) -> String {
    match (expect, answer) {
        (Expect::Output(expected), Ok(outputs)) => {
            let values: Vec<Value> = outputs
                .iter()
                .map(|o| serde_json::from_slice(&o.value).unwrap_or(Value::Null))
                .collect();
            format!("expected {expected}, got {}", Value::from(values))
        }
        (Expect::Output(expected), Err(failure)) => {
            format!(
                "expected {expected}, got {} error: {failure}",
                failure.kind()
            )
        }
        (Expect::Error(kind), answer) => {
            let got = match answer {
                Ok(_) => "an output".to_string(),
                Err(failure) => format!("{} error: {failure}", failure.kind()),
            };
            format!("expected a {} error, got {got}", kind.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExpectedError;

    fn output(value: &str, key: Option<&str>, topic: Option<&str>) -> Output {
        Output {
            value: value.as_bytes().to_vec(),
            key: key.map(|key| key.as_bytes().to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: b"v".to_vec(),
            }],
            topic: topic.map(String::from),
        }
    }

    fn case(expect: TestExpect) -> TestCase {
        TestCase {
            name: None,
            key: Some(b"in".to_vec()),
            value: b"{}".to_vec(),
            headers: Vec::new(),
            timestamp: None,
            state: Vec::new(),
            expect_state: Vec::new(),
            expect,
        }
    }

    #[test]
    fn json_outputs_compare_as_json_and_bytes_byte_for_byte() {
        let json_case = case(TestExpect::Outputs(vec![ExpectedOutput::value(
            ExpectedValue::Json(json!({"a": 1, "b": 2})),
        )]));
        assert!(json_case.accepts(&Ok(vec![output(r#"{"b":2, "a":1}"#, None, None)])));
        assert!(!json_case.accepts(&Ok(vec![output(r#"{"a":1}"#, None, None)])));
        assert!(!json_case.accepts(&Ok(vec![])));
        let bytes_case = case(TestExpect::Outputs(vec![ExpectedOutput::value(
            ExpectedValue::Bytes(br#"{"a":1}"#.to_vec()),
        )]));
        assert!(bytes_case.accepts(&Ok(vec![output(r#"{"a":1}"#, None, None)])));
        assert!(!bytes_case.accepts(&Ok(vec![output(r#"{"a": 1}"#, None, None)])));
    }

    #[test]
    fn keys_topics_and_headers_count_only_when_named() {
        let mut expected = ExpectedOutput::value(ExpectedValue::Bytes(b"x".to_vec()));
        let filtered = case(TestExpect::Outputs(Vec::new()));
        assert!(filtered.accepts(&Ok(Vec::new())));
        assert!(!filtered.accepts(&Ok(vec![output("x", None, None)])));

        let any = case(TestExpect::Outputs(vec![expected.clone()]));
        assert!(any.accepts(&Ok(vec![output("x", Some("k"), Some("t"))])));

        // The input's key when the output has none.
        expected.key = Some(Some(b"in".to_vec()));
        let keyed = case(TestExpect::Outputs(vec![expected.clone()]));
        assert!(keyed.accepts(&Ok(vec![output("x", None, Some("t"))])));
        assert!(!keyed.accepts(&Ok(vec![output("x", Some("other"), None)])));

        expected.topic = Some(None);
        expected.headers = Some(vec![("h".into(), b"v".to_vec())]);
        let exact = case(TestExpect::Outputs(vec![expected]));
        assert!(exact.accepts(&Ok(vec![output("x", None, None)])));
        assert!(!exact.accepts(&Ok(vec![output("x", None, Some("t"))])));
        assert_eq!(
            exact.answer_json(&Ok(vec![output("x", None, Some("t"))])),
            json!({"outputs": [{"value": "x", "key": "in", "topic": "t", "headers": [["h", "v"]]}]})
        );
        assert_eq!(
            exact.expected_json(),
            json!({"outputs": [{"value": "x", "key": "in", "topic": null, "headers": [["h", "v"]]}]})
        );
    }

    #[test]
    fn errors_compare_by_kind() {
        let timeout = case(TestExpect::Error(ErrorKind::Timeout));
        assert!(timeout.accepts(&Err(HandlerFailure::Timeout(100))));
        assert!(!timeout.accepts(&Err(HandlerFailure::Trap("no".into()))));
        assert!(!timeout.accepts(&Ok(Vec::new())));
        assert_eq!(
            timeout.answer_json(&Err(HandlerFailure::InvalidInput("bad x".into()))),
            json!({"error": "invalid-input", "reason": "bad x"})
        );
    }

    #[test]
    fn expected_state_compares_as_json_and_null_is_absent() {
        let mut stateful = case(TestExpect::Outputs(Vec::new()));
        stateful.expect_state = vec![
            (b"a".to_vec(), Some(json!({"total": 3}))),
            (b"gone".to_vec(), None),
        ];
        assert!(stateful.uses_state());
        let seen = |a: Option<&str>, gone: Option<&str>| -> StateSeen {
            vec![
                (b"a".to_vec(), a.map(|v| v.as_bytes().to_vec())),
                (b"gone".to_vec(), gone.map(|v| v.as_bytes().to_vec())),
            ]
        };
        assert!(stateful.state_matches(&seen(Some(r#"{ "total":3 }"#), None)));
        assert!(!stateful.state_matches(&seen(Some(r#"{"total":4}"#), None)));
        assert!(!stateful.state_matches(&seen(None, None)));
        assert!(!stateful.state_matches(&seen(Some(r#"{"total":3}"#), Some("1"))));
        assert!(!stateful.state_matches(&seen(Some("not json"), None)));
        assert_eq!(
            stateful.expected_json(),
            json!({"outputs": [], "state": {"a": {"total": 3}, "gone": null}})
        );
        let result = CaseResult {
            number: 1,
            passed: false,
            answer: Ok(Vec::new()),
            state: seen(Some("not json"), Some("7")),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            stateful.got_json(&result),
            json!({"outputs": [], "state": {"a": "not json", "gone": 7}})
        );
        // A case that checks no state shows none.
        let plain = case(TestExpect::Outputs(Vec::new()));
        assert!(plain.state_matches(&Vec::new()));
        assert_eq!(plain.got_json(&result), json!({"outputs": []}));
    }

    #[test]
    fn a_self_test_cases_key_and_state_carry_over() {
        let case = TestCase::from(&SelfTestCase {
            input: json!({"amount": 5}),
            key: Some("alice".into()),
            state: [("alice".to_string(), json!({"total": 7}))].into(),
            expect_state: [("alice".to_string(), Some(json!({"total": 12})))].into(),
            expect: Expect::Output(json!({"total": 12})),
        });
        assert_eq!(case.key.as_deref(), Some(&b"alice"[..]));
        assert_eq!(case.state, vec![(b"alice".to_vec(), json!({"total": 7}))]);
        assert_eq!(
            case.expect_state,
            vec![(b"alice".to_vec(), Some(json!({"total": 12})))]
        );
    }

    #[test]
    fn self_test_cases_become_test_cases() {
        let case = TestCase::from(&SelfTestCase {
            input: json!({"x": 5}),
            expect: Expect::Error(ExpectedError::Transient),
            ..SelfTestCase::default()
        });
        assert_eq!(case.value, br#"{"x":5}"#);
        assert_eq!(case.key, None);
        assert!(!case.uses_state());
        assert_eq!(case.expect, TestExpect::Error(ErrorKind::Transient));
        for kind in CALL_ERROR_KINDS {
            assert!(ErrorKind::ALL.contains(&kind));
        }
    }
}
