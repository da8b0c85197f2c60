//! `host new-plugin`: writes a handler project that builds into a component
//! and passes its own test as generated, so a new handler starts from
//! something that works.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Languages a plugin can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `stagehost-guest` kit (`json_handler!`).
    Rust,
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
/// be empty). `kit` is the repository's `plugins/guest` directory.
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
    let files: Vec<(&'static str, String)> = match language {
        Language::Rust => rust_files(name, &kit),
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    for (file, text) in &files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let crate_name = name.replace('-', "_");
    let dir_text = dir.display();
    let next_steps = format!(
        "cd {dir_text}\n\
         cargo test                                   # the generated test, natively\n\
         cargo build --target wasm32-wasip2 --release # the component\n\
         # then, in config.yml:\n\
         #   handlers:\n\
         #     {name}:\n\
         #       path: {dir_text}/target/wasm32-wasip2/release/{crate_name}.wasm\n\
         # and route to it from a stage; rebuilding swaps it in the running host.\n"
    );
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        files: files.iter().map(|(file, _)| *file).collect(),
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

fn rust_files(name: &str, kit: &Path) -> Vec<(&'static str, String)> {
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
    vec![
        ("Cargo.toml", manifest),
        ("src/lib.rs", source),
        (".gitignore", "/target\n/Cargo.lock\n".to_string()),
    ]
}
