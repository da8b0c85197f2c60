//! `host new-plugin`: writes a handler project that builds into a component
//! and passes its own test as generated, so a new handler starts from
//! something that works. It is in Rust (with the guest kit), Python (built
//! with componentize-py) or JavaScript (built with componentize-js); each
//! doubles `x`, and the printed next steps are the exact commands to test and
//! build it.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Languages a plugin can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `stagehost-guest` kit (`json_handler!`).
    Rust,
    /// Python, built into a component with componentize-py.
    Python,
    /// JavaScript, built into a component with componentize-js.
    Js,
}

/// The componentize-py version the Python template is built with (as in
/// scripts/build-foreign-plugins.sh).
const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The componentize-js and jco versions the JavaScript template pins (as in
/// plugins/divide/package.json).
const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
const JCO_VERSION: &str = "1.35.0";

/// One language's project: its files, and how to test and build it.
struct Template {
    /// Files to write (path relative to the plugin's directory, content).
    files: Vec<(&'static str, String)>,
    /// Shell lines, run in the plugin's directory, that test the plugin and
    /// build the component (comments after `#`).
    build: String,
    /// The component the build writes, relative to the plugin's directory.
    artefact: String,
}

/// What was written, and how to go on.
#[derive(Debug)]
pub struct Scaffolded {
    /// The new plugin's directory.
    pub dir: PathBuf,
    /// Files written, relative to `dir`.
    pub files: Vec<&'static str>,
    /// The commands to build, test and run it.
    pub next_steps: String,
}

/// Writes a new plugin called `name` into `dir` (which must not exist yet or
/// be empty). `kit` is the repository's `plugins/guest` directory: the Rust
/// template depends on it, and the Python and JavaScript ones build against
/// the WIT world in the repository's `wit/` directory next to it
/// (`<kit>/../../wit`).
pub fn new_plugin(
    name: &str,
    language: Language,
    dir: &Path,
    kit: &Path,
) -> anyhow::Result<Scaffolded> {
    check_plugin_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!("{} exists and is not empty", dir.display());
    }
    let kit = std::path::absolute(kit).unwrap_or_else(|_| kit.to_path_buf());
    let template = match language {
        Language::Rust => rust_template(name, &kit),
        Language::Python => python_template(name, &wit_path(&kit)?),
        Language::Js => js_template(name, &wit_path(&kit)?),
    };
    for (file, text) in &template.files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // The same for every language: go there, test and build, then use it.
    let dir_text = dir.display();
    let next_steps = format!(
        "cd {cd}\n\
         {build}\
         # then, in config.yml:\n\
         #   handlers:\n\
         #     {name}:\n\
         #       path: {dir_text}/{artefact}\n\
         # and route to it from a stage; rebuilding swaps it in the running host.\n",
        cd = shell_word(&dir_text.to_string()),
        build = template.build,
        artefact = template.artefact,
    );
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        files: template.files.iter().map(|(file, _)| *file).collect(),
        next_steps,
    })
}

/// Finds the guest kit (`plugins/guest`) above the current directory or the
/// `host` executable, as in a checkout where `host` is `target/release/host`.
pub fn find_kit() -> anyhow::Result<PathBuf> {
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    starts
        .into_iter()
        .flatten()
        .flat_map(|start| {
            start
                .ancestors()
                .map(|dir| dir.join("plugins/guest"))
                .collect::<Vec<_>>()
        })
        .find(|kit| kit.join("Cargo.toml").is_file())
        .context(
            "cannot find the guest kit (plugins/guest of the Stagehost repository) above the \
             current directory or the host binary; pass --kit PATH",
        )
}

/// The repository's WIT world, `<kit>/../../wit/stage-handler.wit`, as an
/// absolute path.
fn wit_path(kit: &Path) -> anyhow::Result<String> {
    let wit = kit
        .parent()
        .and_then(Path::parent)
        .map(|repo| repo.join("wit/stage-handler.wit"))
        .with_context(|| format!("{} has no grandparent directory", kit.display()))?;
    let wit = wit.canonicalize().with_context(|| {
        format!(
            "cannot find the WIT world {} next to the guest kit; pass --kit PATH",
            wit.display()
        )
    })?;
    Ok(wit.display().to_string().replace('\\', "/"))
}

/// `text` as one shell word: unchanged when it needs no quoting.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn check_plugin_name(name: &str) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "`{name}` is not a plugin name: start with a-z, then a-z, 0-9, `-` or `_`"
    );
    Ok(())
}

