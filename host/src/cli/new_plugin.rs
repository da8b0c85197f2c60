//! `host new-plugin`: writes a handler project that builds into a component
//! and passes its own tests as generated, so a new handler starts from
//! something that works. It is in Rust (with the guest kit), Python (built
//! with componentize-py) or JavaScript (built with componentize-js); each
//! doubles `x`, and the printed next steps are the exact commands to test and
//! build it, to run its fixtures with `host test`, and the `self_test`
//! snippet for the config.
//!
//! The project is portable: it holds a copy of what it builds against (the
//! WIT world, and for Rust the guest kit in `guest-kit/`, with the lock file
//! the kit is built with), so it builds outside the Stagehost checkout.
//!
//! With `--stateful` the handler counts the messages of each key in the
//! stage's state instead (Rust `stagehost_guest::state`, Python
//! `from wit_world.imports import state`, JavaScript
//! `stagehost:handler/state@0.2.0`); its fixtures start from given state and
//! check the state each case leaves, and the printed config has `state: {}`.

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

/// Where the vendored WIT world goes, relative to the plugin's directory
/// (for Rust, inside the vendored kit, which generates the bindings).
const PYTHON_JS_WIT: &str = "wit/stage-handler.wit";
/// Where the Rust template vendors the guest kit.
const KIT_DIR: &str = "guest-kit";

/// The fixtures every template passes: `host test` runs them on the built
/// component.
const FIXTURES: &str = r#"# `host test COMPONENT.wasm fixtures.jsonl` runs these cases in the host's sandbox.
# One case a line: the message (`json`, or text as `value`; optional `key`,
# `headers` as [key, value] pairs, `timestamp` in ms), then the `outputs` it must
# give (each `json` or `value`; `key`, `topic`, `headers` when they count) or
# the `error` kind it must end with.
{"name": "doubles x", "json": {"x": 21}, "outputs": [{"json": {"x": 21, "result": 42}}]}
{"name": "keeps the other fields and the key", "json": {"x": -4, "id": "a"}, "key": "k1", "outputs": [{"json": {"x": -4, "id": "a", "result": -8}, "key": "k1", "topic": null}]}
{"name": "a string x is invalid input", "json": {"x": "21"}, "error": "invalid-input"}
{"name": "a message that is not an object is invalid input", "json": [1], "error": "invalid-input"}
{"name": "text that is not JSON is invalid input", "value": "{", "error": "invalid-input"}
"#;

/// One language's project: its files, and how to test and build it.
struct Template {
    /// Files to write (path relative to the plugin's directory, content).
    files: Vec<(String, String)>,
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
    pub files: Vec<String>,
    /// The commands to build, test and run it.
    pub next_steps: String,
}

/// Writes a new plugin called `name` into `dir` (which must not exist yet or
/// be empty). `kit` is the repository's `plugins/guest` directory: the Rust
/// template gets a copy of it (in `guest-kit/`), and every template a copy
/// of the WIT world in the repository's `wit/` directory next to it
/// (`<kit>/../../wit`), so that the project builds without the repository.
pub fn new_plugin(
    name: &str,
    language: Language,
    dir: &Path,
    kit: &Path,
    stateful: bool,
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
    let wit = read_wit(&kit)?;
    let mut template = match language {
        Language::Rust => rust_template(name, &kit, &wit)?,
        Language::Python => python_template(name, wit.clone()),
        Language::Js => js_template(name, wit.clone()),
    };
    if stateful {
        make_stateful(&mut template, name, language);
    }
    let fixtures = if stateful {
        STATEFUL_FIXTURES
    } else {
        FIXTURES
    };
    template
        .files
        .push(("fixtures.jsonl".into(), fixtures.to_string()));
    let readme = readme(name, language, &template, stateful);
    template.files.push(("README.md".into(), readme));
    for (file, text) in &template.files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // The same for every language: go there, test and build, run the
    // fixtures, then use it (from a config anywhere: an absolute path).
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir_text = dir.display();
    let absolute_text = absolute.display();
    let config = match stateful {
        false => format!(
            "#   handlers:\n\
             #     {name}:\n\
             #       path: {absolute_text}/{artefact}\n\
             #       self_test:\n\
             #         - input: {{x: 21}}\n\
             #           output: {{x: 21, result: 42}}\n\
             #         - input: {{x: \"21\"}}\n\
             #           error: invalid-input\n\
             # and route to it from a stage; rebuilding swaps it in the running host.\n",
            artefact = template.artefact,
        ),
        true => format!(
            "#   handlers:\n\
             #     {name}:\n\
             #       path: {absolute_text}/{artefact}\n\
             #       self_test:\n\
             #         - input: {{id: 3}}\n\
             #           key: alice\n\
             #           state: {{alice: {{count: 41}}}}\n\
             #           output: {{id: 3, count: 42}}\n\
             #           expect_state: {{alice: {{count: 42}}}}\n\
             #         - input: [1]\n\
             #           key: alice\n\
             #           error: invalid-input\n\
             #   stages:\n\
             #     - name: {name}\n\
             #       input: events            # keyed: a count per key\n\
             #       output: counted\n\
             #       dead_letter: counted-dlq\n\
             #       handler: {name}\n\
             #       state: {{}}               # or {{changelog: TOPIC}}\n\
             # rebuilding swaps it in the running host, and the state stays.\n",
            artefact = template.artefact,
        ),
    };
    let next_steps = format!(
        "cd {cd}\n\
         {build}\
         {host} test {artefact} fixtures.jsonl # the fixtures, in the host's sandbox\n\
         # then, in config.yml (`host check` and every reload run the self-test):\n\
         {config}",
        cd = shell_word(&dir_text.to_string()),
        build = template.build,
        host = host_command(),
        artefact = template.artefact,
    );
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        files: template.files.into_iter().map(|(file, _)| file).collect(),
        next_steps,
    })
}

