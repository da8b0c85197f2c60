//! Reading a config file: bytes to text, text to the typed file, secrets
//! put in place, then checked and resolved into a [`Pipeline`]. Every error
//! names the file, the line and the field.

use super::duplicates;
use super::error::{ConfigError, Located};
use super::file::Config;
use super::hints;
use super::locate::{self, FieldPath};
use super::pipeline::{Pipeline, StagePlan};
use super::secrets::{self, References};
use super::validate;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A checked config, resolved, with its text kept for locating fields.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's text.
    pub source: String,
    /// What it describes.
    pub pipeline: Pipeline,
    /// The stages this host runs (`host run --stage`); `None` runs them all.
    pub selected: Option<BTreeSet<String>>,
    /// The fields whose value came from `${NAME}` or `file:PATH`, with the
    /// reference: shown instead of the value.
    pub references: References,
}

impl LoadedConfig {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let error = |position, message| ConfigError {
            file: path.to_path_buf(),
            position,
            field: String::new(),
            message,
        };
        let bytes = std::fs::read(path)
            .map_err(|err| error(None, format!("cannot read the file: {err}")))?;
        let source = String::from_utf8(bytes).map_err(|err| {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            // The bytes before the first invalid one are UTF-8 by definition.
            let position = std::str::from_utf8(valid)
                .ok()
                .and_then(|text| line_and_column(text, text.len()));
            error(
                position,
                "the file is not UTF-8 text (an invalid byte here)".to_string(),
            )
        })?;
        Self::from_source(path, source)
    }

    /// Parses and checks config text; `path` names it in errors and anchors
    /// relative plugin paths.
    pub fn from_source(path: &Path, source: String) -> Result<Self, ConfigError> {
        let yaml_error = |err: serde_yaml::Error| {
            let mut position = err
                .location()
                .map(|at| line_and_column(&source, at.index()).unwrap_or((at.line(), at.column())));
            let mut text = without_positions(&err.to_string());
            if text.contains("more than one document") {
                // serde_yaml gives this error no position: find the second
                // document's first line.
                position = second_document_start(&source)
                    .and_then(|index| line_and_column(&source, index))
                    .or(position);
                text = "the file holds more than one YAML document (a second one starts here); a config is one document, so remove this `---` or `...` and what follows, or merge it into the first".to_string();
            }
            let (field, mut message) = split_serde_path(&text);
            if let Some(suggestion) = hints::suggest_name(&message) {
                message = suggestion;
            }
            if let Some(unknown) = unknown_field(&message)
                && let Some(parent) = parse_serde_path(&field)
                && let Some(&written) =
                    locate::locate_key_occurrences(&source, &parent, unknown).first()
            {
                // Point at the unknown key itself, not at its mapping.
                position = Some(written);
            }
            if field.is_empty()
                && let Some((line, _)) = position
                && let Some(hint) = hints::syntax_hint(&source, line, &message)
            {
                message = format!("{message}\n  {hint}");
            }
            ConfigError {
                file: path.to_path_buf(),
                position,
                field,
                message,
            }
        };
        let at = Located {
            path,
            source: &source,
        };
        duplicates::check(at)?;
        // Typed from the text first, for errors that point into it.
        let mut config: Config = serde_yaml::from_str(&source).map_err(yaml_error)?;
        let mut raw: serde_yaml::Value = serde_yaml::from_str(&source).map_err(yaml_error)?;
        let mut references = References::new();
        let base = path.parent().unwrap_or(Path::new("."));
        secrets::resolve(&mut raw, base, &FieldPath::default(), &mut references)
            .map_err(|(field, message)| at.error(&field, message))?;
        if !references.is_empty() {
            // Only strings changed, into strings: this typing succeeds as the first did.
            config = serde_yaml::from_value(raw).map_err(yaml_error)?;
        }
        let pipeline = validate::resolve(&config, at)?;
        Ok(Self {
            path: path.to_path_buf(),
            source,
            pipeline,
            selected: None,
            references,
        })
    }

    /// Limits the stages this host runs to `names`; none given runs all.
    /// The rest of the graph is still checked, and runs elsewhere.
    pub fn select_stages(mut self, names: &[String]) -> Result<Self, ConfigError> {
        if names.is_empty() {
            self.selected = None;
            return Ok(self);
        }
        let known: BTreeSet<&str> = self
            .pipeline
            .stages
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        if let Some(unknown) = names.iter().find(|name| !known.contains(name.as_str())) {
            let known = known.into_iter().collect::<Vec<_>>().join(", ");
            return Err(ConfigError {
                file: self.path.clone(),
                position: None,
                field: "stages".into(),
                message: format!("`--stage {unknown}`: no such stage (stages: {known})"),
            });
        }
        self.selected = Some(names.iter().cloned().collect());
        Ok(self)
    }

    /// Whether this host runs `stage`.
    pub fn runs(&self, stage: &str) -> bool {
        self.selected
            .as_ref()
            .is_none_or(|selected| selected.contains(stage))
    }

    /// The stages this host runs: all, or the selected ones.
    pub fn running_stages(&self) -> impl Iterator<Item = &StagePlan> {
        self.pipeline
            .stages
            .iter()
            .filter(|stage| self.runs(&stage.name))
    }

    /// An error about `field`, located in the source.
    pub fn error(&self, field: &FieldPath, message: impl Into<String>) -> ConfigError {
        Located {
            path: &self.path,
            source: &self.source,
        }
        .error(field, message)
    }
}

