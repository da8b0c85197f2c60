//! Fuzzes the message path without Kafka. The input is a message value: it
//! is routed the way a stage routes it (by the `operation` field, by a JSON
//! pointer, and to a stage's single handler), run through the real `add`
//! component in the sandbox, and a failure is turned into dead-letter
//! headers. Nothing may panic; every message must become outputs or a known
//! dead-letter kind, and a value that is not JSON must never succeed.
//!
//! Needs `target/wasm32-wasip2/release/add.wasm` (`scripts/build-plugins.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_headers_t, rd_kafka_resp_err_t};
use rdkafka::message::{BorrowedHeaders, Headers, OwnedHeaders};
use serde_json::Value;
use stagehost::handlers::bindings::{Header as WitHeader, Message};
use stagehost::config::Limits;
use stagehost::pipeline::dead_letter::{self, DeadLetter, Source};
use stagehost::config::Routing;
use stagehost::handlers::{HandlerComponent, HandlerInstance, HandlerSpec, Sandbox, run_guest};
use std::sync::{Arc, LazyLock, Mutex};

/// Every `stagehost-error-kind` a message can be dead-lettered with.
const DEAD_LETTER_KINDS: [&str; 12] = [
    "invalid-json",
    "missing-route",
    "unknown-route",
    "invalid-input",
    "transient",
    "trap",
    "timeout",
    "memory-limit",
    "fuel-exhausted",
    "instantiate-failed",
    "invalid-output",
    "produce-failed",
];

const ADD_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/add.wasm"
);

/// The `add` component, compiled once for the whole run.
static ADD: LazyLock<Arc<HandlerComponent>> = LazyLock::new(|| {
    let bytes = std::fs::read(ADD_WASM)
        .unwrap_or_else(|err| panic!("{ADD_WASM}: {err} (run scripts/build-plugins.sh)"));
    let spec = HandlerSpec {
        name: "add".into(),
        source: ADD_WASM.into(),
        // A generous wall-time limit: instrumented builds run slowly.
        limits: Limits {
            timeout_ms: 30_000,
            ..Limits::default()
        },
        settings: Vec::new(),
    };
    Sandbox::new(false)
        .expect("creating the sandbox")
        .load(spec, &bytes)
        .expect("loading add.wasm")
});

/// The instance reused message after message, as a partition worker does.
static INSTANCE: Mutex<Option<HandlerInstance>> = Mutex::new(None);

/// The route tables a stage can have, each leading to `add`.
static ROUTES: LazyLock<[Routing; 3]> = LazyLock::new(|| {
    let to = |value: &str| [(value.to_string(), "add".to_string())].into();
    [
        Routing::ByField {
            field: "operation".into(),
            to: to("sum"),
        },
        Routing::ByField {
            field: "/meta/op".into(),
            to: to("sum"),
        },
        Routing::Single("add".into()),
    ]
});

/// JSON values equal as JSON. Floats must come back exactly: the plugins
/// and the host build serde_json with `float_roundtrip`.
fn same_json(a: &Value, b: &Value) -> bool {
    a == b
}

/// Runs `add` on one message, replacing the instance after a failure that
/// poisons it. Returns the output values or the dead letter.
fn run_add(message: &Message) -> Result<Vec<Vec<u8>>, DeadLetter> {
    let mut slot = INSTANCE.lock().unwrap_or_else(|e| e.into_inner());
    let letter = |kind: &'static str, reason: String| DeadLetter {
        kind,
        reason,
        handler: Some(("add".into(), ADD.version().into())),
    };
    let instance = match slot.as_mut() {
        Some(instance) => instance,
        None => match run_guest(ADD.instantiate()) {
            Ok(instance) => slot.insert(instance),
            Err(failure) => return Err(letter(failure.kind(), failure.to_string())),
        },
    };
    match run_guest(instance.handle(message)) {
        Ok(outputs) => Ok(outputs.into_iter().map(|output| output.value).collect()),
        Err(failure) => {
            if failure.poisons_instance() {
                *slot = None;
            }
            Err(letter(failure.kind(), failure.to_string()))
        }
    }
}

