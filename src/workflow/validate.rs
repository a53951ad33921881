//! Argument checks shared by every SQL function, in plain Rust (no Postgres needed to test).

use std::fmt;

/// The longest name, step, owner or idempotency key accepted, in characters.
pub const MAX_NAME_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{arg} must not be NULL")]
    Null { arg: &'static str },
    #[error("{arg} must not be empty")]
    Empty { arg: &'static str },
    #[error("{arg} is {chars} characters long; at most {max} are allowed")]
    TooLong {
        arg: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("{arg} must not contain control characters")]
    ControlCharacter { arg: &'static str },
    #[error("{arg} is {bytes} bytes; workflow.max_payload_bytes allows at most {max}")]
    TooLarge {
        arg: &'static str,
        bytes: usize,
        max: usize,
    },
    #[error("{arg} must be a positive interval")]
    NotPositive { arg: &'static str },
    #[error("{arg} must be a finite timestamp, not {value}")]
    NotFinite {
        arg: &'static str,
        value: &'static str,
    },
    #[error("{arg} must not start with {prefix:?}: keys with it are the extension's own")]
    Reserved {
        arg: &'static str,
        prefix: &'static str,
    },
    #[error("{arg} {value:?} is not valid: {reason}")]
    Invalid {
        arg: &'static str,
        value: String,
        reason: String,
    },
    #[error("{arg} must be between {min} and {max}, not {got}")]
    OutOfRange {
        arg: &'static str,
        got: Bounded,
        min: Bounded,
        max: Bounded,
    },
}

/// A number shown in a range error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded(pub i64);

impl fmt::Display for Bounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A timestamp that is a point in time: `infinity` and `-infinity` are refused, so that a
/// message or a timer is due at some time the dispatcher can compute with. Takes the raw
/// `TimestampTz` (microseconds), whose extremes are the two infinities.
pub fn finite_timestamp(arg: &'static str, micros: i64) -> Result<(), ArgError> {
    match micros {
        i64::MAX => Err(ArgError::NotFinite {
            arg,
            value: "infinity",
        }),
        i64::MIN => Err(ArgError::NotFinite {
            arg,
            value: "-infinity",
        }),
        _ => Ok(()),
    }
}

/// A value the caller must supply.
pub fn required<T>(arg: &'static str, value: Option<T>) -> Result<T, ArgError> {
    value.ok_or(ArgError::Null { arg })
}

/// A required identifier: a workflow name, a step, an owner.
pub fn name<'a>(arg: &'static str, value: Option<&'a str>) -> Result<&'a str, ArgError> {
    let value = required(arg, value)?;
    check_name(arg, value)?;
    Ok(value)
}

/// An identifier the caller may omit (NULL), but not give empty.
pub fn optional_name<'a>(
    arg: &'static str,
    value: Option<&'a str>,
) -> Result<Option<&'a str>, ArgError> {
    value.map(|v| check_name(arg, v).map(|()| v)).transpose()
}

/// An event type for `wf_publish`: a name without the wildcard of the patterns.
pub fn event_type<'a>(arg: &'static str, value: Option<&'a str>) -> Result<&'a str, ArgError> {
    let value = name(arg, value)?;
    if value.contains('*') {
        return Err(ArgError::Invalid {
            arg,
            value: value.to_string(),
            reason: "an event type has no *; patterns are for endpoints' event_types".into(),
        });
    }
    Ok(value)
}

/// An endpoint's event type pattern: an event type, `prefix.*` (every type under
/// `prefix.`), or `*` (every type).
pub fn event_pattern<'a>(arg: &'static str, value: Option<&'a str>) -> Result<&'a str, ArgError> {
    let value = name(arg, value)?;
    let stars = value.matches('*').count();
    let well_placed = value == "*" || (value.ends_with(".*") && value.len() > 2);
    if stars > 1 || (stars == 1 && !well_placed) {
        return Err(ArgError::Invalid {
            arg,
            value: value.to_string(),
            reason: "* may only stand alone or end a pattern after a dot, as in order.*".into(),
        });
    }
    Ok(value)
}

/// The prefix of the idempotency keys the extension gives the messages it enqueues itself
/// (a push is `workflow.ready:<workflow>:<owner>`, a publish's message
/// `workflow.publish:<endpoint>:<key>`), which it finds them by.
pub const RESERVED_KEY_PREFIX: &str = "workflow.";

/// An application's message idempotency key: a name that does not look like the
/// extension's own keys.
pub fn message_key<'a>(
    arg: &'static str,
    value: Option<&'a str>,
) -> Result<Option<&'a str>, ArgError> {
    let key = optional_name(arg, value)?;
    match key {
        Some(key) if key.starts_with(RESERVED_KEY_PREFIX) => Err(ArgError::Reserved {
            arg,
            prefix: RESERVED_KEY_PREFIX,
        }),
        _ => Ok(key),
    }
}

