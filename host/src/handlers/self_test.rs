//! The checks every new version passes before it may serve: compiled,
//! linked and initialised ([`Sandbox::load`]), then its self-test cases run
//! in a fresh instance, each within the handler's limits.

use super::bindings::Message;
use super::sandbox::{HandlerComponent, HandlerSpec, LoadError, Sandbox, run_guest};
use crate::config::{Expect, SelfTestCase};
use std::sync::Arc;

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

/// Runs the self-test cases in a fresh instance of `component`. Blocks:
/// call it from synchronous code only.
pub fn self_test(component: &Arc<HandlerComponent>, cases: &[SelfTestCase]) -> Result<(), String> {
    if cases.is_empty() {
        return Ok(());
    }
    run_guest(run_self_test(component, cases))
}

async fn run_self_test(
    component: &Arc<HandlerComponent>,
    cases: &[SelfTestCase],
) -> Result<(), String> {
    let name = component.name();
    let mut instance = component
        .instantiate()
        .await
        .map_err(|failure| format!("handler `{name}`: {failure}"))?;
    for (index, case) in cases.iter().enumerate() {
        let message = Message {
            topic: "self-test".into(),
            partition: 0,
            offset: index as i64,
            key: None,
            value: case.input.to_string().into_bytes(),
            headers: Vec::new(),
            timestamp: None,
        };
        let fail = |what: String| {
            format!(
                "handler `{name}` version {}: self-test case {} failed: input {}: {what}",
                component.version(),
                index + 1,
                case.input
            )
        };
        let answer = instance.handle(&message).await;
        match (&case.expect, answer) {
            (Expect::Output(expected), Ok(outputs)) => {
                let values: Vec<serde_json::Value> = outputs
                    .iter()
                    .map(|o| serde_json::from_slice(&o.value).unwrap_or(serde_json::Value::Null))
                    .collect();
                if values.len() != 1 || &values[0] != expected {
                    return Err(fail(format!(
                        "expected {expected}, got {}",
                        serde_json::Value::from(values)
                    )));
                }
            }
            (Expect::Error(kind), Err(failure)) if failure.kind().as_str() == kind.as_str() => {}
            (Expect::Output(expected), Err(failure)) => {
                return Err(fail(format!(
                    "expected {expected}, got {} error: {failure}",
                    failure.kind()
                )));
            }
            (Expect::Error(kind), other) => {
                let got = match other {
                    Ok(_) => "an output".to_string(),
                    Err(failure) => format!("{} error: {failure}", failure.kind()),
                };
                return Err(fail(format!(
                    "expected a {} error, got {got}",
                    kind.as_str()
                )));
            }
        }
    }
    Ok(())
}
