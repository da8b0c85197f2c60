//! Values kept out of config files: any string in the config may be
//! `${NAME}` (the environment variable NAME, also inside a longer string)
//! or `file:PATH` (the content of a file, relative to the config's folder,
//! without its trailing newline). `$${` writes a literal `${`.
//!
//! The values are put in place before the config is typed; which fields
//! held a reference is remembered, so the plan and every message show the
//! reference, never the value.

use super::locate::FieldPath;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Which fields took their value from the environment or a file: the
/// field (as `kafka.properties.sasl.password`) and what it referred to.
pub type References = BTreeMap<String, String>;

/// Replaces every reference in `value`; `base` anchors relative `file:`
/// paths. Errors name the field and the reference, never a value.
pub fn resolve(
    value: &mut Value,
    base: &Path,
    at: &FieldPath,
    found: &mut References,
) -> Result<(), (FieldPath, String)> {
    match value {
        Value::String(text) => {
            if let Some(resolved) = resolve_string(text, base).map_err(|why| (at.clone(), why))? {
                found.insert(at.to_string(), text.clone());
                *text = resolved;
            }
            Ok(())
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve(item, base, &at.index(index), found)?;
            }
            Ok(())
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(key) => key.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                resolve(item, base, &at.key(key), found)?;
            }
            Ok(())
        }
        Value::Tagged(tagged) => resolve(&mut tagged.value, base, at, found),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// The value of one string, or `None` when it holds no reference.
fn resolve_string(text: &str, base: &Path) -> Result<Option<String>, String> {
    if let Some(path) = text.strip_prefix("file:") {
        let path = path.trim();
        if path.is_empty() {
            return Err("`file:` needs a path after it".into());
        }
        let full = base.join(path);
        let content = std::fs::read_to_string(&full)
            .map_err(|err| format!("`file:{path}`: cannot read {}: {err}", full.display()))?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        let content = content.strip_suffix('\r').unwrap_or(content);
        return Ok(Some(content.to_string()));
    }
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut replaced = false;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            // `$${` is a literal `${`.
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            replaced = true;
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "`${` without a closing `}`".to_string())?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not an environment variable name (letters, digits and `_`)"
            ));
        }
        let value = std::env::var(name)
            .map_err(|_| format!("`${{{name}}}`: the environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
        replaced = true;
    }
    out.push_str(rest);
    Ok(replaced.then_some(out))
}

/// Whether a property or setting name says its value is a secret, so that
/// even a value written into the file is not shown.
pub fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "key.pem",
        "private",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Result<Option<String>, String> {
        resolve_string(text, Path::new("/nonexistent"))
    }

    #[test]
    fn environment_references_are_replaced() {
        // SAFETY: tests in this module are the only readers of these names.
        unsafe {
            std::env::set_var("STAGEHOST_TEST_SECRET_A", "s3cret");
            std::env::remove_var("STAGEHOST_TEST_SECRET_UNSET");
        }
        assert_eq!(
            resolved("${STAGEHOST_TEST_SECRET_A}"),
            Ok(Some("s3cret".into()))
        );
        assert_eq!(
            resolved("user:${STAGEHOST_TEST_SECRET_A}!"),
            Ok(Some("user:s3cret!".into()))
        );
        assert_eq!(resolved("plain"), Ok(None));
        assert_eq!(resolved("price $5"), Ok(None));
        assert_eq!(resolved("$${literal}"), Ok(Some("${literal}".into())));
        let unset = resolved("${STAGEHOST_TEST_SECRET_UNSET}").unwrap_err();
        assert!(unset.contains("is not set"), "{unset}");
        assert!(resolved("${bad-name}").is_err());
        assert!(resolved("${open").is_err());
    }

    #[test]
    fn file_references_read_the_file_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("stagehost-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), "hunter2\n").unwrap();
        assert_eq!(
            resolve_string("file:password", &dir),
            Ok(Some("hunter2".into()))
        );
        let missing = resolve_string("file:absent", &dir).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
        assert!(!missing.contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secret_names_are_recognised() {
        assert!(looks_secret("sasl.password"));
        assert!(looks_secret("ssl.key.password"));
        assert!(looks_secret("sasl.oauthbearer.client.secret"));
        assert!(looks_secret("api_token"));
        assert!(!looks_secret("security.protocol"));
        assert!(!looks_secret("sasl.username"));
    }
}
