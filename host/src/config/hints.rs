//! What an error most likely means, said plainly: a hint for a YAML syntax
//! error (a tab in the indentation, a key out of line, a `:` without a
//! space after it), and the closest valid name for an unknown field or
//! variant, by edit distance over the names serde says it expected.

/// A one-line hint for a YAML syntax error at 1-based `line`, from the
/// parser's `message` and the text around the line; `None` when the
/// message is not a syntax error this knows.
pub(super) fn syntax_hint(source: &str, line: usize, message: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    // The parser often notices a mistake on the line after it.
    let suspects: Vec<(usize, &str)> = (line.saturating_sub(1).max(1)..=line)
        .filter_map(|number| lines.get(number - 1).map(|text| (number, *text)))
        .collect();
    let has_tab = |text: &str| {
        text.chars()
            .take_while(|c| c.is_whitespace())
            .any(|c| c == '\t')
    };
    if message.contains("tab character") || suspects.iter().any(|(_, text)| has_tab(text)) {
        let tab_line = suspects
            .iter()
            .rev()
            .find(|(_, text)| has_tab(text))
            .map_or(line, |(number, _)| *number);
        return Some(format!(
            "hint: line {tab_line} is indented with a tab; YAML does not allow tabs in indentation, use spaces"
        ));
    }
    let structural = [
        "mapping values are not allowed",
        "did not find expected key",
        "could not find expected ':'",
        "did not find expected '-' indicator",
        "block sequence entries are not allowed",
        "found character that cannot start any token",
    ];
    if !structural.iter().any(|known| message.contains(known)) {
        return None;
    }
    if let Some((number, key, value)) = suspects
        .iter()
        .rev()
        .find_map(|(number, text)| key_without_space(text).map(|(k, v)| (*number, k, v)))
    {
        return Some(format!(
            "hint: line {number}: `{key}:{value}` needs a space after the `:` (`{key}: {value}`)"
        ));
    }
    if message.contains("mapping values are not allowed") {
        return Some(
            "hint: a `key: value` cannot follow a value on the same line; check this line's indentation against the line above, and quote a value that contains `: `"
                .to_string(),
        );
    }
    Some(
        "hint: check the indentation: the keys of one mapping start in the same column, as do the `- ` items of one list"
            .to_string(),
    )
}

/// `key:value` written without the space YAML needs after the colon, as
/// (key, value): the key a plain name, the value right after the colon.
fn key_without_space(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let text = text.strip_prefix("- ").unwrap_or(text).trim_start();
    let (key, value) = text.split_once(':')?;
    let is_name = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.chars().all(|c| c.is_ascii_digit());
    let glued = value.chars().next().is_some_and(|c| !c.is_whitespace());
    (is_name && glued).then_some((key, value.trim_end()))
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or variant) with
/// the closest expected name suggested instead of the whole list, when one
/// is close enough to be a likely typo; `None` otherwise.
pub(super) fn suggest_name(message: &str) -> Option<String> {
    let (kind, rest) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix).map(|rest| (*prefix, rest)))?;
    let (unknown, expected) = rest.split_once('`')?;
    let expected = expected.strip_prefix(", expected ")?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let closest = closest_name(unknown, &candidates)?;
    Some(format!("{kind}{unknown}`; did you mean `{closest}`?"))
}

/// The candidate nearest to `unknown` by edit distance, if near enough:
/// at most a third of the longer name's length (at least 1) apart.
pub(super) fn closest_name<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let unknown_lower = unknown.to_ascii_lowercase();
    candidates
        .iter()
        .map(|candidate| {
            let distance = edit_distance(&unknown_lower, &candidate.to_ascii_lowercase());
            (distance, *candidate)
        })
        .filter(|(distance, candidate)| {
            let longest = unknown.chars().count().max(candidate.chars().count());
            *distance <= (longest / 3).max(1)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, with a swap of two neighbours counting as one
/// edit (`timoeut` is one from `timeout`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_edits() {
        assert_eq!(edit_distance("timout_ms", "timeout_ms"), 1);
        assert_eq!(edit_distance("timoeut_ms", "timeout_ms"), 1);
        assert_eq!(edit_distance("ouput", "output"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    #[test]
    fn suggests_the_closest_expected_field() {
        assert_eq!(
            suggest_name(
                "unknown field `timout_ms`, expected one of `memory_mib`, `timeout_ms`, `fuel`"
            ),
            Some("unknown field `timout_ms`; did you mean `timeout_ms`?".to_string())
        );
        assert_eq!(
            suggest_name("unknown field `Input`, expected `input` or `output`"),
            Some("unknown field `Input`; did you mean `input`?".to_string())
        );
        assert_eq!(
            suggest_name(
                "unknown variant `exactly-twice`, expected `at-least-once` or `exactly-once`"
            ),
            Some("unknown variant `exactly-twice`; did you mean `exactly-once`?".to_string())
        );
    }

    #[test]
    fn suggests_nothing_far_from_every_name() {
        assert_eq!(
            suggest_name("unknown field `colour`, expected one of `name`, `input`, `output`"),
            None
        );
        assert_eq!(suggest_name("unknown field `x`, there are no fields"), None);
        assert_eq!(suggest_name("missing field `kafka`"), None);
    }

    #[test]
    fn hints_at_tabs_in_indentation() {
        let source = "kafka:\n\tbrokers: x\n";
        let hint = syntax_hint(source, 2, "found character that cannot start any token").unwrap();
        assert!(hint.contains("line 2 is indented with a tab"), "{hint}");
        assert!(hint.contains("use spaces"), "{hint}");
    }

    #[test]
    fn hints_at_a_missing_space_after_a_colon() {
        let source = "kafka:\n  brokers: x\n  group:y\n  z: 1\n";
        assert_eq!(
            syntax_hint(source, 4, "could not find expected ':'").as_deref(),
            Some("hint: line 3: `group:y` needs a space after the `:` (`group: y`)")
        );
        // An address is not a key without a space.
        assert_eq!(key_without_space("- 127.0.0.1:9092"), None);
        assert_eq!(key_without_space("brokers: a:1"), None);
    }

    #[test]
    fn hints_at_indentation() {
        let source = "kafka:\n    brokers: x\n  group: y\n";
        let hint = syntax_hint(source, 3, "did not find expected key").unwrap();
        assert!(hint.contains("check the indentation"), "{hint}");
        let source = "kafka:\n  brokers: x: y\n";
        let hint =
            syntax_hint(source, 2, "mapping values are not allowed in this context").unwrap();
        assert!(hint.contains("quote a value"), "{hint}");
        assert_eq!(syntax_hint(source, 2, "missing field `kafka`"), None);
    }
}