/// This `host` executable as a shell word, for the printed `host test`
/// command; plain `host` when it cannot be told.
fn host_command() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.to_str().map(shell_word))
        .unwrap_or_else(|| "host".into())
}

/// The scaffold's README: what each file is for, and the commands.
fn readme(name: &str, language: Language, template: &Template, stateful: bool) -> String {
    let (mut logic, kit) = match language {
        Language::Rust => (
            "`src/lib.rs`: the handler (doubles `x`) and its unit tests (`cargo test`).",
            "`guest-kit/`: a copy of the Stagehost guest kit (`stagehost-guest`) and, in \
             `guest-kit/wit/`, the WIT world it generates the bindings from; `Cargo.lock`: \
             the versions the kit was built with.",
        ),
        Language::Python => (
            "`handler.py`: the handler's logic (doubles `x`), tested by `test_handler.py` \
             (`python3 -m unittest`); `app.py`: the component's exports, which call it.",
            "`wit/stage-handler.wit`: a copy of the Stagehost WIT world the component \
             implements.",
        ),
        Language::Js => (
            "`src/handler.js`: the handler (doubles `x`), tested by `test/handler.test.js` \
             (`npm test`); `package.json`: the pinned componentize-js.",
            "`wit/stage-handler.wit`: a copy of the Stagehost WIT world the component \
             implements.",
        ),
    };
    let what = match stateful {
        false => "It doubles `x`:\n\
                  `{\"x\": 21}` becomes `{\"x\": 21, \"result\": 42}`, and anything else is\n\
                  invalid input, which the host dead-letters with the reason."
            .to_string(),
        true => {
            logic = match language {
                Language::Rust => {
                    "`src/lib.rs`: the handler (a count per key, in `stagehost_guest::state`) \
                     and its unit tests (`cargo test`)."
                }
                Language::Python => {
                    "`handler.py`: the handler's logic (a count per key), tested by \
                     `test_handler.py` (`python3 -m unittest`); `app.py`: the component's \
                     exports, which call it with the host's `state` import."
                }
                Language::Js => {
                    "`src/counter.js`: the handler's logic (a count per key), tested by \
                     `test/counter.test.js` (`npm test`); `src/handler.js`: the component's \
                     exports, which call it with the host's `state` import."
                }
            };
            "It counts the messages of each key\n\
             in the stage's state: `{\"id\": 3}` keyed `alice` becomes `{\"id\": 3, \"count\": 2}`\n\
             on alice's second message. The stage needs `state: {}` in the config; an\n\
             unkeyed message, or one that is not a JSON object, is invalid input."
                .to_string()
        }
    };
    format!(
        "# {name}\n\n\
         A Stagehost stage handler, made by `host new-plugin`. {what}\n\n\
         - {logic}\n\
         - {kit}\n\
         - `fixtures.jsonl`: messages and the answers they must get, run on the\n  \
         built component in the host's sandbox by `host test {artefact} fixtures.jsonl`.\n\n\
         The project needs nothing outside this directory. Test and build:\n\n\
         ```sh\n{build}host test {artefact} fixtures.jsonl\n```\n",
        build = template.build,
        artefact = template.artefact,
    )
}

