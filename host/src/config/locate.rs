//! Finds the line of a field in a YAML document, so that errors found after
//! parsing (an unknown handler, a missing plugin file) can name the line too.
//!
//! It follows block-style YAML by indentation, which is what config files use;
//! when a path cannot be followed to the end it answers with the deepest line
//! it did find. A document in flow style (or JSON) has no such lines: there
//! the keys of the path are looked for in order through the text, and failing
//! that the answer is the start of the document.

use std::fmt;

/// One step of a path into the document: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key in a mapping.
    Key(String),
    /// A zero-based position in a sequence.
    Index(usize),
}

/// A path to a field, such as `stages[0].route.to.sum`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The path with one more mapping key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.into()));
        Self(segments)
    }

    /// The path with one more sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if position == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

/// Returns the 1-based line and column where `path` is written in `source`.
pub fn locate(source: &str, path: &FieldPath) -> Option<(usize, usize)> {
    let mut lines = block_lines(source);
    let followed = follow(&mut lines, path);
    followed
        .found
        .or_else(|| Some(locate_by_text(source, path)))
}

/// Every place where `key` is written as a key of the mapping at `parent`,
/// in order: more than one when the key is written twice. Block-style YAML
/// is followed by indentation; otherwise the text after the parent is
/// searched.
pub fn locate_key_occurrences(source: &str, parent: &FieldPath, key: &str) -> Vec<(usize, usize)> {
    let mut lines = block_lines(source);
    let followed = follow(&mut lines, parent);
    if followed.complete {
        let scope = followed.scope;
        if let Some(first) = lines.get(scope.start).filter(|_| !scope.is_empty()) {
            let indent = first.indent;
            let found: Vec<(usize, usize)> = lines[scope]
                .iter()
                .filter(|line| line.indent == indent && key_of(line.text) == Some(key))
                .map(|line| (line.number, line.indent + 1))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
    }
    let (line, column) = locate_by_text(source, parent);
    let from = offset_of(source, line, column);
    let mut found = Vec::new();
    let mut rest = from;
    while let Some((begin, end)) = find_key(&source[rest..], key) {
        found.push(position_of(source, rest + begin));
        rest += end;
    }
    found
}

/// The lines that hold YAML content (not blank, not comments).
fn block_lines(source: &str) -> Vec<Line<'_>> {
    source
        .lines()
        .enumerate()
        .filter_map(|(index, raw)| {
            let text = raw.trim_start();
            if text.is_empty() || text.starts_with('#') || text == "---" {
                return None;
            }
            Some(Line {
                number: index + 1,
                indent: raw.len() - text.len(),
                text,
            })
        })
        .collect()
}

/// How far a path could be followed through the lines by indentation.
struct Followed {
    /// The position of the deepest segment found.
    found: Option<(usize, usize)>,
    /// The lines inside the deepest segment found (all lines for the root).
    scope: std::ops::Range<usize>,
    /// Whether every segment was found.
    complete: bool,
}

