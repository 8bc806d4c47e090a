//! The one duration grammar of partcache: configuration files, store URLs
//! (`?response_timeout=250ms`) and the attribute macros (`ttl = "5m"`) all read
//! durations the way [`humantime`] does: a number and a unit, several of them summed
//! (`"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`, `"2days"`).
//!
//! A number without a unit is refused everywhere, in text and in serde: whether `30`
//! means milliseconds or seconds is a guess a configuration file should not leave to
//! the reader.
//!
//! ```
//! use std::time::Duration;
//!
//! assert_eq!(partcache::duration::parse("1h 30m"), Ok(Duration::from_secs(5_400)));
//! assert_eq!(partcache::duration::parse("250ms"), Ok(Duration::from_millis(250)));
//! assert!(partcache::duration::parse("30").unwrap_err().contains("no unit"));
//! ```

use std::time::Duration;

/// Parses a duration in the grammar above, with a message that names the text and what
/// to write instead.
///
/// # Errors
///
/// A message (for a configuration error) when the text is empty, is a bare number, has
/// an unknown unit or overflows.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the duration is empty (write e.g. `30s`, `5m`, `250ms`)".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write `{text}ms`, `{text}s`, `{text}m`, … (units: ms, s, m, h, d and their long forms)"
        ));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}; write e.g. `30s`, `5m`, `1h 30m`, `250ms`)")
    })
}

/// Formats a duration in the same grammar (`"5m"`, `"1h 30m"`, `"250ms"`), so that
/// what is written out reads back as the same value.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde for a [`Duration`] in the grammar above (`#[serde(with = "partcache::duration::serde")]`).
pub mod serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as text, e.g. `"1h 30m"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads a duration from text; a bare number (in text or as an integer) is refused.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "the duration {n} has no unit: write \"{n}ms\", \"{n}s\", \"{n}m\", …"
            ))),
            Raw::Text(text) => super::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for an `Option<Duration>` in the grammar above; `None` is an absent field.
pub mod serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as text, `None` as none.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super::serde")] Duration);
        Option::<Wrapper>::deserialize(d).map(|w| w.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_sums_numbers_with_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("2days"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn bare_numbers_empty_text_unknown_units_and_overflow_are_refused() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("5 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse("99999999999999999999999d").is_err());
    }

    #[test]
    fn what_is_written_reads_back_as_the_same_value() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(90),
            Duration::from_secs(5_400),
            Duration::from_millis(1_500),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
    }

    #[test]
    fn serde_refuses_an_integer_and_reads_text() {
        #[derive(::serde::Deserialize, ::serde::Serialize, Debug, PartialEq)]
        struct S {
            #[serde(with = "super::serde")]
            d: Duration,
        }
        let err = serde_json::from_str::<S>(r#"{"d":30}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no unit"), "{err}");
        let err = serde_json::from_str::<S>(r#"{"d":"30"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no unit"), "{err}");
        let s: S = serde_json::from_str(r#"{"d":"1m 30s"}"#).unwrap();
        assert_eq!(s.d, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"d":"1m 30s"}"#);
    }
}
