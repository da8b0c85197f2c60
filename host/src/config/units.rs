//! Durations and sizes with units: a `*_ms` field takes a number of
//! milliseconds or a string such as `500ms`, `1.5s`, `2m` or `1h`; a byte
//! field takes a number of bytes or a string such as `100B`, `64KiB`,
//! `8MiB` or `1GB`; `memory_mib` takes a number of MiB or a size that is a
//! whole number of MiB (`64MiB`, `1GiB`). The `deserialize_*` functions are
//! for serde's `deserialize_with`; an invalid value names the units expected.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// Duration units, with their length in milliseconds.
const DURATION_UNITS: [(&str, u128); 4] =
    [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Size units (matched without regard to case), with their length in bytes.
const SIZE_UNITS: [(&str, u128); 9] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

const MIB: u128 = 1 << 20;

const DURATION_HINT: &str = "write a number of milliseconds or a number with ms, s, m or h";
const SIZE_HINT: &str = "write a number of bytes or a number with B, KB, MB, GB, KiB, MiB or GiB";
const MIB_HINT: &str = "write a number of MiB or a number with MiB or GiB";

/// Milliseconds in `text`: a bare number is milliseconds; otherwise a
/// number with `ms`, `s`, `m` or `h` (`1.5s` is 1500).
pub(crate) fn parse_millis(text: &str) -> Result<u64, String> {
    let not_a_duration = || format!("`{text}` is not a duration: {DURATION_HINT}");
    let (number, unit) = split_number(text).ok_or_else(not_a_duration)?;
    let factor = match unit {
        "" => 1,
        unit => lookup(&DURATION_UNITS, unit, false).ok_or_else(not_a_duration)?,
    };
    let millis = number.times(factor).ok_or_else(|| {
        format!("`{text}` is not a whole number of milliseconds: {DURATION_HINT}")
    })?;
    u64::try_from(millis).map_err(|_| format!("`{text}` is too long a duration"))
}

/// Bytes in `text`: a bare number is bytes; otherwise a number with a
/// decimal (`KB`, `MB`, `GB`, `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`)
/// unit, or `B`, in any case.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text, SIZE_HINT)?;
    let bytes = bytes
        .times(1)
        .ok_or_else(|| format!("`{text}` is not a whole number of bytes: {SIZE_HINT}"))?;
    u64::try_from(bytes).map_err(|_| format!("`{text}` is too large a size"))
}

/// MiB in `text`: a bare number is MiB; a number with a unit must come to
/// a whole number of MiB (`64MiB`, `1GiB`, `1048576B`).
pub(crate) fn parse_mebibytes(text: &str) -> Result<u64, String> {
    let (number, unit) =
        split_number(text).ok_or_else(|| format!("`{text}` is not a size in MiB: {MIB_HINT}"))?;
    let mebibytes = if unit.is_empty() {
        number.times(1)
    } else {
        parse_size(text, MIB_HINT)?
            .times(1)
            .filter(|bytes| bytes % MIB == 0)
            .map(|bytes| bytes / MIB)
    };
    let mebibytes =
        mebibytes.ok_or_else(|| format!("`{text}` is not a whole number of MiB: {MIB_HINT}"))?;
    u64::try_from(mebibytes).map_err(|_| format!("`{text}` is too large a size"))
}

/// `text` as a number times its size unit, not yet required to be whole.
fn parse_size(text: &str, hint: &str) -> Result<Decimal, String> {
    let not_a_size = || format!("`{text}` is not a size: {hint}");
    let (number, unit) = split_number(text).ok_or_else(not_a_size)?;
    let factor = match unit {
        "" => 1,
        unit => lookup(&SIZE_UNITS, unit, true).ok_or_else(not_a_size)?,
    };
    number
        .scaled(factor)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

fn lookup(units: &[(&str, u128)], unit: &str, ignore_case: bool) -> Option<u128> {
    units
        .iter()
        .find(|(name, _)| {
            if ignore_case {
                name.eq_ignore_ascii_case(unit)
            } else {
                *name == unit
            }
        })
        .map(|&(_, factor)| factor)
}

/// A non-negative decimal number, exactly: `digits / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    digits: u128,
    scale: u32,
}

impl Decimal {
    /// The number times `factor`, still a decimal; `None` on overflow.
    fn scaled(self, factor: u128) -> Option<Decimal> {
        Some(Decimal {
            digits: self.digits.checked_mul(factor)?,
            scale: self.scale,
        })
    }

    /// The number times `factor` when that is a whole number.
    fn times(self, factor: u128) -> Option<u128> {
        let product = self.digits.checked_mul(factor)?;
        let divisor = 10u128.checked_pow(self.scale)?;
        (product % divisor == 0).then_some(product / divisor)
    }
}

/// Splits `12.5 KiB` into the number and the unit (spaces around either
/// allowed); `None` when it does not start with a number.
fn split_number(text: &str) -> Option<(Decimal, &str)> {
    let text = text.trim();
    let integer_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (integer, rest) = text.split_at(integer_end);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after_point) => {
            let end = after_point
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_point.len());
            after_point.split_at(end)
        }
        None => ("", rest),
    };
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    let scale = u32::try_from(fraction.len()).ok()?;
    let digits = format!("{integer}{fraction}").parse::<u128>().ok()?;
    Some((Decimal { digits, scale }, rest.trim_start()))
}

/// What a unit field accepts: how to read a string, and what to say it expects.
struct UnitVisitor {
    expecting: &'static str,
    parse: fn(&str) -> Result<u64, String>,
}