/// Headers as a consumed record may carry them: one whose key is the first
/// bytes of the input, UTF-8 or not (Kafka does not check header keys, and
/// `OwnedHeaders::insert` only takes text).
fn original_headers(data: &[u8]) -> OwnedHeaders {
    let headers = OwnedHeaders::new();
    let key = data.get(..24).unwrap_or(data);
    let list = (headers.as_borrowed() as *const BorrowedHeaders)
        .cast_mut()
        .cast::<rd_kafka_headers_t>();
    // SAFETY: a `&BorrowedHeaders` is the address of the list librdkafka
    // allocated for `headers`, which nothing else uses while this runs;
    // librdkafka copies the key and value.
    let status = unsafe {
        rd_kafka_header_add(
            list,
            key.as_ptr().cast(),
            key.len() as isize,
            data.as_ptr().cast(),
            data.len() as isize,
        )
    };
    assert_eq!(status, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

/// Builds the dead-letter headers for `letter` and checks they say what it
/// says, after a copy of the original header.
fn check_dead_letter(letter: &DeadLetter, original: &OwnedHeaders) {
    assert!(
        DEAD_LETTER_KINDS.contains(&letter.kind),
        "unknown kind {}",
        letter.kind
    );
    let source = Source {
        stage: "fuzz",
        topic: "fuzz-input",
        partition: 0,
        offset: 0,
    };
    let headers = dead_letter::dead_letter_headers(Some(original), letter, source);
    let copied = dead_letter::raw_headers(original);
    let built: Vec<_> = headers.iter().collect();
    assert_eq!(
        built.len(),
        copied.len() + 6 + 2 * usize::from(letter.handler.is_some())
    );
    assert_eq!(built[0].key, copied[0].key_text());
    assert_eq!(built[0].value, copied[0].value);
    let kind = built
        .iter()
        .find(|header| header.key == dead_letter::ERROR_KIND)
        .and_then(|header| header.value);
    assert_eq!(kind, Some(letter.kind.as_bytes()));
}

fuzz_target!(|data: &[u8]| {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    let original = original_headers(data);
    let message = Message {
        topic: "fuzz-input".into(),
        partition: 0,
        offset: 0,
        key: data.get(..8).map(<[u8]>::to_vec),
        value: data.to_vec(),
        headers: vec![WitHeader {
            key: "trace-id".into(),
            value: data.get(..16).unwrap_or(data).to_vec(),
        }],
        timestamp: None,
    };
    let mut handled = None;
    for table in ROUTES.iter() {
        match table.resolve(data) {
            Ok(handler) => {
                assert_eq!(handler, "add");
                // The value reaches the handler at most once: the outcome
                // depends only on the message, not on the route taken.
                let outcome = handled.get_or_insert_with(|| run_add(&message));
                match outcome {
                    Ok(outputs) => {
                        let Some(Value::Object(input)) = &parsed else {
                            panic!("a value that is not a JSON object succeeded");
                        };
                        assert_eq!(outputs.len(), 1, "add answers with one output");
                        let output: Value =
                            serde_json::from_slice(&outputs[0]).expect("add's output is JSON");
                        let result = output.get("result").expect("add's output has a result");
                        assert!(result.is_number(), "result {result} is not a number");
                        for (field, value) in input {
                            if field != "result" {
                                let kept =
                                    output.get(field).is_some_and(|out| same_json(out, value));
                                assert!(kept, "field {field} changed: {:?}", output.get(field));
                            }
                        }
                    }
                    Err(letter) => check_dead_letter(letter, &original),
                }
            }
            Err(err) => {
                let letter = DeadLetter {
                    kind: err.kind(),
                    reason: err.to_string(),
                    handler: None,
                };
                check_dead_letter(&letter, &original);
            }
        }
    }
});
