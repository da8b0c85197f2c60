//! Config files as fixture pairs: `valid/X.yml` must load and print the plan
//! in `valid/X.plan`; `invalid/X.yml` must fail with the error in
//! `invalid/X.err`, which names the file, the line and the field.
//!
//! `UPDATE_FIXTURES=1 cargo test --test config_fixtures` rewrites the
//! expected files; review the diff before committing it.

use stagehost::config::LoadedConfig;
use std::path::{Path, PathBuf};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new("tests/fixtures/config").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn compare(actual: &str, expected_path: &Path) -> Result<(), String> {
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(expected_path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(expected_path).map_err(|err| {
        format!(
            "{}: {err} (UPDATE_FIXTURES=1 writes it)",
            expected_path.display()
        )
    })?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs\n--- expected\n{expected}\n--- actual\n{actual}",
            expected_path.display()
        ))
    }
}

#[test]
fn valid_configs_load_into_the_expected_plan() {
    let failures: Vec<String> = fixtures("valid")
        .into_iter()
        .filter_map(|path| match LoadedConfig::load(&path) {
            Ok(config) => compare(&config.plan(), &path.with_extension("plan")).err(),
            Err(err) => Some(format!("{} should load: {err}", path.display())),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn invalid_configs_fail_naming_file_line_and_field() {
    let failures: Vec<String> = fixtures("invalid")
        .into_iter()
        .filter_map(|path| match LoadedConfig::load(&path) {
            Ok(_) => Some(format!("{} should be rejected", path.display())),
            Err(err) => compare(&format!("{err}\n"), &path.with_extension("err")).err(),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
