//! Scalars with the exact wire formats of API.md.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, Utc};

/// An instant, written as RFC 3339 in UTC with millisecond precision
/// (`2026-11-22T10:15:30.123Z`). Inputs may use any offset; they are converted to UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

/// An instant in RFC 3339 format, always in UTC with millisecond precision
/// (`2026-11-22T10:15:30.123Z`). Inputs may carry any offset.
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|dt| DateTime(dt.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("expected an RFC 3339 date-time string")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok())
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(value: chrono::DateTime<Utc>) -> Self {
        DateTime(value)
    }
}

/// An exact decimal number carried as a JSON string (`"0.015"`).
///
/// A JSON number is refused: clients parse numbers into binary floats, and a float
/// cannot hold most decimal amounts exactly, so accepting one would invite lost cents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decimal(pub rust_decimal::Decimal);

/// Longest accepted input; anything longer is not a real amount and would only cost
/// parsing time.
const MAX_DECIMAL_LEN: usize = 64;

fn parse_decimal(s: &str) -> Result<rust_decimal::Decimal, &'static str> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_DECIMAL_LEN {
        return Err("expected a decimal string such as \"12.5\"");
    }
    let plain = s
        .strip_prefix('-')
        .unwrap_or(s)
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.');
    if !plain || s.matches('.').count() > 1 || s.starts_with('.') || s.ends_with('.') {
        return Err(
            "expected a plain decimal string such as \"12.5\" (no exponent, no separators)",
        );
    }
    rust_decimal::Decimal::from_str_exact(s)
        .map(|d| d.normalize())
        .map_err(|_| "the number is out of range or has more than 28 decimal places")
}

/// An exact decimal number as a JSON string, e.g. `"0.015"`. A JSON number is refused
/// with `BAD_USER_INPUT`: binary floats cannot hold most decimal amounts exactly.
#[Scalar(name = "Decimal")]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => parse_decimal(s)
                .map(Decimal)
                .map_err(InputValueError::custom),
            Value::Number(_) => Err(InputValueError::custom(
                "a Decimal must be sent as a string, e.g. \"0.015\", never as a JSON number",
            )),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(s) if parse_decimal(s).is_ok())
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.normalize().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> rust_decimal::Decimal {
        rust_decimal::Decimal::from_str_exact(s).expect("literal")
    }

    #[test]
    fn decimals_parse_exactly_from_strings() {
        let parsed = Decimal::parse(Value::from("0.015")).expect("valid");
        assert_eq!(parsed.0, dec("0.015"));
        assert_eq!(
            Decimal::parse(Value::from("-12.50"))
                .expect("valid")
                .to_value(),
            Value::from("-12.5")
        );
        assert_eq!(Decimal(dec("100")).to_value(), Value::from("100"));
    }

    #[test]
    fn decimals_refuse_numbers_and_junk() {
        assert!(Decimal::parse(Value::from(0.1)).is_err());
        assert!(Decimal::parse(Value::from(1)).is_err());
        for bad in [
            "",
            "1e3",
            "abc",
            "1.2.3",
            ".5",
            "5.",
            "1,000",
            "NaN",
            "Infinity",
            "+1",
            " ",
            "1000000000000000000000000000000",
            "0.0000000000000000000000000000000000000001",
        ] {
            assert!(
                Decimal::parse(Value::from(bad)).is_err(),
                "accepted {bad:?}"
            );
            assert!(!Decimal::is_valid(&Value::from(bad)), "valid {bad:?}");
        }
        assert!(Decimal::parse(Value::from("9".repeat(100))).is_err());
    }

    #[test]
    fn datetimes_are_utc_with_milliseconds() {
        let parsed = DateTime::parse(Value::from("2026-11-22T12:00:00.5+02:00")).expect("valid");
        assert_eq!(parsed.to_value(), Value::from("2026-11-22T10:00:00.500Z"));
        assert!(DateTime::parse(Value::from("yesterday")).is_err());
        assert!(DateTime::parse(Value::from(1_700_000_000)).is_err());
    }
}
