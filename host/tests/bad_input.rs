//! Bad input never panics. Property tests feed the config loader and the
//! message path invalid UTF-8, deep nesting, huge values, empty and null
//! values and wrong types:
//!
//! - a config either loads or fails with an error that names the file and a
//!   line;
//! - a message value is routed the way a stage routes it and, when a route
//!   is found, run through the real `add` component in the sandbox; it
//!   becomes outputs or a dead letter of a known kind, and a value that is
//!   not a JSON object never succeeds;
//! - the dead-letter headers keep any original headers, whatever their keys
//!   and values.
//!
//! Needs the built plugins (`make plugins`), not Kafka.

mod common;

use common::{plugin, repo_root};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_headers_t, rd_kafka_resp_err_t};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use serde_json::{Map, Value, json};
use stagehost::config::Routing;
use stagehost::config::{ConfigError, Limits, LoadedConfig};
use stagehost::handlers::ErrorKind;
use stagehost::handlers::bindings::{Header as WitHeader, Message};
use stagehost::handlers::{HandlerComponent, HandlerInstance, HandlerSpec, Sandbox, run_guest};
use stagehost::pipeline::dead_letter::{self, DeadLetter, Source};
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Every `stagehost-error-kind` a message can be dead-lettered with.
const DEAD_LETTER_KINDS: [&str; 13] = [
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
    "forbidden-topic",
    "produce-failed",
];

/// The kinds routing alone can give.
const ROUTE_KINDS: [&str; 3] = ["invalid-json", "missing-route", "unknown-route"];

/// Runs `test` on `cases` values drawn from `strategy`; a failure (or a
/// panic) fails the test with the smallest input proptest could find.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: fmt::Debug,
{
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

/// Bytes that print as an escaped, shortened string in failure reports.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 300;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        write!(f, "b\"{}\"", shown.escape_ascii())?;
        if self.0.len() > SHOWN {
            write!(f, "… ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// Text that prints shortened in failure reports.
#[derive(Clone)]
struct Text(String);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Bytes(self.0.as_bytes().to_vec()).fmt(f)
    }
}

// ---------------------------------------------------------------------------
// The config loader
// ---------------------------------------------------------------------------

/// The name config text is loaded under.
const CONFIG_FILE: &str = "bad-input.yml";

/// Loads `text` and checks the answer: a config, or an error naming the file
/// and a line within the text.
fn check_config_text(text: &str) -> Result<(), String> {
    let path = Path::new(CONFIG_FILE);
    match LoadedConfig::from_source(path, text.to_string()) {
        Ok(loaded) => {
            // Whatever loads can be described.
            let _ = loaded.plan();
            Ok(())
        }
        Err(err) => check_config_error(&err, path, text),
    }
}

fn check_config_error(err: &ConfigError, path: &Path, text: &str) -> Result<(), String> {
    let shown = err.to_string();
    if err.file != path || !shown.starts_with(&format!("{}:", path.display())) {
        return Err(format!(
            "the error does not name {}: {shown}",
            path.display()
        ));
    }
    if err.message.trim().is_empty() {
        return Err(format!("the error says nothing: {shown}"));
    }
    let Some((line, column)) = err.position else {
        return Err(format!("the error names no line: {shown}"));
    };
    let lines = yaml_lines(text);
    if line == 0 || line > lines + 1 || column == 0 {
        return Err(format!(
            "the error names line {line} column {column} of a {lines}-line file: {shown}"
        ));
    }
    if !shown.starts_with(&format!("{}:{line}:{column}: ", path.display())) {
        return Err(format!("the line is not where it belongs: {shown}"));
    }
    Ok(())
}

/// The number of lines YAML sees: `\n`, `\r\n` and a lone `\r` each end one.
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n").split(['\n', '\r']).count()
}

/// The valid configs the repository ships: the fixtures and `config.yml`.
fn valid_configs() -> &'static [String] {
    static CONFIGS: OnceLock<Vec<String>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = repo_root().join("host/tests/fixtures/config/valid");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
            .collect();
        paths.sort();
        paths.push(repo_root().join("config.yml"));
        // A config reading a `file:` relative to its own folder cannot be
        // loaded under another name; the config fixtures test it.
        let configs: Vec<String> = paths
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .filter(|text| !text.contains("file:"))
            .collect();
        for config in &configs {
            LoadedConfig::from_source(Path::new(CONFIG_FILE), config.clone())
                .expect("the shipped configs are valid");
        }
        configs
    })
}

/// Where a line of config text holds a value: the byte range after `key:`.
fn value_span(line: &str) -> Option<std::ops::Range<usize>> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let colon = line.find(':')?;
    Some(colon + 1..line.len())
}

/// Values of every YAML type and shape, and of none: what a hand-edited
/// config may hold where another type belongs.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "~",
        "null",
        "",
        "''",
        "\"\"",
        "[]",
        "{}",
        "[1, [2, [3]]]",
        "{a: {b: c}}",
        "- item",
        "a: b",
        "-1",
        "0",
        "-0",
        "1.5",
        "1e400",
        "-1e400",
        ".nan",
        ".inf",
        "-.inf",
        "99999999999999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775809",
        "2147483648",
        "0x7fffffff",
        "0o777",
        "true",
        "no",
        "\"text\"",
        "!!binary aGVsbG8=",
        "!!float 1",
        "!custom tag",
        "*nowhere",
        "&anchor value",
        "|\n  a block",
        ">-",
        "\"\\u0000\"",
        "\"\\uD800\"",
        "'it''s'",
        "\"ü😀\"",
        "[unclosed",
        "{unclosed",
        "\"unterminated",
        "? complex",
        "@reserved",
        "`reserved",
        "%directive",
        "\t",
        "\u{feff}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    values.push("x".repeat(10_000));
    values.push(format!("{}{}", "[".repeat(1_000), "]".repeat(1_000)));
    values.push(format!("{}0{}", "{a: ".repeat(1_000), "}".repeat(1_000)));
    values
}

