//! Human durations in policy files: `250ms`, `2s`, `1m30s`, `1h`.
//! A bare number is refused: a unit-less timeout is a bug waiting to happen.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written with units, with millisecond precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration `{text}`: {reason}; write a number and a unit (ms, s, m, h), e.g. `250ms`, `2s` or `1m30s`"
)]
pub struct DurationError {
    /// What was written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Duration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    /// The standard library duration, for timers.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u128 {
        self.0.as_millis()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| DurationError {
            text: text.to_string(),
            reason,
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(fail("it is empty"));
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(fail("expected a number"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| fail("the number is too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let scale = match unit {
                "" => return Err(fail("the unit is missing")),
                "h" => 3_600_000,
                "m" => 60_000,
                "s" => 1_000,
                "ms" => 1,
                _ => return Err(fail("unknown unit")),
            };
            total_ms = number
                .checked_mul(scale)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| fail("the duration is too large"))?;
        }
        Ok(Duration::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, scale) in UNITS {
            if ms >= scale {
                write!(f, "{}{unit}", ms / scale)?;
                ms %= scale;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any value, not just strings, so `timeout: 30` is told its unit is missing rather
        // than that it is not a string.
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Reads a [`Duration`] from text, and explains what is wrong with anything else.
struct DurationVisitor;

impl DurationVisitor {
    fn bare_number<E: serde::de::Error>(text: String, reason: &'static str) -> E {
        E::custom(DurationError { text, reason })
    }
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, e.g. `2s`")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Duration, E> {
        Err(Self::bare_number(number.to_string(), "the unit is missing"))
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Duration, E> {
        let reason = if number < 0 {
            "a duration cannot be negative"
        } else {
            "the unit is missing"
        };
        Err(Self::bare_number(number.to_string(), reason))
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Duration, E> {
        let reason = "the unit is missing, and fractions are not supported";
        Err(Self::bare_number(number.to_string(), reason))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Duration, E> {
        Err(E::custom(
            "expected a duration with a unit, e.g. `2s`, found null",
        ))
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h))+$",
            "description": "A duration with units: `250ms`, `2s`, `1m30s`, `1h`.",
            "examples": ["250ms", "2s", "1m30s"]
        })
    }
}

#[cfg(test)]
impl proptest::arbitrary::Arbitrary for Duration {
    type Parameters = ();
    type Strategy = proptest::strategy::Map<std::ops::Range<u64>, fn(u64) -> Duration>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        (0..100_000_000u64).prop_map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::Duration;

    #[test]
    fn parses_and_prints_units() {
        for (text, ms, printed) in [
            ("250ms", 250, "250ms"),
            ("2s", 2_000, "2s"),
            ("1m30s", 90_000, "1m30s"),
            ("90s", 90_000, "1m30s"),
            ("1h", 3_600_000, "1h"),
            ("0s", 0, "0s"),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), printed);
        }
    }

    #[test]
    fn refuses_bare_numbers_and_unknown_units() {
        for text in [
            "30",
            "",
            "5 sec",
            "1.5s",
            "-1s",
            "ms",
            "99999999999999999999s",
        ] {
            assert!(text.parse::<Duration>().is_err(), "{text}");
        }
    }
}