fn rust_template(name: &str, kit: &Path) -> Template {
    let kit = kit.display().to_string().replace('\\', "/");
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A Stagehost stage handler"

[lib]
crate-type = ["cdylib"]

[dependencies]
stagehost-guest = {{ path = "{kit}" }}

# A workspace of its own, wherever it sits.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#
    );
    let source = format!(
        r#"//! The `{name}` stage handler: doubles `x`.
//!
//! `{{"x": 21}}` becomes `{{"x": 21, "result": 42}}`; anything else is invalid
//! input, which the host dead-letters with the reason.

use stagehost_guest::{{HandlerError, Value, json_handler}};

/// Adds `result` = 2 × `x` to the message.
pub fn handle(mut input: Value) -> Result<Value, HandlerError> {{
    let x = input["x"]
        .as_i64()
        .ok_or_else(|| HandlerError::invalid_input("`x` must be an integer"))?;
    let doubled = x
        .checked_mul(2)
        .ok_or_else(|| HandlerError::invalid_input("2 × x overflows a 64-bit integer"))?;
    let fields = input
        .as_object_mut()
        .ok_or_else(|| HandlerError::invalid_input("the message must be a JSON object"))?;
    fields.insert("result".into(), Value::from(doubled));
    Ok(input)
}}

json_handler!(handle);

#[cfg(test)]
mod tests {{
    use super::*;
    use stagehost_guest::json;

    #[test]
    fn doubles_x() {{
        assert_eq!(handle(json!({{"x": 21}})).unwrap(), json!({{"x": 21, "result": 42}}));
    }}

    #[test]
    fn rejects_what_it_cannot_double() {{
        for input in [json!({{"x": "21"}}), json!({{"x": i64::MAX}}), json!([1])] {{
            assert!(matches!(handle(input), Err(HandlerError::InvalidInput(_))));
        }}
    }}
}}
"#
    );
    Template {
        files: vec![
            ("Cargo.toml", manifest),
            ("src/lib.rs", source),
            (".gitignore", "/target\n/Cargo.lock\n".to_string()),
        ],
        build: "cargo test                                   # the generated test, natively\n\
                cargo build --target wasm32-wasip2 --release # the component\n"
            .to_string(),
        artefact: format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
    }
}