fn follow(lines: &mut [Line<'_>], path: &FieldPath) -> Followed {
    let mut scope = 0..lines.len();
    let mut found = None;
    for segment in &path.0 {
        let Some(first) = lines.get(scope.start).filter(|_| !scope.is_empty()) else {
            return Followed {
                found,
                scope,
                complete: false,
            };
        };
        let indent = first.indent;
        let position = match segment {
            Segment::Key(key) => scope.clone().find(|&i| {
                lines[i].indent == indent && key_of(lines[i].text).is_some_and(|k| k == key)
            }),
            Segment::Index(wanted) => scope
                .clone()
                .filter(|&i| lines[i].indent == indent && is_item(lines[i].text))
                .nth(*wanted),
        };
        let Some(position) = position else {
            return Followed {
                found,
                scope,
                complete: false,
            };
        };
        found = Some((lines[position].number, lines[position].indent + 1));
        let end = (position + 1..scope.end)
            .find(|&i| lines[i].indent <= indent)
            .unwrap_or(scope.end);
        match segment {
            Segment::Index(_) => {
                // Treat "- key: value" as "  key: value" so the item's keys line up.
                let line = &mut lines[position];
                let rest = line.text[1..].trim_start();
                line.indent += line.text.len() - rest.len();
                line.text = rest;
                scope = position..end;
            }
            Segment::Key(_) => scope = position + 1..end,
        }
    }
    Followed {
        found,
        scope,
        complete: true,
    }
}

/// The byte offset of a 1-based line and column.
fn offset_of(source: &str, line: usize, column: usize) -> usize {
    let line_start: usize = source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(source.len())
}

/// The 1-based line and column of a byte offset.
fn position_of(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The position of the last key of `path` found by searching the text for
/// each key in turn (`key:`, `"key":` or `'key':`), from where the one
/// before it was found.
fn locate_by_text(source: &str, path: &FieldPath) -> (usize, usize) {
    let mut from = 0;
    let mut found = 0;
    for segment in &path.0 {
        let Segment::Key(key) = segment else { continue };
        let Some((begin, end)) = find_key(&source[from..], key) else {
            break;
        };
        found = from + begin;
        // Past the key and its closing quote: `found + key.len()` would end
        // one byte short of a quoted key, inside its last character.
        from += end;
    }
    position_of(source, found)
}

/// Where `key` is written as a mapping key in `text`, quotes included:
/// the byte offsets of its start and of its end.
fn find_key(text: &str, key: &str) -> Option<(usize, usize)> {
    if key.is_empty() {
        return None;
    }
    let mut start = 0;
    while let Some(offset) = text[start..].find(key) {
        let at = start + offset;
        let mut begin = at;
        let mut end = at + key.len();
        let quote = text[..at]
            .chars()
            .next_back()
            .filter(|c| *c == '"' || *c == '\'');
        if let Some(quote) = quote
            && text[end..].starts_with(quote)
        {
            begin -= 1;
            end += 1;
        }
        let starts_token = text[..begin]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '['));
        if starts_token && text[end..].trim_start_matches([' ', '\t']).starts_with(':') {
            return Some((begin, end));
        }
        start = at + key.len();
    }
    None
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn key_of(text: &str) -> Option<&str> {
    let (key, _) = text.split_once(':')?;
    Some(key.trim().trim_matches(|c| c == '"' || c == '\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
kafka:
  brokers: x
# comment
stages:
  - name: one
    route:
      to:
        sum: add
  - name: two
    handler: sub
";

    fn path(segments: &[Segment]) -> FieldPath {
        FieldPath(segments.to_vec())
    }

    #[test]
    fn finds_nested_keys_and_items() {
        let key = |k: &str| Segment::Key(k.to_string());
        assert_eq!(
            locate(DOC, &path(&[key("kafka"), key("brokers")])),
            Some((2, 3))
        );
        assert_eq!(
            locate(
                DOC,
                &path(&[
                    key("stages"),
                    Segment::Index(0),
                    key("route"),
                    key("to"),
                    key("sum")
                ])
            ),
            Some((8, 9))
        );
        assert_eq!(
            locate(
                DOC,
                &path(&[key("stages"), Segment::Index(1), key("handler")])
            ),
            Some((10, 5))
        );
    }

    #[test]
    fn stops_at_the_deepest_line_found() {
        let key = |k: &str| Segment::Key(k.to_string());
        assert_eq!(
            locate(
                DOC,
                &path(&[key("stages"), Segment::Index(1), key("route")])
            ),
            Some((9, 3))
        );
        // Nothing of the path is written: the start of the document.
        assert_eq!(locate(DOC, &path(&[key("nothing")])), Some((1, 1)));
    }

    #[test]
    fn finds_keys_in_flow_style_and_json() {
        let flow = "{kafka: {brokers: ''}, stages: [{name: one, handler: add}]}";
        assert_eq!(
            locate(
                flow,
                &path(&[Segment::Key("kafka".into()), Segment::Key("brokers".into())])
            ),
            Some((1, 10))
        );
        let json = "{\n  \"kafka\": {\n    \"brokers\": \"\"\n  }\n}";
        assert_eq!(
            locate(
                json,
                &path(&[Segment::Key("kafka".into()), Segment::Key("brokers".into())])
            ),
            Some((3, 5))
        );
        assert_eq!(
            locate("{a: 1}", &path(&[Segment::Key("missing".into())])),
            Some((1, 1))
        );
    }

    #[test]
    fn a_quoted_key_ending_in_a_wide_character_is_passed_whole() {
        // The search for the next key starts after the closing quote, not
        // one byte short of it, inside the key's last character. Columns
        // count bytes, as everywhere in this module.
        let json = "{\"uV🕴༈\": {\"b\": 1}}";
        let key = |name: &str| Segment::Key(name.into());
        assert_eq!(locate(json, &path(&[key("uV🕴༈"), key("b")])), Some((1, 16)));
        assert_eq!(
            locate(json, &path(&[key("uV🕴༈"), key("missing")])),
            Some((1, 2))
        );
        assert_eq!(
            locate_key_occurrences("{'é': 1, 'é': 2}", &path(&[]), "é"),
            [(1, 2), (1, 11)]
        );
    }

    #[test]
    fn finds_every_occurrence_of_a_key() {
        let doc = "a:\n  b: 1\n  c:\n    d: 2\n  b: 3\nitems:\n  - x: 1\n    x: 2\n";
        let a = FieldPath::default().key("a");
        assert_eq!(locate_key_occurrences(doc, &a, "b"), vec![(2, 3), (5, 3)]);
        assert_eq!(locate_key_occurrences(doc, &a, "c"), vec![(3, 3)]);
        let item = FieldPath::default().key("items").index(0);
        assert_eq!(
            locate_key_occurrences(doc, &item, "x"),
            vec![(7, 5), (8, 5)]
        );
        let root = FieldPath::default();
        assert_eq!(locate_key_occurrences(doc, &root, "items"), vec![(6, 1)]);
        let flow = "{a: {b: 1, b: 2}}";
        assert_eq!(locate_key_occurrences(flow, &a, "b"), vec![(1, 6), (1, 12)]);
    }

    #[test]
    fn displays_like_serde_paths() {
        let p = FieldPath::default().key("stages").index(2).key("route");
        assert_eq!(p.to_string(), "stages[2].route");
    }
}