#[test]
fn every_field_of_a_valid_config_takes_any_type() {
    let hostile = hostile_values();
    let mut failures = Vec::new();
    let mut loads = 0;
    for config in valid_configs() {
        let lines: Vec<&str> = config.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let Some(span) = value_span(line) else {
                continue;
            };
            for value in &hostile {
                let mut mutated = lines.clone();
                let replaced = format!("{} {value}", &line[..span.start]);
                mutated[index] = &replaced;
                let text = mutated.join("\n");
                loads += 1;
                if let Err(why) = check_config_text(&text) {
                    failures.push(format!("line {} set to {value:.40?}: {why}", index + 1));
                }
            }
        }
    }
    assert!(loads > 5_000, "only {loads} configs tried");
    assert!(
        failures.is_empty(),
        "{} of {loads} configs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every leaf of a JSON value, as a JSON pointer.
fn leaf_pointers(value: &Value, at: String, into: &mut Vec<String>) {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(object) if !object.is_empty() => {
            for (key, inner) in object {
                leaf_pointers(inner, format!("{at}/{}", escape(key)), into);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, inner) in items.iter().enumerate() {
                leaf_pointers(inner, format!("{at}/{index}"), into);
            }
        }
        _ => into.push(at),
    }
}

/// The shipped configs in flow style: JSON is YAML too, written on one line
/// or pretty-printed, with each field in turn set to a value of another type.
fn flow_style_configs() -> Vec<String> {
    let replacements = [
        json!(null),
        json!(""),
        json!(" "),
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(1e300),
        json!([]),
        json!({}),
        json!("x y"),
    ];
    let mut texts = Vec::new();
    for config in valid_configs() {
        let document: Value = serde_yaml::from_str(config).unwrap();
        let mut pointers = Vec::new();
        leaf_pointers(&document, String::new(), &mut pointers);
        for pointer in &pointers {
            for replacement in &replacements {
                let mut mutated = document.clone();
                *mutated.pointer_mut(pointer).unwrap() = replacement.clone();
                texts.push(mutated.to_string());
                texts.push(serde_json::to_string_pretty(&mutated).unwrap());
            }
        }
    }
    texts
}

#[test]
fn flow_style_configs_are_loaded_or_located() {
    let texts = flow_style_configs();
    let failures: Vec<String> = texts
        .iter()
        .filter_map(|text| check_config_text(text).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} configs:\n{}",
        failures.len(),
        texts.len(),
        failures.join("\n")
    );
}

#[test]
fn flow_style_configs_are_loaded_or_name_the_file() {
    for text in flow_style_configs() {
        match LoadedConfig::from_source(Path::new(CONFIG_FILE), text.clone()) {
            Ok(loaded) => drop(loaded.plan()),
            Err(err) => assert!(
                err.file == Path::new(CONFIG_FILE)
                    && err.to_string().starts_with(&format!("{CONFIG_FILE}:"))
                    && !err.message.is_empty(),
                "{err}\n{text}"
            ),
        }
    }
}

#[test]
fn arbitrary_text_is_loaded_or_located() {
    check(2048, any::<String>().prop_map(Text), |text| {
        check_config_text(&text.0).map_err(TestCaseError::fail)
    });
}

/// Text made of YAML's structural tokens and the config's keys.
fn yaml_soup() -> impl Strategy<Value = Text> {
    let token = prop::sample::select(vec![
        "kafka:",
        "brokers:",
        "handlers:",
        "stages:",
        "add:",
        "path:",
        "limits:",
        "name:",
        "input:",
        "route:",
        "to:",
        "retry:",
        "admin:",
        "self_test:",
        "- ",
        "  ",
        "    ",
        ":",
        ": ",
        "\n",
        "\n  ",
        "\n    ",
        "\n- ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "!!str ",
        "!!map",
        "---",
        "...",
        "|",
        ">",
        "\"",
        "'",
        "#",
        "?",
        "~",
        "null",
        "1e999",
        "-1",
        "x",
        "\t",
        "\r",
        "\\",
        "%YAML 1.2",
        "<<: *a",
    ]);
    prop::collection::vec(token, 0..120).prop_map(|tokens| Text(tokens.concat()))
}

#[test]
fn yaml_token_soup_is_loaded_or_located() {
    check(4096, yaml_soup(), |text| {
        check_config_text(&text.0).map_err(TestCaseError::fail)
    });
}