fn check_name(arg: &'static str, value: &str) -> Result<(), ArgError> {
    if value.trim().is_empty() {
        return Err(ArgError::Empty { arg });
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(ArgError::TooLong {
            arg,
            chars,
            max: MAX_NAME_CHARS,
        });
    }
    // U+FFFE and U+FFFF are no XML characters: a name that holds one would break every
    // scrape of the exporter's queries, which read the views through query_to_xml.
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
    {
        return Err(ArgError::ControlCharacter { arg });
    }
    Ok(())
}

/// Free text for an operator's log and views (a pause's reason): as `text`, and without
/// control characters, which would reach the server log as they are.
pub fn reason<'a>(arg: &'static str, value: &'a str, max: usize) -> Result<&'a str, ArgError> {
    let value = text(arg, Some(value), max)?;
    if value.chars().any(char::is_control) {
        return Err(ArgError::ControlCharacter { arg });
    }
    Ok(value)
}

/// Required free text (an error message): not blank, within the payload limit.
pub fn text<'a>(
    arg: &'static str,
    value: Option<&'a str>,
    max: usize,
) -> Result<&'a str, ArgError> {
    let value = required(arg, value)?;
    if value.trim().is_empty() {
        return Err(ArgError::Empty { arg });
    }
    size(arg, value.len(), max)?;
    Ok(value)
}

/// A document's size against `workflow.max_payload_bytes`.
pub fn size(arg: &'static str, bytes: usize, max: usize) -> Result<(), ArgError> {
    if bytes > max {
        return Err(ArgError::TooLarge { arg, bytes, max });
    }
    Ok(())
}

/// An interval that must be longer than zero. Months count as 30 days, as Postgres
/// compares intervals.
pub fn positive_interval(
    arg: &'static str,
    months: i32,
    days: i32,
    micros: i64,
) -> Result<(), ArgError> {
    const MICROS_PER_DAY: i128 = 86_400_000_000;
    let total = (months as i128 * 30 + days as i128) * MICROS_PER_DAY + micros as i128;
    if total <= 0 {
        return Err(ArgError::NotPositive { arg });
    }
    Ok(())
}

pub fn in_range(arg: &'static str, value: i64, min: i64, max: i64) -> Result<i64, ArgError> {
    if value < min || value > max {
        return Err(ArgError::OutOfRange {
            arg,
            got: Bounded(value),
            min: Bounded(min),
            max: Bounded(max),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_may_not_look_like_the_extensions_own() {
        assert!(message_key("k", Some("order-1.completed")).is_ok());
        assert!(message_key("k", None).unwrap().is_none());
        assert!(matches!(
            message_key("k", Some("workflow.ready:x:y")),
            Err(ArgError::Reserved { .. })
        ));
    }

    #[test]
    fn names_must_be_present_non_blank_short_and_printable() {
        assert_eq!(name("name", Some("transfer")), Ok("transfer"));
        assert_eq!(name("name", None), Err(ArgError::Null { arg: "name" }));
        assert_eq!(
            name("name", Some("  ")),
            Err(ArgError::Empty { arg: "name" })
        );
        assert_eq!(
            name("step", Some("a\nb")),
            Err(ArgError::ControlCharacter { arg: "step" })
        );
        assert_eq!(
            name("name", Some("order\u{FFFE}")),
            Err(ArgError::ControlCharacter { arg: "name" }),
            "no XML character: it would break every scrape"
        );
        assert_eq!(
            reason("reason", "maintenance\r\nFAKE LOG LINE", 100),
            Err(ArgError::ControlCharacter { arg: "reason" })
        );
        let long = "é".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            name("name", Some(&long)),
            Err(ArgError::TooLong {
                arg: "name",
                chars: MAX_NAME_CHARS + 1,
                max: MAX_NAME_CHARS
            })
        );
        assert!(
            name("name", Some(&"é".repeat(MAX_NAME_CHARS))).is_ok(),
            "the limit counts characters, not bytes"
        );
    }

    #[test]
    fn optional_names_may_be_null_but_not_empty() {
        assert_eq!(optional_name("owner", None), Ok(None));
        assert_eq!(
            optional_name("owner", Some("")),
            Err(ArgError::Empty { arg: "owner" })
        );
    }

    #[test]
    fn sizes_at_the_limit_pass_and_above_fail() {
        assert_eq!(size("input", 10, 10), Ok(()));
        assert_eq!(
            size("input", 11, 10),
            Err(ArgError::TooLarge {
                arg: "input",
                bytes: 11,
                max: 10
            })
        );
    }

    #[test]
    fn intervals_must_be_positive_with_months_as_thirty_days() {
        assert!(positive_interval("lease", 0, 0, 1).is_ok());
        assert!(positive_interval("lease", 0, 0, 0).is_err());
        assert!(positive_interval("lease", 1, -30, 0).is_err());
        assert!(positive_interval("lease", 1, -29, 0).is_ok());
        assert!(positive_interval("lease", 0, 1, -86_400_000_000).is_err());
    }

    #[test]
    fn ranges_are_inclusive_and_errors_say_the_bounds() {
        assert_eq!(in_range("max", 1, 1, 5), Ok(1));
        let err = in_range("max", 0, 1, 5).unwrap_err();
        assert_eq!(err.to_string(), "max must be between 1 and 5, not 0");
    }
}