/// The WIT world next to the kit, `<kit>/../../wit/stage-handler.wit`.
fn read_wit(kit: &Path) -> anyhow::Result<String> {
    let wit = kit
        .parent()
        .and_then(Path::parent)
        .map(|repo| repo.join("wit/stage-handler.wit"))
        .with_context(|| format!("{} has no grandparent directory", kit.display()))?;
    std::fs::read_to_string(&wit).with_context(|| {
        format!(
            "cannot read the WIT world {} next to the guest kit; pass --kit PATH",
            wit.display()
        )
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

/// The guest kit as files of the new project (under [`KIT_DIR`], its
/// bindings generated from a copy of `wit`), the sections of the kit's
/// workspace manifest it inherits from (`[workspace.package]` and its
/// `[workspace.dependencies]`), and the workspace's lock file, if any.
struct VendoredKit {
    files: Vec<(String, String)>,
    workspace: String,
    lock: Option<String>,
}

fn vendor_kit(kit: &Path, wit: &str) -> anyhow::Result<VendoredKit> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the guest kit's {}; pass --kit PATH",
                path.display()
            )
        })
    };
    let manifest = read(&kit.join("Cargo.toml"))?;
    let mut files = vec![(format!("{KIT_DIR}/Cargo.toml"), manifest.clone())];
    let mut sources = Vec::new();
    collect_files(&kit.join("src"), &mut sources)?;
    sources.sort();
    let mut wit_path_rewritten = false;
    for source in sources {
        let relative = source
            .strip_prefix(kit)
            .expect("a kit file is under the kit")
            .to_string_lossy()
            .replace('\\', "/");
        let mut text = read(&source)?;
        if relative == "src/lib.rs" {
            // In the repository the world is two levels up; here it is vendored.
            let before = text.len();
            text = text.replacen("path: \"../../wit\"", "path: \"wit\"", 1);
            wit_path_rewritten = text.len() != before;
        }
        files.push((format!("{KIT_DIR}/{relative}"), text));
    }
    anyhow::ensure!(
        wit_path_rewritten,
        "{}: the guest kit's `generate!` does not read `path: \"../../wit\"`; cannot vendor it",
        kit.join("src/lib.rs").display()
    );
    files.push((format!("{KIT_DIR}/wit/stage-handler.wit"), wit.to_string()));

    let workspace_dir = kit
        .parent()
        .with_context(|| format!("{} has no parent directory", kit.display()))?;
    let workspace_manifest = read(&workspace_dir.join("Cargo.toml"))?;
    let workspace = inherited_sections(&manifest, &workspace_manifest).with_context(|| {
        format!(
            "{}: what the guest kit inherits from it",
            workspace_dir.join("Cargo.toml").display()
        )
    })?;
    let lock = std::fs::read_to_string(workspace_dir.join("Cargo.lock")).ok();
    Ok(VendoredKit {
        files,
        workspace,
        lock,
    })
}

/// Every file under `dir`, recursively.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// The `[workspace.package]` section of `workspace` and the lines of its
/// `[workspace.dependencies]` that the kit's `manifest` inherits
/// (`NAME.workspace = true`), as TOML for the new project's manifest.
fn inherited_sections(manifest: &str, workspace: &str) -> anyhow::Result<String> {
    let inherited: Vec<&str> = manifest
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once('=')?;
            let key = key.trim();
            let name = key.strip_suffix(".workspace").map(str::trim);
            match name {
                Some(name) if rest.trim() == "true" => Some(name),
                _ if rest.contains("workspace = true") => Some(key),
                _ => None,
            }
        })
        .collect();
    let mut section = "";
    let mut package = String::new();
    let mut dependencies = String::new();
    for line in workspace.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed;
            continue;
        }
        match section {
            "[workspace.package]" if !trimmed.is_empty() && !trimmed.starts_with('#') => {
                package.push_str(trimmed);
                package.push('\n');
            }
            "[workspace.dependencies]" => {
                let key = trimmed.split_once('=').map(|(key, _)| key.trim());
                if key.is_some_and(|key| inherited.contains(&key)) {
                    dependencies.push_str(trimmed);
                    dependencies.push('\n');
                }
            }
            _ => {}
        }
    }
    for name in &inherited {
        let has = |text: &str| {
            text.lines().any(|line| {
                line.split_once('=')
                    .is_some_and(|(key, _)| key.trim() == *name)
            })
        };
        anyhow::ensure!(
            has(&package) || has(&dependencies),
            "no `{name}` in [workspace.package] or [workspace.dependencies]"
        );
    }
    Ok(format!(
        "[workspace.package]\n{package}\n[workspace.dependencies]\n{dependencies}"
    ))
}