fn python_template(name: &str, wit: &str) -> Template {
    let app = format!(
        r#""""The `{name}` stage handler: the exports of the stage-handler world
({wit}). componentize-py looks for the class `WitWorld`; raising
`Err(...)` returns the error case, any other exception traps.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

import handler


class WitWorld(wit_world.WitWorld):
    def init(self, settings):
        pass

    def handle(self, msg: types.Message):
        try:
            value = handler.handle_value(msg.value)
        except handler.InvalidInput as err:
            raise Err(types.HandlerError_InvalidInput(str(err)))
        # key=None keeps the input key; topic=None sends to the stage's output.
        return [types.Output(value=value, key=None, headers=[], topic=None)]
"#
    );
    let handler = format!(
        r#""""The `{name}` handler's logic: doubles `x`.

`{{"x": 21}}` becomes `{{"x": 21, "result": 42}}`; anything else is invalid
input, which the host dead-letters with the reason.
"""

import json


class InvalidInput(Exception):
    """The message cannot be processed (`invalid-input`)."""


def handle_value(data: bytes) -> bytes:
    """Adds `result` = 2 × `x` to the message (a JSON object)."""
    try:
        message = json.loads(data)
    except ValueError as err:
        raise InvalidInput(f"the message is not JSON: {{err}}") from None
    if not isinstance(message, dict):
        raise InvalidInput("the message must be a JSON object")
    x = message.get("x")
    if type(x) is not int:
        raise InvalidInput("`x` must be an integer")
    if not -(2**63) <= 2 * x < 2**63:
        raise InvalidInput("2 × x overflows a 64-bit integer")
    message["result"] = 2 * x
    return json.dumps(message).encode()
"#
    );
    let test = r#""""Tests of the handler's logic on the local Python (`python3 -m unittest`)."""

import json
import unittest

from handler import InvalidInput, handle_value


class HandlerTest(unittest.TestCase):
    def test_doubles_x(self):
        self.assertEqual(json.loads(handle_value(b'{"x": 21}')), {"x": 21, "result": 42})

    def test_rejects_what_it_cannot_double(self):
        for data in [b'{"x": "21"}', b'{"x": 9223372036854775807}', b"[1]", b"{"]:
            with self.assertRaises(InvalidInput):
                handle_value(data)


if __name__ == "__main__":
    unittest.main()
"#
    .to_string();
    let wit = shell_word(wit);
    Template {
        files: vec![
            ("app.py", app),
            ("handler.py", handler),
            ("test_handler.py", test),
            (".gitignore", "__pycache__/\n*.wasm\n".to_string()),
        ],
        build: format!(
            "python3 -m unittest                          # the generated test, natively\n\
             # componentize-py {COMPONENTIZE_PY_VERSION} in the virtual environment that\n\
             # scripts/build-foreign-plugins.sh uses (made here if missing):\n\
             venv=\"${{STAGEHOST_CACHE:-$HOME/.cache/stagehost}}/componentize-py-venv\"\n\
             [ -x \"$venv/bin/pip\" ] || python3 -m venv \"$venv\"\n\
             \"$venv/bin/pip\" install --quiet --disable-pip-version-check componentize-py=={COMPONENTIZE_PY_VERSION}\n\
             VIRTUAL_ENV=\"$venv\" \"$venv/bin/componentize-py\" -d {wit} -w stage-handler componentize -p . app -o {name}.wasm\n"
        ),
        artefact: format!("{name}.wasm"),
    }
}

fn js_template(name: &str, wit: &str) -> Template {
    let manifest = format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "description": "A Stagehost stage handler",
  "type": "module",
  "scripts": {{
    "test": "node --test test/"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS_VERSION}",
    "@bytecodealliance/jco": "{JCO_VERSION}"
  }},
  "engines": {{
    "node": ">=20"
  }}
}}
"#
    );
    let source = format!(
        r#"// The `{name}` stage handler: doubles `x`.
//
// {{"x": 21}} becomes {{"x": 21, "result": 42}}; anything else is invalid input,
// which the host dead-letters with the reason. componentize-js maps the
// exports of the stage-handler world ({wit}) to this module's
// exports; throwing {{ tag: 'invalid-input', val: reason }} returns that error,
// any other exception traps. JavaScript numbers are doubles, so `x` must be a
// safe integer (at most 2^53 - 1 in magnitude).

const invalid = (reason) => ({{ tag: 'invalid-input', val: reason }});

export function init(settings) {{}}

/** Adds `result` = 2 × `x` to the message (a JSON object). */
export function handle(msg) {{
  let message;
  try {{
    message = JSON.parse(new TextDecoder().decode(msg.value));
  }} catch (err) {{
    throw invalid(`the message is not JSON: ${{err.message}}`);
  }}
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {{
    throw invalid('the message must be a JSON object');
  }}
  if (!Number.isSafeInteger(message.x)) {{
    throw invalid('`x` must be an integer');
  }}
  message.result = 2 * message.x;
  // key: undefined keeps the input key; topic: undefined sends to the stage's output.
  const value = new TextEncoder().encode(JSON.stringify(message));
  return [{{ value, key: undefined, headers: [], topic: undefined }}];
}}
"#
    );
    let test = r#"// Tests of the handler on Node (`npm test`).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { handle } from '../src/handler.js';

const call = (text) => handle({ value: new TextEncoder().encode(text) });

test('doubles x', () => {
  const [output] = call('{"x": 21}');
  assert.deepEqual(JSON.parse(new TextDecoder().decode(output.value)), { x: 21, result: 42 });
});

test('rejects what it cannot double', () => {
  for (const text of ['{"x": "21"}', '{"x": 1.5}', '{"x": 9007199254740993}', '[1]', '{']) {
    assert.throws(() => call(text), { tag: 'invalid-input' }, text);
  }
});
"#
    .to_string();
    let wit = shell_word(wit);
    Template {
        files: vec![
            ("package.json", manifest),
            ("src/handler.js", source),
            ("test/handler.test.js", test),
            (".gitignore", "node_modules/\n*.wasm\n".to_string()),
        ],
        build: format!(
            "npm install --prefer-offline                 # componentize-js as pinned, from npm's cache if there\n\
             npm test                                     # the generated test, on Node\n\
             node_modules/.bin/componentize-js src/handler.js --wit {wit} --world-name stage-handler --disable http fetch-event --out {name}.wasm\n"
        ),
        artefact: format!("{name}.wasm"),
    }
}
