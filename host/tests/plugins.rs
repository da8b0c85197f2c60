//! The `add` and `subtract` components run through wasmtime, from both build
//! variants: `cargo build --target wasm32-wasip2` and `cargo component build`.

mod common;

use common::{plugin, wit_message};
use serde_json::{Value, json};
use stagehost::config::Limits;
use stagehost::handlers::{HandlerFailure, HandlerInstance, HandlerSpec, Sandbox, run_guest};

const VARIANTS: [&str; 2] = ["wasm32-wasip2", "wasm32-wasip1"];

fn instance(target: &str, name: &str) -> HandlerInstance {
    let path = plugin(target, name);
    let bytes = std::fs::read(&path).unwrap();
    let sandbox = Sandbox::new(false).unwrap();
    let spec = HandlerSpec {
        name: name.to_string(),
        source: path.display().to_string(),
        limits: Limits::default(),
        settings: Vec::new(),
    };
    let component = sandbox
        .load(spec, &bytes)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    run_guest(component.instantiate()).unwrap()
}

fn call(instance: &mut HandlerInstance, input: &str) -> Result<Value, HandlerFailure> {
    let message = wit_message(input.as_bytes().to_vec());
    let outputs = run_guest(instance.handle(&message))?;
    assert_eq!(outputs.len(), 1, "one output per message");
    assert!(outputs[0].topic.is_none() && outputs[0].key.is_none());
    Ok(serde_json::from_slice(&outputs[0].value).expect("output is JSON"))
}

fn invalid(result: Result<Value, HandlerFailure>) -> String {
    match result {
        Err(HandlerFailure::InvalidInput(reason)) => reason,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[test]
fn add_follows_the_tutorial_and_the_short_form() {
    for target in VARIANTS {
        let mut add = instance(target, "add");
        let tutorial = r#"{"operation": "sum", "operator_1": "5", "operator_2": "2"}"#;
        assert_eq!(
            call(&mut add, tutorial).unwrap(),
            json!({"operation": "sum", "operator_1": "5", "operator_2": "2", "result": 7}),
            "{target}"
        );
        assert_eq!(
            call(&mut add, r#"{"x": 5, "y": 2}"#).unwrap()["result"],
            json!(7)
        );
        assert_eq!(
            call(&mut add, r#"{"x": " 5 ", "y": -12}"#).unwrap()["result"],
            json!(-7)
        );
        assert_eq!(
            call(&mut add, r#"{"x": 1.5, "y": "2.25"}"#).unwrap()["result"],
            json!(3.75)
        );
        assert_eq!(
            call(&mut add, r#"{"x": 9223372036854775806, "y": 1}"#).unwrap()["result"],
            json!(i64::MAX),
            "{target}: exact at the edge"
        );
    }
}

#[test]
fn subtract_follows_the_tutorial() {
    for target in VARIANTS {
        let mut subtract = instance(target, "subtract");
        let tutorial = r#"{"operation": "sub", "operator_1": "5", "operator_2": "2"}"#;
        assert_eq!(
            call(&mut subtract, tutorial).unwrap()["result"],
            json!(3),
            "{target}"
        );
        assert_eq!(
            call(&mut subtract, r#"{"x": 2, "y": 5}"#).unwrap()["result"],
            json!(-3)
        );
        assert_eq!(
            call(&mut subtract, r#"{"x": 0.5, "y": 0.25}"#).unwrap()["result"],
            json!(0.25)
        );
    }
}

#[test]
fn bad_operands_are_invalid_input_and_never_trap() {
    for target in VARIANTS {
        let mut add = instance(target, "add");
        let overflow = invalid(call(&mut add, r#"{"x": 9223372036854775807, "y": 1}"#));
        assert!(overflow.contains("overflow"), "{target}: {overflow}");
        let reason = invalid(call(
            &mut add,
            r#"{"operator_1": "five", "operator_2": "2"}"#,
        ));
        assert!(reason.contains("operator_1"), "{target}: {reason}");
        let reason = invalid(call(&mut add, r#"{"x": 1}"#));
        assert!(reason.contains('y'), "{target}: {reason}");
        for bad in [
            r#"{"x": true, "y": 1}"#,
            r#"{"x": null, "y": 1}"#,
            r#"{"x": {"a": 1}, "y": 1}"#,
            r#"{"x": "nan", "y": 1}"#,
            r#"{"x": "1e308", "y": "1e308"}"#,
            r#"[1, 2]"#,
            r#""hi""#,
            "42",
            "not json",
            "",
        ] {
            invalid(call(&mut add, bad));
        }
        // The instance is still good after all of that.
        assert_eq!(
            call(&mut add, r#"{"x": 2, "y": 2}"#).unwrap()["result"],
            json!(4)
        );

        let mut subtract = instance(target, "subtract");
        let underflow = invalid(call(
            &mut subtract,
            r#"{"x": -9223372036854775808, "y": 1}"#,
        ));
        assert!(underflow.contains("overflow"), "{target}: {underflow}");
    }
}

#[test]
fn components_are_rejected_when_they_are_not_handlers() {
    let sandbox = Sandbox::new(false).unwrap();
    let spec = |name: &str| HandlerSpec {
        name: name.into(),
        source: "test".into(),
        limits: Limits::default(),
        settings: Vec::new(),
    };
    let not_wasm = sandbox
        .load(spec("garbage"), b"definitely not wasm")
        .err()
        .unwrap();
    assert!(
        not_wasm
            .to_string()
            .contains("not a valid WebAssembly component"),
        "{not_wasm}"
    );
    let add = std::fs::read(plugin("wasm32-wasip2", "add")).unwrap();
    let truncated = sandbox
        .load(spec("truncated"), &add[..add.len() / 2])
        .err()
        .unwrap();
    assert!(truncated.to_string().contains("not a valid"), "{truncated}");
    // An empty core module is wasm, but not a component implementing the world.
    let core_module = b"\0asm\x01\0\0\0";
    let wrong = sandbox.load(spec("core"), core_module).err().unwrap();
    assert!(wrong.to_string().contains("handler `core`"), "{wrong}");
}