fn rust_template(name: &str, kit: &Path, wit: &str) -> anyhow::Result<Template> {
    let vendored = vendor_kit(kit, wit)?;
    let workspace = vendored.workspace;
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A Stagehost stage handler that doubles `x` (made by `host new-plugin`)"

[lib]
crate-type = ["cdylib"]

[dependencies]
# The Stagehost guest kit, vendored: this project builds without the checkout.
stagehost-guest = {{ path = "{KIT_DIR}" }}

# A workspace of its own, wherever it sits; the kit in guest-kit/ is a member
# and inherits these (as in the Stagehost repository's plugins/ workspace).
[workspace]

{workspace}
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
    let mut files = vec![
        ("Cargo.toml".to_string(), manifest),
        ("src/lib.rs".to_string(), source),
        (".gitignore".to_string(), "/target\n".to_string()),
    ];
    if let Some(lock) = vendored.lock {
        files.push(("Cargo.lock".to_string(), lock));
    }
    files.extend(vendored.files);
    Ok(Template {
        files,
        build: "cargo test                                   # the generated test, natively\n\
                cargo build --target wasm32-wasip2 --release # the component\n"
            .to_string(),
        artefact: format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
    })
}

fn python_template(name: &str, wit_text: String) -> Template {
    let wit = PYTHON_JS_WIT;
    let app = format!(
        r#""""The `{name}` stage handler: the exports of the stage-handler world
({wit}). componentize-py looks for the class `WitWorld`; raising
`Err(...)` returns the error case, any other exception traps.
"""

import wit_world
from componentize_py_types import Err, Ok
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

    def handle_batch(self, msgs):
        # Several messages of a partition in one call, one result each, as
        # `handle` gives them (the host calls it with what it has fetched).
        results = []
        for msg in msgs:
            try:
                results.append(Ok(self.handle(msg)))
            except Err as err:
                results.append(err)
        return results
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
            ("app.py".to_string(), app),
            ("handler.py".to_string(), handler),
            ("test_handler.py".to_string(), test),
            (PYTHON_JS_WIT.to_string(), wit_text),
            (
                ".gitignore".to_string(),
                "__pycache__/\n*.wasm\n".to_string(),
            ),
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

fn js_template(name: &str, wit_text: String) -> Template {
    let wit = PYTHON_JS_WIT;
    let manifest = format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "description": "A Stagehost stage handler that doubles `x` (made by `host new-plugin`)",
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

// Several messages of a partition in one call, one result each, as `handle`
// gives them (the host calls it with what it has fetched).
export function handleBatch(msgs) {{
  return msgs.map((msg) => {{
    try {{
      return {{ tag: 'ok', val: handle(msg) }};
    }} catch (err) {{
      if (err && (err.tag === 'invalid-input' || err.tag === 'transient')) {{
        return {{ tag: 'err', val: err }};
      }}
      throw err;
    }}
  }});
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
            ("package.json".to_string(), manifest),
            ("src/handler.js".to_string(), source),
            ("test/handler.test.js".to_string(), test),
            (PYTHON_JS_WIT.to_string(), wit_text),
            (
                ".gitignore".to_string(),
                "node_modules/\n*.wasm\n".to_string(),
            ),
        ],
        build: format!(
            "npm install --prefer-offline                 # componentize-js as pinned, from npm's cache if there\n\
             npm test                                     # the generated test, on Node\n\
             node_modules/.bin/componentize-js src/handler.js --wit {wit} --world-name stage-handler --disable http fetch-event --out {name}.wasm\n"
        ),
        artefact: format!("{name}.wasm"),
    }
}

/// The fixtures of the stateful templates (`--stateful`): a count per key,
/// with cases that start from given state and check the state they leave.
const STATEFUL_FIXTURES: &str = r#"# `host test COMPONENT.wasm fixtures.jsonl` runs these cases in the host's sandbox,
# all in one in-memory state, so a case sees what the cases before it stored.
# One case a line: the message (`json`, or text as `value`; `key`, `headers` as
# [key, value] pairs, `timestamp` in ms), the `state` it starts from (entries
# set before it, as JSON), then the `outputs` it must give (each `json` or
# `value`; `key`, `topic`, `headers` when they count) or the `error` kind it
# must end with, and the `expect_state` it must leave (null: no entry).
{"name": "a key's first message counts 1", "key": "alice", "json": {"id": 1}, "outputs": [{"json": {"id": 1, "count": 1}}], "expect_state": {"alice": {"count": 1}}}
{"name": "each key counts on its own", "key": "bob", "json": {"id": 2}, "outputs": [{"json": {"id": 2, "count": 1}}], "expect_state": {"alice": {"count": 1}, "bob": {"count": 1}}}
{"name": "a count goes on from the saved state", "key": "alice", "json": {"id": 3}, "state": {"alice": {"count": 41}}, "outputs": [{"json": {"id": 3, "count": 42}}], "expect_state": {"alice": {"count": 42}}}
{"name": "an unkeyed message is invalid input", "json": {"id": 4}, "error": "invalid-input", "expect_state": {"alice": {"count": 42}}}
{"name": "a message that is not an object changes nothing", "key": "carol", "json": [1], "error": "invalid-input", "expect_state": {"carol": null}}
"#;

/// `src/lib.rs` of the stateful Rust template.
fn rust_stateful_source(name: &str) -> String {
    format!(
        r#"//! The `{name}` stage handler: counts the messages of each key, in the
//! stage's state (`stagehost_guest::state`).
//!
//! `{{"id": 3}}` keyed `alice` becomes `{{"id": 3, "count": 2}}` when it is
//! alice's second message; the state under `alice` is then `{{"count": 2}}`.
//! An unkeyed message, or one that is not a JSON object, is invalid input
//! (dead-lettered with the reason) and changes nothing. The stage needs
//! `state: {{}}` in the config.

use stagehost_guest::{{
    Guest, HandlerError, Message, Output, Settings, Value, export_handler, json, state,
}};

/// Counts one more message of `key` and adds the count to the message.
pub fn count(key: &[u8], mut input: Value) -> Result<Value, HandlerError> {{
    let fields = input
        .as_object_mut()
        .ok_or_else(|| HandlerError::invalid_input("the message must be a JSON object"))?;
    let saved = state::get_json(key).and_then(|saved| saved["count"].as_u64());
    let count = saved.unwrap_or(0) + 1;
    state::set_json(key, &json!({{"count": count}}));
    fields.insert("count".into(), Value::from(count));
    Ok(input)
}}

struct Counter;

impl Guest for Counter {{
    fn init(_settings: Settings) -> Result<(), String> {{
        Ok(())
    }}

    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {{
        let key = msg
            .key
            .clone()
            .ok_or_else(|| HandlerError::invalid_input("a count per key needs a keyed message"))?;
        let output = count(&key, msg.json()?)?;
        Ok(vec![Output::json(&output)])
    }}
}}

export_handler!(Counter);

#[cfg(test)]
mod tests {{
    use super::*;

    // Outside WebAssembly the kit keeps the state in memory, per thread.
    #[test]
    fn counts_each_key_on_its_own() {{
        count(b"alice", json!({{"id": 1}})).unwrap();
        count(b"bob", json!({{"id": 2}})).unwrap();
        let out = count(b"alice", json!({{"id": 3}})).unwrap();
        assert_eq!(out, json!({{"id": 3, "count": 2}}));
        assert_eq!(state::get_json(b"alice"), Some(json!({{"count": 2}})));
    }}

    #[test]
    fn a_message_that_is_not_an_object_changes_nothing() {{
        assert!(matches!(count(b"carol", json!([1])), Err(HandlerError::InvalidInput(_))));
        assert_eq!(state::get(b"carol"), None);
    }}
}}
"#
    )
}

/// `app.py`, `handler.py` and `test_handler.py` of the stateful Python
/// template.
fn python_stateful_files(name: &str) -> [(String, String); 3] {
    let wit = PYTHON_JS_WIT;
    let app = format!(
        r#""""The `{name}` stage handler: the exports of the stage-handler world
({wit}). componentize-py looks for the class `WitWorld`; raising
`Err(...)` returns the error case, any other exception traps.

It counts the messages of each key in the stage's state, through the
world's `state` import; see handler.py. The stage needs `state: {{}}` in the
config.
"""

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import state, types

import handler


class HostState:
    """The seam between the logic and the host: the `state` import."""

    @staticmethod
    def get(key: bytes):
        return state.get(key)

    @staticmethod
    def set(key: bytes, value: bytes):
        state.set(key, value, None)  # None: no time to live


class WitWorld(wit_world.WitWorld):
    def init(self, settings):
        pass

    def handle(self, msg: types.Message):
        if msg.key is None:
            raise Err(types.HandlerError_InvalidInput("a count per key needs a keyed message"))
        try:
            value = handler.count(HostState, msg.key, msg.value)
        except handler.InvalidInput as err:
            raise Err(types.HandlerError_InvalidInput(str(err)))
        # key=None keeps the input key; topic=None sends to the stage's output.
        return [types.Output(value=value, key=None, headers=[], topic=None)]

    def handle_batch(self, msgs):
        # One result per message, as `handle` gives them.
        results = []
        for msg in msgs:
            try:
                results.append(Ok(self.handle(msg)))
            except Err as err:
                results.append(err)
        return results
"#
    );
    let logic = format!(
        r#""""The `{name}` handler's logic: counts the messages of each key.

`{{"id": 3}}` keyed `alice` becomes `{{"id": 3, "count": 2}}` when it is alice's
second message; the state under `alice` is then `{{"count": 2}}`. A message
that is not a JSON object is invalid input and changes nothing.

The state is reached through a *store*, any object with `get(key) -> bytes |
None` and `set(key, value)`: in the component the host's `state` import (see
app.py), in the tests a dict.
"""

import json


class InvalidInput(Exception):
    """The message cannot be processed (`invalid-input`)."""


def count(store, key: bytes, data: bytes) -> bytes:
    """Counts one more message of `key` and adds the count to the message."""
    try:
        message = json.loads(data)
    except ValueError as err:
        raise InvalidInput(f"the message is not JSON: {{err}}") from None
    if not isinstance(message, dict):
        raise InvalidInput("the message must be a JSON object")
    saved = store.get(key)
    try:
        seen = json.loads(saved).get("count", 0) if saved is not None else 0
    except (ValueError, AttributeError):
        seen = 0
    message["count"] = (seen if type(seen) is int and seen >= 0 else 0) + 1
    store.set(key, json.dumps({{"count": message["count"]}}).encode())
    return json.dumps(message).encode()
"#
    );
    let test = r#""""Tests of the handler's logic on the local Python (`python3 -m unittest`)."""

import json
import unittest

from handler import InvalidInput, count


class DictStore(dict):
    def set(self, key, value):
        self[key] = value


class HandlerTest(unittest.TestCase):
    def test_counts_each_key_on_its_own(self):
        store = DictStore()
        count(store, b"alice", b'{"id": 1}')
        count(store, b"bob", b'{"id": 2}')
        self.assertEqual(json.loads(count(store, b"alice", b'{"id": 3}')), {"id": 3, "count": 2})
        self.assertEqual(json.loads(store[b"alice"]), {"count": 2})

    def test_a_message_that_is_not_an_object_changes_nothing(self):
        store = DictStore()
        for data in [b"[1]", b"{"]:
            with self.assertRaises(InvalidInput):
                count(store, b"carol", data)
        self.assertEqual(store, {})


if __name__ == "__main__":
    unittest.main()
"#
    .to_string();
    [
        ("app.py".to_string(), app),
        ("handler.py".to_string(), logic),
        ("test_handler.py".to_string(), test),
    ]
}