/// The 1-based line and column of byte `index` in `source`, lines ending
/// at `\n`, `\r\n` or `\r` (as editors count them) and columns counted in
/// characters. The YAML parser's own line also counts U+2028, U+2029 and
/// U+0085 as line breaks, so it could name a line past the end of the file.
fn line_and_column(source: &str, index: usize) -> Option<(usize, usize)> {
    let before = source.get(..index)?;
    let mut line = 1;
    let mut column = 1;
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        let ends_line = c == '\n' || (c == '\r' && chars.peek() != Some(&'\n'));
        if ends_line {
            line += 1;
            column = 1;
        } else if c != '\r' {
            column += 1;
        }
    }
    Some((line, column))
}

/// The byte index of the line where a second YAML document starts: a
/// `---` marker after a first document's content or marker, or content
/// after a `...` end marker. A `---` or `...` at the start of a line always
/// marks a document (YAML forbids them there inside scalars), so lines can
/// be read on their own. `None` for a single document.
fn second_document_start(source: &str) -> Option<usize> {
    let is_marker = |line: &str, marker: &str| {
        line.strip_prefix(marker)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let (mut begun, mut ended) = (false, false);
    let mut start = 0;
    while start < source.len() {
        let rest = &source[start..];
        let length = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..length];
        let trimmed = line.trim_start();
        if is_marker(line, "---") {
            if begun || ended {
                return Some(start);
            }
            begun = true;
        } else if is_marker(line, "...") {
            let after = line[3..].trim_start();
            if begun && !after.is_empty() && !after.starts_with('#') {
                // `... a`: the next document starts on the marker's line.
                return Some(start);
            }
            ended = begun;
        } else if trimmed.is_empty() || trimmed.starts_with('#') {
            // Blank lines and comments belong to no document.
        } else if !begun && line.starts_with('%') {
            // A directive, before the document it applies to.
        } else if ended {
            return Some(start);
        } else {
            begun = true;
        }
        let ending = if rest[length..].starts_with("\r\n") {
            2
        } else {
            1
        };
        start += length + ending;
    }
    None
}