/// One edit of a valid config's text.
#[derive(Debug, Clone)]
enum Edit {
    /// Replaces the value on a line (chosen by index modulo the lines).
    SetValue(usize, Text),
    /// Removes a line.
    DeleteLine(usize),
    /// Repeats a line.
    DuplicateLine(usize),
    /// Moves a line left or right.
    Indent(usize, i8),
    /// Renames the key on a line.
    RenameKey(usize, Text),
    /// Cuts the text at a byte (moved back to a character boundary).
    Truncate(usize),
    /// Inserts a line.
    InsertLine(usize, Text),
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![
        prop::sample::select(hostile_values()).prop_map(Text),
        any::<String>().prop_map(Text),
        "[a-z0-9 .:_-]{0,12}".prop_map(Text),
    ];
    let line = any::<usize>();
    prop_oneof![
        4 => (line, value.clone()).prop_map(|(at, v)| Edit::SetValue(at, v)),
        1 => line.prop_map(Edit::DeleteLine),
        1 => line.prop_map(Edit::DuplicateLine),
        1 => (line, -4i8..=4).prop_map(|(at, by)| Edit::Indent(at, by)),
        1 => (line, value.clone()).prop_map(|(at, k)| Edit::RenameKey(at, k)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (line, value).prop_map(|(at, v)| Edit::InsertLine(at, v)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let count = lines.len().max(1);
    match edit {
        Edit::SetValue(at, value) => {
            let line = &mut lines[at % count];
            if let Some(span) = value_span(line) {
                line.replace_range(span, &format!(" {}", value.0));
            }
        }
        Edit::DeleteLine(at) => {
            lines.remove(at % count);
        }
        Edit::DuplicateLine(at) => {
            let line = lines[at % count].clone();
            lines.insert(at % count, line);
        }
        Edit::Indent(at, by) => {
            let line = &mut lines[at % count];
            if *by >= 0 {
                line.insert_str(0, &" ".repeat(*by as usize));
            } else {
                let spaces = line.len() - line.trim_start_matches(' ').len();
                line.drain(..spaces.min(by.unsigned_abs() as usize));
            }
        }
        Edit::RenameKey(at, key) => {
            let line = &mut lines[at % count];
            if let Some(colon) = line.find(':') {
                let start = line.len() - line.trim_start_matches([' ', '-']).len();
                if start <= colon {
                    line.replace_range(start..colon, &key.0);
                }
            }
        }
        Edit::Truncate(at) => {
            let mut joined = lines.join("\n");
            let mut cut = at % (joined.len() + 1);
            while !joined.is_char_boundary(cut) {
                cut -= 1;
            }
            joined.truncate(cut);
            return joined;
        }
        Edit::InsertLine(at, line) => lines.insert(at % (lines.len() + 1), line.0.clone()),
    }
    lines.join("\n")
}

#[test]
fn edited_valid_configs_are_loaded_or_located() {
    let strategy = (
        prop::sample::select(valid_configs()),
        prop::collection::vec(edit(), 1..5),
    );
    check(4096, strategy, |(config, edits)| {
        let text = edits.iter().fold(config, |text, edit| apply(&text, edit));
        check_config_text(&text).map_err(|why| TestCaseError::fail(format!("{why}\n{text}")))
    });
}

/// Deeply nested YAML, at the top or as the value of a field. libyaml's
/// time grows with the square of the flow nesting depth, so depths stay
/// below 5,000 (far past serde_yaml's limit of 128) to keep the test fast.
fn deep_yaml() -> impl Strategy<Value = Text> {
    let shape = prop::sample::select(vec!["flow-seq", "flow-map", "block-seq", "block-map"]);
    let place = prop::sample::select(vec!["top", "brokers", "handler", "stages"]);
    (shape, 1usize..5_000, any::<bool>(), place).prop_map(|(shape, depth, closed, place)| {
        let (nested, block) = match shape {
            "flow-seq" => (
                format!(
                    "{}1{}",
                    "[".repeat(depth),
                    if closed { "]".repeat(depth) } else { String::new() }
                ),
                false,
            ),
            "flow-map" => (
                format!(
                    "{}1{}",
                    "{a: ".repeat(depth),
                    if closed { "}".repeat(depth) } else { String::new() }
                ),
                false,
            ),
            // Block nesting grows with the square of the depth: keep it small.
            "block-seq" => (
                (0..depth.min(400))
                    .map(|level| format!("{}- ", " ".repeat(level * 2)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                true,
            ),
            _ => (
                (0..depth.min(400))
                    .map(|level| format!("{}k{level}:", " ".repeat(level * 2)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                true,
            ),
        };
        let indented = |by: usize| {
            if block {
                let pad = " ".repeat(by);
                format!(
                    "\n{}",
                    nested
                        .lines()
                        .map(|line| format!("{pad}{line}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            } else {
                format!(" {nested}")
            }
        };
        let text = match place {
            "top" => nested,
            "brokers" => format!("kafka:\n  brokers:{}\nhandlers: {{}}\nstages: []\n", indented(4)),
            "handler" => format!(
                "kafka:\n  brokers: b:9092\nhandlers:\n  add:\n    path: a.wasm\n    settings:{}\nstages: []\n",
                indented(6)
            ),
            _ => format!(
                "kafka:\n  brokers: b:9092\nhandlers:\n  add:\n    path: a.wasm\nstages:{}\n",
                indented(2)
            ),
        };
        Text(text)
    })
}

#[test]
fn deeply_nested_yaml_is_rejected_with_a_line() {
    check(48, deep_yaml(), |text| {
        check_config_text(&text.0).map_err(TestCaseError::fail)
    });
}

/// A config whose one field holds a huge value.
fn huge_config() -> impl Strategy<Value = Text> {
    let field = prop::sample::select(vec![
        "brokers",
        "group",
        "path",
        "memory_mib",
        "timeout_ms",
        "partitions",
        "stage-name",
        "input",
        "route-value",
        "setting",
    ]);
    let value = prop_oneof![
        (1usize..1_000_000).prop_map(|n| "9".repeat(n)),
        (1usize..1_000_000).prop_map(|n| "x".repeat(n)),
        (1usize..100_000).prop_map(|n| format!("\"{}\"", "\\u00e9".repeat(n))),
        Just(format!("1e{}", u64::MAX)),
    ];
    (field, value).prop_map(|(field, value)| {
        let v = |name: &str, default: &str| {
            if name == field {
                value.clone()
            } else {
                default.to_string()
            }
        };
        Text(format!(
            "kafka:\n  brokers: {}\n  group: {}\n  topics:\n    partitions: {}\nhandlers:\n  add:\n    path: {}\n    settings:\n      s: {}\n    limits:\n      memory_mib: {}\n      timeout_ms: {}\nstages:\n  - name: {}\n    input: {}\n    output: out\n    dead_letter: dlq\n    route:\n      to:\n        {}: add\n",
            v("brokers", "b:9092"),
            v("group", "g"),
            v("partitions", "3"),
            v("path", "a.wasm"),
            v("setting", "1"),
            v("memory_mib", "64"),
            v("timeout_ms", "1000"),
            v("stage-name", "calc"),
            v("input", "in"),
            v("route-value", "sum"),
        ))
    })
}

#[test]
fn huge_values_are_loaded_or_located() {
    check(32, huge_config(), |text| {
        check_config_text(&text.0).map_err(TestCaseError::fail)
    });
}

#[test]
fn alias_bombs_and_special_documents_are_loaded_or_located() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..12 {
        let previous = format!("*a{}", level - 1);
        bomb.push_str(&format!(
            "a{level}: &a{level} [{}]\n",
            vec![previous; 10].join(", ")
        ));
    }
    bomb.push_str("kafka:\n  brokers: *a11\n");
    let recursive = "kafka: &k\n  brokers: b:9092\n  properties: *k\n".to_string();
    let documents = [
        bomb,
        recursive,
        String::new(),
        "\n\n\n".into(),
        "~".into(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        "---\n---\n".into(),
        "kafka: {brokers: b:9092}\n---\nkafka: {}\n".into(),
        "\u{feff}kafka:\n  brokers: b\n".into(),
        "\0".into(),
        "kafka:\n\tbrokers: b\n".into(),
        "kafka: !!binary aGVsbG8=\n".into(),
        "? [kafka]\n: x\n".into(),
        "kafka:\n  brokers: b\n  brokers: c\n".into(),
    ];
    let failures: Vec<String> = documents
        .iter()
        .filter_map(|text| check_config_text(text).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn config_files_with_any_bytes_are_loaded_or_rejected_naming_the_file() {
    let dir = std::env::temp_dir().join(common::unique("stagehost-bad-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // A valid config with a few bytes overwritten, often not UTF-8.
        (
            prop::sample::select(valid_configs()),
            prop::collection::vec((any::<usize>(), 0x80u8..=0xff), 1..4)
        )
            .prop_map(|(config, edits)| {
                let mut bytes = config.into_bytes();
                for (at, byte) in edits {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
                bytes
            }),
    ]
    .prop_map(Bytes);
    let file = dir.join("config.yml");
    check(512, bytes, |bytes| {
        std::fs::write(&file, &bytes.0).unwrap();
        match (LoadedConfig::load(&file), std::str::from_utf8(&bytes.0)) {
            (Ok(_), Ok(_)) => Ok(()),
            (Ok(_), Err(_)) => Err(TestCaseError::fail("bytes that are not UTF-8 loaded")),
            (Err(err), Ok(text)) => {
                check_config_error(&err, &file, text).map_err(TestCaseError::fail)
            }
            (Err(err), Err(_)) => {
                let shown = err.to_string();
                prop_assert!(
                    err.file == file && shown.starts_with(&file.display().to_string()),
                    "the error does not name the file: {}",
                    shown
                );
                prop_assert!(
                    shown.contains("UTF-8"),
                    "the error does not say why: {}",
                    shown
                );
                Ok(())
            }
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_files_that_are_not_utf8_name_the_line() {
    let dir = std::env::temp_dir().join(common::unique("stagehost-bad-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yml");
    let text = valid_configs()[0].clone();
    // After the first two characters of the `kafka:` line.
    let kafka = text.find("\nkafka:").expect("a kafka section") + 1;
    let line = text[..kafka].matches('\n').count() + 1;
    let mut bytes = text.into_bytes();
    bytes.insert(kafka + 2, 0xff);
    std::fs::write(&file, &bytes).unwrap();
    let err = LoadedConfig::load(&file).expect_err("bytes that are not UTF-8");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(err.position, Some((line, 3)), "{err}");
}

// ---------------------------------------------------------------------------
// The message path
// ---------------------------------------------------------------------------

/// The limits the message path runs `add` with. The wall-time limit is
/// generous so that a loaded machine cannot turn a slow message into a
/// timeout: these tests are about the input, not the clock.
const LIMITS: Limits = Limits {
    memory_mib: 64,
    timeout_ms: 20_000,
    fuel: None,
    ..Limits::DEFAULT
};

/// The `add` component, compiled once for every test in this file.
fn add_component() -> Arc<HandlerComponent> {
    static ADD: OnceLock<Arc<HandlerComponent>> = OnceLock::new();
    ADD.get_or_init(|| {
        let path = plugin("wasm32-wasip2", "add");
        let spec = HandlerSpec {
            name: "add".into(),
            source: path.display().to_string(),
            limits: LIMITS,
            settings: Vec::new(),
        };
        Sandbox::new(false)
            .unwrap()
            .load(spec, &std::fs::read(&path).unwrap())
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    })
    .clone()
}

/// The calculator's routes: the `operation` field, a JSON pointer, and a
/// stage with a single handler. Each leads only to `add`.
fn routes() -> [Routing; 3] {
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
}

/// What the message path made of one message.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The handler's output values.
    Outputs(Vec<Vec<u8>>),
    /// A dead letter of this kind, with its reason.
    DeadLetter(&'static str, String),
}

impl Outcome {
    fn kind(&self) -> Option<&'static str> {
        match self {
            Outcome::Outputs(_) => None,
            Outcome::DeadLetter(kind, _) => Some(kind),
        }
    }
}

/// One stage's view of the message path: route, then run `add` in an
/// instance reused until a failure poisons it, as a partition worker does.
struct MessagePath {
    routes: [Routing; 3],
    component: Arc<HandlerComponent>,
    instance: Option<HandlerInstance>,
}

impl MessagePath {
    fn new() -> RefCell<Self> {
        RefCell::new(Self {
            routes: routes(),
            component: add_component(),
            instance: None,
        })
    }

    /// Routes the message with table `route` and runs the handler it names.
    fn deliver(&mut self, route: usize, message: &Message) -> Outcome {
        match self.routes[route].resolve(&message.value) {
            Ok(handler) => {
                assert_eq!(handler, "add", "the tables name only add");
                self.handle(message)
            }
            Err(err) => Outcome::DeadLetter(err.kind().as_str(), err.to_string()),
        }
    }

    fn handle(&mut self, message: &Message) -> Outcome {
        let instance = match &mut self.instance {
            Some(instance) => instance,
            None => match run_guest(self.component.instantiate()) {
                Ok(instance) => self.instance.insert(instance),
                Err(failure) => {
                    return Outcome::DeadLetter(failure.kind().as_str(), failure.to_string());
                }
            },
        };
        match run_guest(instance.handle(message)) {
            Ok(outputs) => {
                assert!(
                    outputs.iter().all(|o| o.topic.is_none() && o.key.is_none()),
                    "add names no topic or key"
                );
                Outcome::Outputs(outputs.into_iter().map(|output| output.value).collect())
            }
            Err(failure) => {
                if failure.poisons_instance() {
                    self.instance = None;
                }
                Outcome::DeadLetter(failure.kind().as_str(), failure.to_string())
            }
        }
    }
}

/// A message as consumed, with extra key and headers.
fn message(value: Vec<u8>, key: Option<Vec<u8>>, headers: Vec<(String, Vec<u8>)>) -> Message {
    Message {
        topic: "calc-requests".into(),
        partition: 0,
        offset: 0,
        key,
        value,
        headers: headers
            .into_iter()
            .map(|(key, value)| WitHeader { key, value })
            .collect(),
        timestamp: None,
    }
}

/// JSON values equal as JSON. Floats must come back exactly: the plugins
/// and the host build serde_json with `float_roundtrip`.
fn same_json(a: &Value, b: &Value) -> bool {
    a == b
}

/// What routing by `table` must answer for a value that parses as JSON.
fn expected_route(table: &Routing, document: &Value) -> Result<(), &'static str> {
    let found = match table {
        Routing::Single(_) => return Ok(()),
        Routing::ByField { field, .. } if field.starts_with('/') => document.pointer(field),
        Routing::ByField { field, .. } => match document {
            Value::Object(object) => object.get(field),
            _ => None,
        },
    };
    match found {
        None => Err("missing-route"),
        Some(Value::String(name)) if name == "sum" => Ok(()),
        Some(_) => Err("unknown-route"),
    }
}

/// The exact sum `add` must answer with when both operands are JSON
/// integers: `Some(Some(sum))`, or `Some(None)` when the sum overflows.
fn expected_sum(object: &Map<String, Value>) -> Option<Option<i64>> {
    let (first, second) = if object.contains_key("operator_1") || object.contains_key("operator_2")
    {
        ("operator_1", "operator_2")
    } else {
        ("x", "y")
    };
    let first = object.get(first)?.as_i64()?;
    let second = object.get(second)?.as_i64()?;
    Some(first.checked_add(second))
}

/// Runs one message through every route and checks what came out.
fn check_message(path: &RefCell<MessagePath>, message: &Message) -> Result<(), TestCaseError> {
    let mut path = path.borrow_mut();
    let document: Option<Value> = serde_json::from_slice(&message.value).ok();
    for route in 0..path.routes.len() {
        let table = path.routes[route].clone();
        let routed = table
            .resolve(&message.value)
            .map(drop)
            .map_err(|err| err.kind().as_str());
        if let Err(kind) = routed {
            prop_assert!(ROUTE_KINDS.contains(&kind), "unknown route kind {}", kind);
        }
        match &document {
            Some(document) => {
                prop_assert_eq!(routed, expected_route(&table, document), "{:?}", table);
            }
            // A JSON pointer needs the whole document.
            None if matches!(&table, Routing::ByField { field, .. } if field.starts_with('/')) => {
                prop_assert_eq!(routed, Err("invalid-json"), "{:?}", table);
            }
            // A top-level field is found without reading the rest; what
            // follows is the handler's to reject.
            None => {}
        }
        let outcome = path.deliver(route, message);
        check_outcome(&outcome, document.as_ref())
            .map_err(|why| TestCaseError::fail(format!("{table:?}: {why}")))?;
    }
    Ok(())
}

/// Checks one outcome of the message path against the input `document`
/// (`None` when the value is not JSON).
fn check_outcome(outcome: &Outcome, document: Option<&Value>) -> Result<(), String> {
    let operands = match document {
        Some(Value::Object(input)) => expected_sum(input),
        _ => None,
    };
    match outcome {
        Outcome::DeadLetter(kind, reason) => {
            if !DEAD_LETTER_KINDS.contains(kind) {
                return Err(format!("unknown dead-letter kind {kind}: {reason}"));
            }
            if reason.is_empty() {
                return Err(format!("a {kind} dead letter without a reason"));
            }
            // The calculator answers every message it gets: a result, or a
            // reason why the input is bad. Nothing traps or times out.
            if !ROUTE_KINDS.contains(kind) && *kind != "invalid-input" {
                return Err(format!("add failed with {kind}: {reason}"));
            }
            if *kind == "invalid-input"
                && let Some(Some(sum)) = operands
            {
                return Err(format!("add rejected operands that sum to {sum}: {reason}"));
            }
            Ok(())
        }
        Outcome::Outputs(outputs) => {
            let Some(Value::Object(input)) = document else {
                return Err("a value that is not a JSON object succeeded".into());
            };
            let [output] = outputs.as_slice() else {
                return Err(format!("{} outputs instead of one", outputs.len()));
            };
            let output: Value = serde_json::from_slice(output)
                .map_err(|err| format!("add's output is not JSON: {err}"))?;
            let Some(result) = output.get("result").filter(|r| r.is_number()) else {
                return Err(format!("no numeric result in {output}"));
            };
            let mut expected = input.clone();
            expected.insert("result".into(), result.clone());
            if !same_json(&output, &Value::Object(expected)) {
                return Err(format!("add changed its input: {output}"));
            }
            match operands {
                Some(Some(sum)) if result.as_i64() != Some(sum) => {
                    Err(format!("{result} is not the sum {sum}"))
                }
                Some(None) => Err(format!("an overflowing sum succeeded: {output}")),
                _ => Ok(()),
            }
        }
    }
}

/// Field names the calculator and its routes read, and some it does not.
const FIELDS: [&str; 9] = [
    "operation",
    "operator_1",
    "operator_2",
    "x",
    "y",
    "result",
    "meta",
    "op",
    "",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// Numbers as JSON text, including ones no 64-bit type holds.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:e}")),
        prop::sample::select(vec![
            "0",
            "-0",
            "1e400",
            "-1e400",
            "1e-400",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "1.7976931348623157e308",
            "4.9e-324",
        ])
        .prop_map(String::from),
        (1usize..5_000).prop_map(|digits| "9".repeat(digits)),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        number_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// JSON text of any value or of an object whose fields may repeat, written
/// out field by field (a `Value` cannot hold a repeated field).
fn json_text() -> impl Strategy<Value = Vec<u8>> {
    let raw_value = prop_oneof![
        3 => json_value().prop_map(|value| value.to_string()),
        1 => number_text(),
        1 => prop::sample::select(vec!["\"sum\"", "\"sub\"", "\"SUM\"", "\" sum\"", "\"\""])
            .prop_map(String::from),
    ];
    prop_oneof![
        json_value().prop_map(|value| value.to_string().into_bytes()),
        prop::collection::vec((field_name(), raw_value), 0..8).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(name, value)| format!("{}:{value}", Value::from(name)))
                .collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        }),
    ]
}

/// An operand of any type: integers, floats, numeric and other strings,
/// huge numbers, and the wrong types.
fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<i64>().prop_map(|n| n.to_string()),
        2 => prop::sample::select(vec![i64::MAX, i64::MIN, i64::MAX - 1, -1, 0, 1])
            .prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|x| Value::from(x).to_string()),
        2 => number_text(),
        2 => number_text().prop_map(|n| Value::from(format!(" {n} ")).to_string()),
        1 => any::<String>().prop_map(|s| Value::from(s).to_string()),
        1 => prop::sample::select(vec![
            "null", "true", "false", "[]", "{}", "[1]", "{\"n\":1}", "\"\"", "\" \"", "\"five\"",
            "\"NaN\"", "\"inf\"", "\"-inf\"", "\"1e400\"", "\"0x10\"", "\"+5\"", "\"5 2\"",
        ])
        .prop_map(String::from),
        1 => json_value().prop_map(|value| value.to_string()),
    ]
}

/// A calculator request in the tutorial's form or the short form, with any
/// operation and operands, and sometimes a field missing or extra.
fn calculator_request() -> impl Strategy<Value = Vec<u8>> {
    let operation = prop_oneof![
        6 => Just("\"sum\"".to_string()),
        1 => operand(),
        1 => Just(String::new()),
    ];
    let names = prop::sample::select(vec![
        ("operator_1", "operator_2"),
        ("x", "y"),
        ("x", "operator_2"),
    ]);
    (
        operation,
        names,
        prop::option::weighted(0.9, operand()),
        prop::option::weighted(0.9, operand()),
        prop::collection::vec((field_name(), operand()), 0..3),
    )
        .prop_map(|(operation, (first, second), a, b, extra)| {
            let mut fields = Vec::new();
            if !operation.is_empty() {
                fields.push(format!("\"operation\":{operation}"));
            }
            if let Some(a) = a {
                fields.push(format!("\"{first}\":{a}"));
            }
            if let Some(b) = b {
                fields.push(format!("\"{second}\":{b}"));
            }
            for (name, value) in extra {
                fields.push(format!("{}:{value}", Value::from(name)));
            }
            format!("{{{}}}", fields.join(",")).into_bytes()
        })
}

/// The tutorial's request with bytes flipped, inserted, removed or cut:
/// often invalid UTF-8, often broken JSON.
fn damaged_request() -> impl Strategy<Value = Vec<u8>> {
    let damage = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| (0u8, at, byte)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| (1u8, at, byte)),
        any::<usize>().prop_map(|at| (2u8, at, 0)),
        any::<usize>().prop_map(|at| (3u8, at, 0)),
    ];
    prop::collection::vec(damage, 1..6).prop_map(|damage| {
        let mut bytes = br#"{"operation": "sum", "operator_1": "5", "operator_2": "2"}"#.to_vec();
        for (what, at, byte) in damage {
            let at = at % (bytes.len() + 1);
            match what {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                _ => {}
            }
        }
        bytes
    })
}

/// A message key and headers of any content (WIT header keys are strings).
/// A message key and its headers.
type KeyAndHeaders = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

fn key_and_headers() -> impl Strategy<Value = KeyAndHeaders> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..32)),
        prop::collection::vec(
            (any::<String>(), prop::collection::vec(any::<u8>(), 0..32)),
            0..4,
        ),
    )
}

fn check_values(cases: u32, values: impl Strategy<Value = Vec<u8>>) {
    let path = MessagePath::new();
    check(
        cases,
        (values.prop_map(Bytes), key_and_headers()),
        |(value, (key, headers))| check_message(&path, &message(value.0, key, headers)),
    );
}

#[test]
fn arbitrary_bytes_become_outputs_or_dead_letters() {
    check_values(2048, prop::collection::vec(any::<u8>(), 0..256));
}

#[test]
fn arbitrary_json_becomes_outputs_or_dead_letters() {
    check_values(2048, json_text());
}

#[test]
fn calculator_requests_of_every_type_are_answered() {
    check_values(4096, calculator_request());
}

#[test]
fn damaged_requests_become_outputs_or_dead_letters() {
    check_values(2048, damaged_request());
}

/// Values nested up to 200,000 levels, closed or not, alone or inside a
/// field that routing or the handler reads.
fn deeply_nested() -> impl Strategy<Value = Vec<u8>> {
    let opener = prop::sample::select(vec![("[", "]"), ("{\"a\":", "}"), ("{\"operation\":", "}")]);
    let place = prop::sample::select(vec![
        ("", ""),
        ("{\"operation\":", "}"),
        (
            "{\"operation\":\"sum\",\"operator_1\":",
            ",\"operator_2\":1}",
        ),
        ("{\"operation\":\"sum\",\"x\":1,\"y\":2,\"z\":", "}"),
        ("{\"meta\":{\"op\":\"sum\"},\"x\":1,\"y\":2,\"z\":", "}"),
    ]);
    (opener, 1usize..200_000, any::<bool>(), place).prop_map(
        |((open, close), depth, closed, (before, after))| {
            let mut text = String::from(before);
            text.push_str(&open.repeat(depth));
            text.push('1');
            if closed {
                text.push_str(&close.repeat(depth));
                text.push_str(after);
            }
            text.into_bytes()
        },
    )
}

#[test]
fn deeply_nested_values_become_dead_letters() {
    check_values(64, deeply_nested());
}

/// Requests with one huge part: a long operand, a number of many digits, a
/// long field name or operation, or very many fields.
fn huge_request() -> impl Strategy<Value = Vec<u8>> {
    let size = 1usize..2_000_000;
    prop_oneof![
        size.clone().prop_map(|n| format!(
            "{{\"operation\":\"sum\",\"operator_1\":\"{}\",\"operator_2\":\"2\"}}",
            "5".repeat(n)
        )),
        size.clone()
            .prop_map(|n| format!("{{\"operation\":\"sum\",\"x\":{},\"y\":2}}", "9".repeat(n))),
        size.clone().prop_map(|n| format!(
            "{{\"operation\":\"sum\",\"x\":0.{}1,\"y\":2}}",
            "0".repeat(n)
        )),
        size.clone().prop_map(|n| format!(
            "{{\"operation\":\"sum\",\"{}\":1,\"x\":1,\"y\":2}}",
            "k".repeat(n)
        )),
        size.clone()
            .prop_map(|n| format!("{{\"operation\":\"{}\",\"x\":1,\"y\":2}}", "s".repeat(n))),
        (1usize..100_000).prop_map(|n| {
            let fields: Vec<String> = (0..n).map(|i| format!("\"f{i}\":{i}")).collect();
            format!(
                "{{\"operation\":\"sum\",\"x\":1,\"y\":2,{}}}",
                fields.join(",")
            )
        }),
        size.prop_map(|n| format!("\"{}\"", "\\u00e9".repeat(n / 6 + 1))),
    ]
    .prop_map(String::into_bytes)
}

#[test]
fn huge_values_are_answered() {
    check_values(48, huge_request());
}

/// A message value, what routing by `operation` answers, and what `add`
/// answers when it gets the value (`None`: an output).
type KindCase = (
    &'static [u8],
    Result<(), &'static str>,
    Option<&'static str>,
);

#[test]
fn empty_null_and_wrong_typed_messages_get_their_kinds() {
    let cases: &[KindCase] = &[
        (b"", Err("invalid-json"), Some("invalid-input")),
        (b" \n\t", Err("invalid-json"), Some("invalid-input")),
        (b"null", Err("missing-route"), Some("invalid-input")),
        (b"{}", Err("missing-route"), Some("invalid-input")),
        (b"[]", Err("missing-route"), Some("invalid-input")),
        (b"\"\"", Err("missing-route"), Some("invalid-input")),
        (b"0", Err("missing-route"), Some("invalid-input")),
        (b"\xff\xfe\xfd", Err("invalid-json"), Some("invalid-input")),
        (b"\"\xff\"", Err("invalid-json"), Some("invalid-input")),
        (
            b"{\"operation\":\"sum\"}\0",
            Err("invalid-json"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":null}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":5}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":true}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":[\"sum\"]}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":{\"sum\":1}}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"SUM\"}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"\"}",
            Err("unknown-route"),
            Some("invalid-input"),
        ),
        (b"{\"operation\":\"sum\"}", Ok(()), Some("invalid-input")),
        (
            b"{\"operation\":\"sum\",\"operator_1\":null,\"operator_2\":null}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"operator_1\":\"\",\"operator_2\":\"\"}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"operator_1\":[5],\"operator_2\":{\"n\":2}}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"operator_1\":true,\"operator_2\":false}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"operator_1\":\"5\"}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"x\":9223372036854775807,\"y\":1}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"x\":1e400,\"y\":1}",
            Ok(()),
            Some("invalid-input"),
        ),
        (
            b"{\"operation\":\"sum\",\"x\":\"\xff\",\"y\":1}",
            Ok(()),
            Some("invalid-input"),
        ),
        (b"{\"operation\":\"sum\",\"x\":5,\"y\":2}", Ok(()), None),
        // The last of a repeated field counts, for routing as for the handler.
        (
            b"{\"operation\":\"mul\",\"operation\":\"sum\",\"x\":5,\"y\":2}",
            Ok(()),
            None,
        ),
        (
            b"{\"operation\":\"sum\",\"operation\":\"mul\",\"x\":5,\"y\":2}",
            Err("unknown-route"),
            None,
        ),
    ];
    let path = MessagePath::new();
    let mut path = path.borrow_mut();
    for (value, routed, answer) in cases {
        let shown = value.escape_ascii().to_string();
        let got = path.routes[0]
            .resolve(value)
            .map(drop)
            .map_err(|err| err.kind().as_str());
        assert_eq!(got, *routed, "routing {shown}");
        let outcome = path.handle(&message(value.to_vec(), None, Vec::new()));
        assert_eq!(outcome.kind(), *answer, "add on {shown}: {outcome:?}");
        let document: Option<Value> = serde_json::from_slice(value).ok();
        check_outcome(&outcome, document.as_ref()).unwrap_or_else(|why| panic!("{shown}: {why}"));
    }
}

#[test]
fn a_hundred_thousand_brackets_are_dead_lettered() {
    let open = "[".repeat(100_000);
    let closed = format!("{open}{}", "]".repeat(100_000));
    let inside = format!("{{\"operation\":\"sum\",\"x\":1,\"y\":2,\"z\":{closed}}}");
    let routed = |path: &mut MessagePath, route: usize, value: &str| {
        path.deliver(route, &message(value.as_bytes().to_vec(), None, Vec::new()))
            .kind()
    };
    let path = MessagePath::new();
    let mut path = path.borrow_mut();
    assert_eq!(routed(&mut path, 0, &open), Some("invalid-json"));
    // Closed, it is a valid (if deep) array: not an object, so no route.
    assert_eq!(routed(&mut path, 0, &closed), Some("missing-route"));
    // Routing reads only `operation`; the handler refuses to read the rest.
    assert_eq!(routed(&mut path, 0, &inside), Some("invalid-input"));
    for value in [&open, &closed, &inside] {
        assert_eq!(routed(&mut path, 1, value), Some("invalid-json"));
        assert_eq!(routed(&mut path, 2, value), Some("invalid-input"));
    }
    // The instance survived all of it.
    let good = message(br#"{"x": 5, "y": 2}"#.to_vec(), None, Vec::new());
    assert_eq!(
        path.handle(&good),
        Outcome::Outputs(vec![
            json!({"x": 5, "y": 2, "result": 7})
                .to_string()
                .into_bytes()
        ])
    );
}

#[test]
fn a_value_larger_than_the_memory_limit_is_a_memory_limit_dead_letter() {
    let filler = "5".repeat(((LIMITS.memory_mib as usize) << 20) + (1 << 20));
    let value = format!("{{\"operation\":\"sum\",\"x\":\"{filler}\",\"y\":2}}").into_bytes();
    let path = MessagePath::new();
    let mut path = path.borrow_mut();
    let outcome = path.deliver(0, &message(value, None, Vec::new()));
    assert_eq!(outcome.kind(), Some("memory-limit"), "{outcome:?}");
    assert!(path.instance.is_none(), "the instance is discarded");
    let good = message(br#"{"x": 5, "y": 2}"#.to_vec(), None, Vec::new());
    assert_eq!(
        path.handle(&good),
        Outcome::Outputs(vec![
            json!({"x": 5, "y": 2, "result": 7})
                .to_string()
                .into_bytes()
        ])
    );
}

// ---------------------------------------------------------------------------
// Dead-letter headers
// ---------------------------------------------------------------------------

/// A dead letter of any known kind, reason and handler.
fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    (
        prop::sample::select(DEAD_LETTER_KINDS.to_vec()),
        any::<String>(),
        prop::option::of((any::<String>(), "[0-9a-f]{12}")),
    )
        .prop_map(|(kind, reason, handler)| DeadLetter {
            kind: ErrorKind::parse(kind).expect("a known kind"),
            reason,
            handler,
        })
}

/// The headers of `headers`, as `(key, value)` pairs.
fn pairs(headers: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
        .collect()
}

/// Checks the dead-letter headers built on top of `original`, whose
/// headers read back as `expected` (key, value).
fn check_dead_letter_headers(
    original: Option<&OwnedHeaders>,
    expected: Vec<(String, Option<Vec<u8>>)>,
    letter: &DeadLetter,
    source: Source<'_>,
) -> Result<(), TestCaseError> {
    let built = pairs(&dead_letter::dead_letter_headers(original, letter, source));
    let mut want = expected;
    let text = |value: &str| Some(value.as_bytes().to_vec());
    for (key, value) in [
        (dead_letter::ERROR_KIND, letter.kind.to_string()),
        (dead_letter::ERROR_REASON, letter.reason_line()),
        (dead_letter::SOURCE_TOPIC, source.topic.to_string()),
        (dead_letter::SOURCE_PARTITION, source.partition.to_string()),
        (dead_letter::SOURCE_OFFSET, source.offset.to_string()),
        (dead_letter::STAGE, source.stage.to_string()),
    ] {
        want.push((key.to_string(), text(&value)));
    }
    if let Some((name, version)) = &letter.handler {
        want.push((dead_letter::HANDLER.to_string(), text(name)));
        want.push((dead_letter::HANDLER_VERSION.to_string(), text(version)));
    }
    let reason = letter.reason_line();
    prop_assert!(!reason.contains(|c: char| c.is_control()), "{:?}", reason);
    prop_assert!(reason.chars().count() <= dead_letter::MAX_REASON_CHARS + 1);
    prop_assert_eq!(built, want);
    Ok(())
}

/// The key as librdkafka hands it back: up to its first NUL byte.
fn up_to_nul(key: &[u8]) -> &[u8] {
    key.split(|&b| b == 0).next().unwrap_or_default()
}

#[test]
fn dead_letter_headers_keep_any_original_headers() {
    let headers = prop::option::of(prop::collection::vec(
        (
            any::<String>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        ),
        0..12,
    ));
    let strategy = (
        headers,
        dead_letter(),
        (any::<String>(), any::<String>(), any::<i32>(), any::<i64>()),
    );
    check(
        1024,
        strategy,
        |(headers, letter, (stage, topic, partition, offset))| {
            let source = Source {
                stage: &stage,
                topic: &topic,
                partition,
                offset,
            };
            let original = headers.as_ref().map(|headers| {
                headers
                    .iter()
                    .fold(OwnedHeaders::new(), |list, (key, value)| {
                        list.insert(Header {
                            key: key.as_str(),
                            value: value.as_deref(),
                        })
                    })
            });
            let expected = headers
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| {
                    let key = String::from_utf8(up_to_nul(key.as_bytes()).to_vec()).unwrap();
                    (key, value)
                })
                .collect();
            check_dead_letter_headers(original.as_ref(), expected, &letter, source)
        },
    );
}

/// Adds a header whose key is any bytes, as a consumed record may carry
/// (Kafka does not check that header keys are UTF-8; `OwnedHeaders::insert`
/// only takes text).
fn add_raw_header(headers: &OwnedHeaders, key: &[u8], value: Option<&[u8]>) {
    let list = (headers.as_borrowed() as *const BorrowedHeaders)
        .cast_mut()
        .cast::<rd_kafka_headers_t>();
    let (value, size) = match value {
        Some(value) => (value.as_ptr().cast(), value.len() as isize),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: a `&BorrowedHeaders` is the address of the list librdkafka
    // allocated for `headers`, which nothing else uses while this runs;
    // librdkafka copies the key and value.
    let status =
        unsafe { rd_kafka_header_add(list, key.as_ptr().cast(), key.len() as isize, value, size) };
    assert_eq!(status, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
}

#[test]
fn dead_letter_headers_survive_keys_that_are_not_utf8() {
    let headers = prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..24),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..32)),
        ),
        1..8,
    );
    check(1024, (headers, dead_letter()), |(headers, letter)| {
        let original = OwnedHeaders::new();
        for (key, value) in &headers {
            add_raw_header(&original, key, value.as_deref());
        }
        let raw: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            stagehost::kafka::headers::raw_headers(&original)
                .into_iter()
                .map(|header| (header.key.to_vec(), header.value.map(<[u8]>::to_vec)))
                .collect();
        let stored: Vec<(Vec<u8>, Option<Vec<u8>>)> = headers
            .iter()
            .map(|(key, value)| (up_to_nul(key).to_vec(), value.clone()))
            .collect();
        prop_assert_eq!(raw, stored.clone(), "raw headers read back");
        let expected = stored
            .into_iter()
            .map(|(key, value)| (String::from_utf8_lossy(&key).into_owned(), value))
            .collect();
        let source = Source {
            stage: "calculator",
            topic: "calc-requests",
            partition: 1,
            offset: 2,
        };
        check_dead_letter_headers(Some(&original), expected, &letter, source)
    });
}