/// `src/handler.js`, `src/counter.js` and `test/counter.test.js` of the
/// stateful JavaScript template.
fn js_stateful_files(name: &str) -> [(String, String); 3] {
    let wit = PYTHON_JS_WIT;
    let exports = format!(
        r#"// The `{name}` stage handler: the exports of the stage-handler world
// ({wit}). It counts the messages of each key in the stage's
// state, through the world's `state` import; see ./counter.js. The stage
// needs `state: {{}}` in the config. Throwing {{ tag: 'invalid-input', val:
// reason }} returns that error, any other exception traps.

import * as state from 'stagehost:handler/state@0.2.0';
import {{ InvalidInput, count }} from './counter.js';

/** The seam between the logic and the host: the `state` import. */
const hostState = {{
  get: (key) => state.get(key),
  // undefined: no time to live.
  set: (key, value) => state.set(key, value, undefined),
}};

export function init(settings) {{}}

export function handle(msg) {{
  if (msg.key == null) {{
    throw {{ tag: 'invalid-input', val: 'a count per key needs a keyed message' }};
  }}
  let value;
  try {{
    value = count(hostState, msg.key, msg.value);
  }} catch (err) {{
    if (err instanceof InvalidInput) {{
      throw {{ tag: 'invalid-input', val: err.message }};
    }}
    throw err;
  }}
  // key: undefined keeps the input key; topic: undefined sends to the stage's output.
  return [{{ value, key: undefined, headers: [], topic: undefined }}];
}}

// One result per message, as `handle` gives them.
export function handleBatch(msgs) {{
  return msgs.map((msg) => {{
    try {{
      return {{ tag: 'ok', val: handle(msg) }};
    }} catch (err) {{
      if (err && (err.tag === 'invalid-input' || err.tag === 'transient')) {{
        return {{ tag: 'err', val: err }};
      }}
      throw err;
    }}
  }});
}}
"#
    );
    let logic = format!(
        r#"// The `{name}` handler's logic: counts the messages of each key.
//
// {{"id": 3}} keyed `alice` becomes {{"id": 3, "count": 2}} when it is alice's
// second message; the state under `alice` is then {{"count": 2}}. A message
// that is not a JSON object is InvalidInput and changes nothing.
//
// The state is reached through a *store*, any object with
// `get(key) -> Uint8Array | undefined` and `set(key, value)`: in the
// component the host's `state` import (see handler.js), in the tests a Map.

/** The message cannot be processed (`invalid-input`). */
export class InvalidInput extends Error {{}}

/** Counts one more message of `key` and adds the count to the message. */
export function count(store, key, value) {{
  let message;
  try {{
    message = JSON.parse(new TextDecoder().decode(value));
  }} catch (err) {{
    throw new InvalidInput(`the message is not JSON: ${{err.message}}`);
  }}
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {{
    throw new InvalidInput('the message must be a JSON object');
  }}
  let seen = 0;
  const saved = store.get(key);
  if (saved !== undefined && saved !== null) {{
    try {{
      seen = JSON.parse(new TextDecoder().decode(saved)).count;
    }} catch {{
      seen = 0;
    }}
  }}
  message.count = (Number.isSafeInteger(seen) && seen >= 0 ? seen : 0) + 1;
  store.set(key, new TextEncoder().encode(JSON.stringify({{ count: message.count }})));
  return new TextEncoder().encode(JSON.stringify(message));
}}
"#
    );
    let test = r#"// Tests of the handler's logic on Node (`npm test`).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInput, count } from '../src/counter.js';

/** A store keyed by the key's text. */
const mapStore = () => {
  const map = new Map();
  return {
    map,
    get: (key) => map.get(new TextDecoder().decode(key)),
    set: (key, value) => map.set(new TextDecoder().decode(key), value),
  };
};
const bytes = (text) => new TextEncoder().encode(text);
const parse = (value) => JSON.parse(new TextDecoder().decode(value));

test('counts each key on its own', () => {
  const store = mapStore();
  count(store, bytes('alice'), bytes('{"id": 1}'));
  count(store, bytes('bob'), bytes('{"id": 2}'));
  assert.deepEqual(parse(count(store, bytes('alice'), bytes('{"id": 3}'))), { id: 3, count: 2 });
  assert.deepEqual(parse(store.map.get('alice')), { count: 2 });
});

test('a message that is not an object changes nothing', () => {
  const store = mapStore();
  for (const text of ['[1]', '{']) {
    assert.throws(() => count(store, bytes('carol'), bytes(text)), InvalidInput, text);
  }
  assert.equal(store.map.size, 0);
});
"#
    .to_string();
    [
        ("src/handler.js".to_string(), exports),
        ("src/counter.js".to_string(), logic),
        ("test/counter.test.js".to_string(), test),
    ]
}