/// Removes serde_yaml's " at line L column C" phrases: the error's
/// position already says where.
fn without_positions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let tail = &after[digits..];
        match tail.strip_prefix(" column ") {
            Some(column) if digits > 0 => {
                rest = column.trim_start_matches(|c: char| c.is_ascii_digit());
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits serde_yaml's `path.to.field: message` into its two parts.
fn split_serde_path(text: &str) -> (String, String) {
    match text.split_once(": ") {
        Some((path, rest))
            if !path.contains(' ')
                && path
                    .chars()
                    .all(|c| c.is_alphanumeric() || "._-[]".contains(c)) =>
        {
            (path.to_string(), rest.to_string())
        }
        _ => (String::new(), text.to_string()),
    }
}

/// The name in serde's "unknown field `name`...".
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")?
        .split_once('`')
        .map(|(name, _)| name)
}

/// serde_yaml's path text (`stages[0].route`) as a [`FieldPath`]; `None`
/// for a path it cannot follow (a key that is not a string, shown `?`).
fn parse_serde_path(text: &str) -> Option<FieldPath> {
    let mut path = FieldPath::default();
    if text.is_empty() {
        return Some(path);
    }
    for part in text.split('.') {
        let (key, mut indexes) = part
            .split_once('[')
            .map_or((part, ""), |(key, rest)| (key, rest));
        if key.is_empty() || key == "?" {
            return None;
        }
        path = path.key(key);
        while !indexes.is_empty() {
            let (index, rest) = indexes.split_once(']')?;
            path = path.index(index.parse().ok()?);
            indexes = rest.strip_prefix('[').unwrap_or(rest);
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::locate::Segment;

    #[test]
    fn splits_serde_paths_from_messages() {
        assert_eq!(
            split_serde_path("stages[0]: missing field `input`"),
            ("stages[0]".to_string(), "missing field `input`".to_string())
        );
        assert_eq!(
            split_serde_path("missing field `kafka`"),
            (String::new(), "missing field `kafka`".to_string())
        );
    }

    #[test]
    fn reads_serde_paths() {
        assert_eq!(
            parse_serde_path("stages[0].route.to"),
            Some(
                FieldPath::default()
                    .key("stages")
                    .index(0)
                    .key("route")
                    .key("to")
            )
        );
        assert_eq!(
            parse_serde_path("a[1][2]"),
            Some(FieldPath(vec![
                Segment::Key("a".into()),
                Segment::Index(1),
                Segment::Index(2)
            ]))
        );
        assert_eq!(parse_serde_path(""), Some(FieldPath::default()));
        assert_eq!(parse_serde_path("a.?"), None);
        assert_eq!(
            unknown_field("unknown field `ouput`; did you mean `output`?"),
            Some("ouput")
        );
    }

    #[test]
    fn a_syntax_error_after_a_line_separator_names_the_line_an_editor_shows() {
        // U+2028 is a line break to the YAML parser, not to the file's
        // lines: the error used to name line 13 of this 11-line file.
        let source = [
            "kafka:",
            "  brokers: localhost:9092",
            "handlers:",
            "  echo:",
            "    path: echo.wasm",
            "stages:",
            "  - name: only",
            "    input: in",
            "    output: out",
            "    dead_letter: dlq",
            "    handler: \u{2028}-!",
            "",
        ]
        .join("\n");
        let err = LoadedConfig::from_source(Path::new("bad.yml"), source.clone())
            .expect_err("not valid YAML");
        // The parser stops at the end of the text: the line after the
        // last newline, which the file's 11 lines end with.
        assert_eq!(err.position, Some((12, 1)));
        assert_eq!(line_and_column("ab\ncé\u{2028}d", 9), Some((2, 4)));
        assert_eq!(line_and_column("a\r\nb\rc", 6), Some((3, 2)));
        assert_eq!(line_and_column("é", 1), None);
    }

    #[test]
    fn an_invalid_byte_is_named_at_its_line_whatever_the_line_ends() {
        let dir = std::env::temp_dir().join(format!("stagehost-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (ends, name) in [("\n", "lf"), ("\r\n", "crlf"), ("\r", "cr")] {
            let path = dir.join(format!("{name}.yml"));
            let mut bytes = format!("kafka:{ends}  brokers: é").into_bytes();
            bytes.push(0xff);
            std::fs::write(&path, bytes).unwrap();
            let err = LoadedConfig::load(&path).expect_err("not UTF-8");
            assert_eq!(err.position, Some((2, 13)), "{name}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_document_is_named_at_its_first_line() {
        // serde_yaml reports the second document once the first is typed.
        let first = include_str!("../../tests/fixtures/config/valid/minimal.yml");
        let lines = first.lines().count();
        let source = format!("{first}# the end\n---\nstages: []\n");
        let err =
            LoadedConfig::from_source(Path::new("two.yml"), source).expect_err("two documents");
        assert_eq!(err.position, Some((lines + 2, 1)), "{err}");
        assert!(err.message.contains("more than one YAML document"), "{err}");
        let err = LoadedConfig::from_source(Path::new("two.yml"), format!("{first}... a\n"))
            .expect_err("two documents");
        assert_eq!(err.position, Some((lines + 1, 1)), "{err}");
        assert_eq!(second_document_start("a: 1\n"), None);
        assert_eq!(second_document_start("%YAML 1.2\n---\na: 1\n...\n"), None);
        assert_eq!(second_document_start("---\n--- b\n"), Some(4));
        assert_eq!(second_document_start("a: 1\n... b\n"), Some(5));
        assert_eq!(second_document_start("a: 1\n... # end\n"), None);
        assert_eq!(second_document_start("a: 1\r\n...\r\n\r\nb: 2"), Some(13));
        assert_eq!(
            second_document_start("a: |\n  ---\n---x\n---\t\n"),
            Some(16)
        );
    }

    #[test]
    fn drops_serde_positions() {
        assert_eq!(
            without_positions("did not find expected key at line 6 column 4, while parsing"),
            "did not find expected key, while parsing"
        );
        assert_eq!(without_positions("x at line y"), "x at line y");
    }
}