impl Visitor<'_> for UnitVisitor {
    type Value = u64;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::invalid_value(de::Unexpected::Signed(value), &self))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

fn deserialize_unit<'de, D: Deserializer<'de>>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<u64, String>,
) -> Result<u64, D::Error> {
    deserializer.deserialize_any(UnitVisitor { expecting, parse })
}

/// A duration in milliseconds: a number, or a string with a unit.
pub(crate) fn deserialize_millis<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    deserialize_unit(
        deserializer,
        "a number of milliseconds or a duration like `500ms`, `1s`, `2m` or `1h`",
        parse_millis,
    )
}

/// A size in bytes: a number, or a string with a unit.
pub(crate) fn deserialize_bytes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    deserialize_unit(
        deserializer,
        "a number of bytes or a size like `64KiB`, `8MiB` or `1GB`",
        parse_bytes,
    )
}

/// A size in bytes that fits a `u32`: a number, or a string with a unit.
pub(crate) fn deserialize_bytes_u32<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    let bytes = deserialize_bytes(deserializer)?;
    u32::try_from(bytes).map_err(|_| {
        de::Error::custom(format!(
            "{bytes} bytes is too large (at most {} bytes, 4GiB)",
            u32::MAX
        ))
    })
}

/// A size in MiB: a number of MiB, or a string with a unit.
pub(crate) fn deserialize_mebibytes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    deserialize_unit(
        deserializer,
        "a number of MiB or a size like `64MiB` or `1GiB`",
        parse_mebibytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn reads_durations_with_units() {
        assert_eq!(parse_millis("250"), Ok(250));
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("1s"), Ok(1_000));
        assert_eq!(parse_millis("1.5s"), Ok(1_500));
        assert_eq!(parse_millis(" 2 m "), Ok(120_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis(".5s"), Ok(500));
    }

    #[test]
    fn refuses_durations_naming_the_units() {
        assert_eq!(
            parse_millis("5 sec"),
            Err("`5 sec` is not a duration: write a number of milliseconds or a number with ms, s, m or h".to_string())
        );
        for wrong in ["", "s", "ms5", "-1s", "1S", "1.2.3s", "1d"] {
            assert!(parse_millis(wrong).is_err(), "{wrong:?} should be refused");
        }
        assert!(
            parse_millis("1.5ms")
                .unwrap_err()
                .contains("not a whole number of milliseconds")
        );
        assert!(parse_millis("99999999999999999999h").is_err());
    }

    #[test]
    fn reads_sizes_with_decimal_and_binary_units() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("100B"), Ok(100));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1.5 kb"), Ok(1_500));
        assert_eq!(parse_bytes("2gib"), Ok(2 << 30));
    }

    #[test]
    fn refuses_sizes_naming_the_units() {
        assert_eq!(
            parse_bytes("5 megs"),
            Err("`5 megs` is not a size: write a number of bytes or a number with B, KB, MB, GB, KiB, MiB or GiB".to_string())
        );
        assert!(
            parse_bytes("1.5B")
                .unwrap_err()
                .contains("whole number of bytes")
        );
        assert!(
            parse_bytes("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn reads_memory_in_whole_mebibytes() {
        assert_eq!(parse_mebibytes("64"), Ok(64));
        assert_eq!(parse_mebibytes("64MiB"), Ok(64));
        assert_eq!(parse_mebibytes("1GiB"), Ok(1024));
        assert_eq!(parse_mebibytes("1048576B"), Ok(1));
        assert!(
            parse_mebibytes("64MB")
                .unwrap_err()
                .contains("whole number of MiB")
        );
        assert!(
            parse_mebibytes("64 megs")
                .unwrap_err()
                .contains("MiB or GiB")
        );
    }

    #[derive(Debug, Deserialize)]
    struct Fields {
        #[serde(deserialize_with = "deserialize_millis")]
        timeout_ms: u64,
        #[serde(deserialize_with = "deserialize_bytes_u32")]
        line_bytes: u32,
        #[serde(deserialize_with = "deserialize_mebibytes")]
        memory_mib: u64,
    }

    #[test]
    fn deserializes_numbers_and_strings() {
        let fields: Fields =
            serde_yaml::from_str("timeout_ms: 2s\nline_bytes: 2KiB\nmemory_mib: 128").unwrap();
        assert_eq!(
            (fields.timeout_ms, fields.line_bytes, fields.memory_mib),
            (2_000, 2_048, 128)
        );
        let fields: Fields =
            serde_yaml::from_str("timeout_ms: 30\nline_bytes: 80\nmemory_mib: 1GiB").unwrap();
        assert_eq!(
            (fields.timeout_ms, fields.line_bytes, fields.memory_mib),
            (30, 80, 1024)
        );
    }

    #[test]
    fn deserializing_refuses_wrong_values() {
        let error = |yaml: &str| {
            serde_yaml::from_str::<Fields>(yaml)
                .unwrap_err()
                .to_string()
        };
        assert!(
            error("timeout_ms: 5 sec\nline_bytes: 1\nmemory_mib: 1")
                .contains("`5 sec` is not a duration")
        );
        assert!(
            error("timeout_ms: -5\nline_bytes: 1\nmemory_mib: 1")
                .contains("expected a number of milliseconds")
        );
        assert!(
            error("timeout_ms: true\nline_bytes: 1\nmemory_mib: 1")
                .contains("expected a number of milliseconds")
        );
        assert!(error("timeout_ms: 1\nline_bytes: 5GiB\nmemory_mib: 1").contains("too large"));
    }
}