/// Turns a template into its stateful version: a count per key in the
/// stage's state, with fixtures that use `state` and `expect_state`.
fn make_stateful(template: &mut Template, name: &str, language: Language) {
    let replaced: Vec<(String, String)> = match language {
        Language::Rust => vec![("src/lib.rs".to_string(), rust_stateful_source(name))],
        Language::Python => python_stateful_files(name).into(),
        Language::Js => {
            template
                .files
                .retain(|(path, _)| path != "test/handler.test.js");
            js_stateful_files(name).into()
        }
    };
    for (path, text) in replaced {
        match template.files.iter_mut().find(|(known, _)| *known == path) {
            Some(file) => file.1 = text,
            None => template.files.push((path, text)),
        }
    }
    for (path, text) in &mut template.files {
        if path == "Cargo.toml" || path == "package.json" {
            *text = text.replace("that doubles `x`", "that counts messages per key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_every_template_writes_parse() {
        let cases = super::super::test::parse_fixture_text(FIXTURES).unwrap();
        assert_eq!(cases.len(), 5);
        assert!(!cases.iter().any(|case| case.uses_state()));
        let cases = super::super::test::parse_fixture_text(STATEFUL_FIXTURES).unwrap();
        assert_eq!(cases.len(), 5);
        assert!(cases.iter().all(|case| !case.expect_state.is_empty()));
        assert!(cases.iter().any(|case| !case.state.is_empty()));
    }

    #[test]
    fn a_stateful_template_replaces_the_logic_and_its_tests() {
        for language in [Language::Rust, Language::Python, Language::Js] {
            let mut template = Template {
                files: vec![
                    ("src/lib.rs".into(), String::new()),
                    ("app.py".into(), String::new()),
                    ("test/handler.test.js".into(), String::new()),
                    ("package.json".into(), "that doubles `x`".into()),
                ],
                build: String::new(),
                artefact: String::new(),
            };
            make_stateful(&mut template, "count", language);
            let file = |name: &str| {
                template
                    .files
                    .iter()
                    .find(|(path, _)| path == name)
                    .map(|(_, text)| text.as_str())
            };
            assert_eq!(file("package.json"), Some("that counts messages per key"));
            let uses = match language {
                Language::Rust => file("src/lib.rs").unwrap().contains("state::set_json"),
                Language::Python => file("app.py")
                    .unwrap()
                    .contains("from wit_world.imports import state, types"),
                Language::Js => {
                    file("test/handler.test.js").is_none()
                        && file("src/handler.js")
                            .unwrap()
                            .contains("import * as state from 'stagehost:handler/state@0.2.0'")
                }
            };
            assert!(uses, "{language:?}");
        }
    }

    #[test]
    fn the_kit_brings_what_it_inherits_from_its_workspace() {
        let kit = "[package]\nname = \"kit\"\nversion.workspace = true\n\
                   [dependencies]\nserde_json.workspace = true\nwit = { workspace = true }\n";
        let workspace = "[workspace]\nmembers = [\"kit\"]\n\n[workspace.package]\n\
                         # a comment\nversion = \"0.1.0\"\n\n[workspace.dependencies]\n\
                         kit = { path = \"kit\" }\nserde_json = \"1\"\nwit = \"0.61\"\nother = \"2\"\n";
        assert_eq!(
            inherited_sections(kit, workspace).unwrap(),
            "[workspace.package]\nversion = \"0.1.0\"\n\n\
             [workspace.dependencies]\nserde_json = \"1\"\nwit = \"0.61\"\n"
        );
        let missing = inherited_sections(kit, "[workspace.package]\nversion = \"1\"\n");
        let missing = missing.unwrap_err().to_string();
        assert!(missing.contains("no `serde_json`"), "{missing}");
    }

    #[test]
    fn the_repository_kit_is_vendored_with_its_world() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let kit = repo.join("plugins/guest");
        let wit = read_wit(&kit).unwrap();
        let vendored = vendor_kit(&kit, &wit).unwrap();
        let file = |name: &str| {
            vendored
                .files
                .iter()
                .find(|(path, _)| path == name)
                .map(|(_, text)| text.as_str())
                .unwrap_or_else(|| panic!("{name} not vendored"))
        };
        assert!(file("guest-kit/src/lib.rs").contains("path: \"wit\""));
        assert_eq!(file("guest-kit/wit/stage-handler.wit"), wit);
        assert!(vendored.workspace.contains("wit-bindgen = "));
        assert!(
            vendored
                .lock
                .is_some_and(|lock| lock.contains("name = \"wit-bindgen\""))
        );
    }
}
