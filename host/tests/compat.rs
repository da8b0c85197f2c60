//! Contract changes are additive: components built for the 0.1.0 package
//! of the WIT (`wit/0.1.0/`, before the `state` import and the
//! `handle-batch` export) keep loading and working. The fixtures are the
//! `add` plugin exactly as it was built then, in both build variants
//! (`host/tests/fixtures/components/add-0.1.0-*.wasm`).

mod common;

use common::{Topics, calculator_yaml, config_from, producer, read, repo_root, send};
use serde_json::json;
use stagehost::config::Limits;
use stagehost::handlers::{HandlerSpec, Sandbox, run_guest};
use std::time::Duration;

fn fixture(variant: &str) -> std::path::PathBuf {
    repo_root().join(format!(
        "host/tests/fixtures/components/add-0.1.0-{variant}.wasm"
    ))
}

#[test]
fn components_built_for_0_1_0_load_and_answer() {
    let sandbox = Sandbox::new(false).unwrap();
    for variant in ["wasip2", "wasip1"] {
        let path = fixture(variant);
        let spec = HandlerSpec {
            name: "add".into(),
            source: path.display().to_string(),
            limits: Limits::default(),
            settings: Vec::new(),
        };
        let component = sandbox
            .load(spec, &std::fs::read(&path).unwrap())
            .unwrap_or_else(|err| panic!("{variant}: {err}"));
        assert!(!component.has_batch(), "0.1.0 has no handle-batch");
        assert!(!component.uses_state(), "0.1.0 has no state");
        let mut instance = run_guest(component.instantiate()).unwrap();
        let request = json!({"operation": "sum", "operator_1": "5", "operator_2": "2"});
        let message = common::wit_message(request.to_string().into_bytes());
        let outputs = run_guest(instance.handle(&message)).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&outputs[0].value).unwrap();
        assert_eq!(answer["result"], 7, "{variant}: {answer}");
    }
}

#[test]
fn a_component_built_today_exports_handle_batch() {
    let sandbox = Sandbox::new(false).unwrap();
    let path = common::plugin("wasm32-wasip2", "add");
    let spec = HandlerSpec {
        name: "add".into(),
        source: path.display().to_string(),
        limits: Limits::default(),
        settings: Vec::new(),
    };
    let component = sandbox.load(spec, &std::fs::read(&path).unwrap()).unwrap();
    assert!(component.has_batch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_component_serves_the_calculator_through_the_broker() {
    let topics = Topics::new();
    let yaml = calculator_yaml(&topics, 1).replace(
        "target/wasm32-wasip2/release/add.wasm",
        fixture("wasip2").to_str().unwrap(),
    );
    let host = common::RunningHost::start(config_from(yaml));
    let request = json!({"operation": "sum", "operator_1": "5", "operator_2": "2"});
    send(
        &producer(),
        &topics.input,
        None,
        request.to_string().as_bytes(),
        &[],
    )
    .await;
    let results = read(&topics.output, 1, Duration::from_secs(60), Duration::ZERO).await;
    host.stop().await.unwrap();
    assert_eq!(results[0].json()["result"], 7);
}
