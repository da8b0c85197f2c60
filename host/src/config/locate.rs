//! Finds the line of a field in a YAML document, so that errors found after
//! parsing (an unknown handler, a missing plugin file) can name the line too.
//!
//! It follows block-style YAML by indentation, which is what config files use;
//! when a path cannot be followed to the end it answers with the deepest line
//! it did find.

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
    let mut lines: Vec<Line<'_>> = source
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
        .collect();

    let mut scope = 0..lines.len();
    let mut found = None;
    for segment in &path.0 {
        let Some(first) = lines.get(scope.start).filter(|_| !scope.is_empty()) else {
            break;
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
        let Some(position) = position else { break };
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
    found
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
        assert_eq!(locate(DOC, &path(&[key("nothing")])), None);
    }

    #[test]
    fn displays_like_serde_paths() {
        let p = FieldPath::default().key("stages").index(2).key("route");
        assert_eq!(p.to_string(), "stages[2].route");
    }
}
