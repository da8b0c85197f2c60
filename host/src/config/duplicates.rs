//! Duplicate keys, refused before the file is typed: serde would take the
//! last of two entries of a map silently, and for a struct say only
//! "duplicate field" at the start of its mapping. The error here points at
//! the second key and names the line of the first.

use super::error::{ConfigError, Located};
use super::locate::{self, FieldPath};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::Value;
use std::cell::RefCell;
use std::fmt;

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Duplicate {
    /// The mapping that holds it.
    parent: FieldPath,
    /// The key, as text.
    key: String,
}

/// Refuses a key written twice in one mapping, anywhere in `source`.
/// `Ok` when there is none, and also when the text is not YAML: the typed
/// parse that follows reports that.
pub(super) fn check(at: Located<'_>) -> Result<(), ConfigError> {
    let found = RefCell::new(None);
    let walker = Walker {
        path: FieldPath::default(),
        found: &found,
    };
    let Err(_) = walker.deserialize(serde_yaml::Deserializer::from_str(at.source)) else {
        return Ok(());
    };
    let Some(duplicate) = found.into_inner() else {
        return Ok(());
    };
    let places = locate::locate_key_occurrences(at.source, &duplicate.parent, &duplicate.key);
    let message = match places.first() {
        Some((first_line, _)) if places.len() > 1 => format!(
            "duplicate key `{}` (first at line {first_line})",
            duplicate.key
        ),
        _ => format!("duplicate key `{}`", duplicate.key),
    };
    Err(ConfigError {
        file: at.path.to_path_buf(),
        position: places
            .get(1)
            .copied()
            .or_else(|| locate::locate(at.source, &duplicate.parent)),
        field: duplicate.parent.to_string(),
        message,
    })
}

/// Walks every value of the document, keeping its path, and stops at the
/// first mapping with a key already seen in it.
struct Walker<'a> {
    path: FieldPath,
    found: &'a RefCell<Option<Duplicate>>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0;
        while items
            .next_element_seed(Walker {
                path: self.path.index(index),
                found: self.found,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut seen: Vec<Value> = Vec::new();
        while let Some(key) = entries.next_key::<Value>()? {
            let name = key_text(&key);
            if seen.contains(&key) {
                *self.found.borrow_mut() = Some(Duplicate {
                    parent: self.path.clone(),
                    key: name,
                });
                return Err(de::Error::custom("duplicate key"));
            }
            seen.push(key);
            entries.next_value_seed(Walker {
                path: self.path.key(name),
                found: self.found,
            })?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, tagged: A) -> Result<(), A::Error> {
        // A `!tag value`: the value is walked as it would be untagged.
        let (_, value) = tagged.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }
}

/// A key as the error names it: strings as written, other scalars as YAML.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other)
            .map(|text| text.trim_end().to_string())
            .unwrap_or_else(|_| "?".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_text(source: &str) -> Result<(), String> {
        check(Located {
            path: Path::new("c.yml"),
            source,
        })
        .map_err(|err| err.to_string())
    }

    #[test]
    fn names_both_lines_of_a_duplicate_struct_field() {
        let source = "handlers:\n  add:\n    limits:\n      timeout_ms: 5\n      fuel: 9\n      timeout_ms: 6\n";
        assert_eq!(
            check_text(source),
            Err(
                "c.yml:6:7: handlers.add.limits: duplicate key `timeout_ms` (first at line 4)"
                    .into()
            )
        );
    }

    #[test]
    fn names_both_lines_of_a_duplicate_map_entry_in_a_list() {
        let source =
            "stages:\n  - name: a\n    route:\n      to:\n        sum: add\n        sum: sub\n";
        assert_eq!(
            check_text(source),
            Err("c.yml:6:9: stages[0].route.to: duplicate key `sum` (first at line 5)".into())
        );
    }

    #[test]
    fn finds_duplicates_at_the_top_and_in_flow_style() {
        assert_eq!(
            check_text("kafka: 1\nstages: 2\nkafka: 3\n"),
            Err("c.yml:3:1: duplicate key `kafka` (first at line 1)".into())
        );
        assert_eq!(
            check_text("{a: {b: 1, b: 2}}"),
            Err("c.yml:1:12: a: duplicate key `b` (first at line 1)".into())
        );
    }

    #[test]
    fn passes_documents_without_duplicates_and_non_yaml() {
        assert_eq!(
            check_text("a:\n  b: 1\nc:\n  b: 2\nl: [{b: 1}, {b: 2}]\n"),
            Ok(())
        );
        assert_eq!(check_text("same: &x {k: 1}\nother: *x\n"), Ok(()));
        assert_eq!(check_text("a: [unclosed\n"), Ok(()));
        assert_eq!(check_text(""), Ok(()));
    }
}
