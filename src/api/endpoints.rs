//! Named endpoints: where, how signed, with which headers, timeout, attempts and limits. Changing
//! them is for the extension owner; applications only name them in `wf_enqueue`.

use crate::db::{self, Statement, first_value};
use crate::delivery::retry;
use crate::delivery::signing::Secret;
use crate::delivery::target;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::{AnyNumeric, DatumWithOid, Interval};
use pgrx::pg_sys::{
    BOOLOID, FLOAT8OID, INT4OID, INTERVALARRAYOID, INTERVALOID, JSONBOID, TEXTARRAYOID, TEXTOID,
};
use pgrx::prelude::*;

const MAX_ENDPOINT_ATTEMPTS: i64 = 1000;
const MAX_TIMEOUT_MICROS: i64 = 3_600_000_000;
const MAX_ENDPOINT_CONCURRENCY: i64 = 1000;
const MAX_RATE_PER_SECOND: f64 = 100_000.0;
/// One request per `claim::LEASE_MARGIN`: a claimed message's turn then always comes
/// before its lease would run out.
const MIN_RATE_PER_SECOND: f64 = 0.1;
const MAX_EVENT_TYPES: usize = 100;
/// The longest reason `wf_endpoint_disable` keeps.
const MAX_REASON_BYTES: usize = 1000;
/// The longest `keep_old` of a rotation.
const MAX_KEEP_OLD_MICROS: i64 = 30 * 86_400_000_000;

const ENDPOINT_ARGS: &[pgrx::pg_sys::Oid] = &[
    TEXTOID,
    TEXTOID,
    TEXTARRAYOID,
    JSONBOID,
    INTERVALOID,
    INT4OID,
    INT4OID,
    FLOAT8OID,
    TEXTARRAYOID,
    INTERVALARRAYOID,
    BOOLOID,
];

/// Creates an endpoint with a URL, or changes the one of that name.
static UPSERT: Statement = Statement {
    sql: include_str!("endpoints/upsert.sql"),
    args: ENDPOINT_ARGS,
};

/// Changes an endpoint without touching its URL (`$2` is NULL): there is nothing to create.
static UPDATE: Statement = Statement {
    sql: include_str!("endpoints/update.sql"),
    args: ENDPOINT_ARGS,
};

/// The flag has the dispatcher unpark the endpoint's messages (see its `parking` module);
/// set on every call, so that an enable also frees messages parked while the endpoint was
/// disabled by hand.
static ENABLE: Statement = Statement {
    sql: include_str!("endpoints/enable.sql"),
    args: &[TEXTOID],
};

/// Disables the endpoint by hand: its messages wait, parked by the next claim that finds
/// them; nothing is attempted until it is enabled.
static DISABLE: Statement = Statement {
    sql: include_str!("endpoints/disable.sql"),
    args: &[TEXTOID, TEXTOID],
};

/// A rotation: the new secret signs from now on, and the current ones (with any still being
/// rotated out) go on signing until `$3` from now.
static ROTATE: Statement = Statement {
    sql: include_str!("endpoints/rotate.sql"),
    args: &[TEXTOID, TEXTOID, INTERVALOID, INT4OID],
};

/// The most secrets an endpoint rotates out at once: a request carries at most one more
/// signature than this. Rotating faster than `keep_old` retires the oldest early.
const MAX_RETIRING_SECRETS: i32 = 4;

/// What `secret` asks for.
enum SecretChange {
    Keep,
    Set(Vec<String>),
    Generate(String),
}

fn parse_secret(secret: Option<&str>) -> Result<SecretChange, WfError> {
    let Some(secret) = secret else {
        return Ok(SecretChange::Keep);
    };
    match secret {
        "generate" => return Ok(SecretChange::Generate(Secret::generate())),
        "none" => return Ok(SecretChange::Set(Vec::new())),
        _ => {}
    }
    // Several secrets, space-separated, sign in parallel during a rotation.
    let secrets: Vec<String> = secret.split_whitespace().map(str::to_string).collect();
    if secrets.is_empty() {
        return Err(validate::ArgError::Empty { arg: "secret" }.into());
    }
    for (position, s) in secrets.iter().enumerate() {
        Secret::parse(s).map_err(|e| WfError::InvalidSecret {
            position: position + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(SecretChange::Set(secrets))
}

fn check_timeout(timeout: Interval) -> Result<(), WfError> {
    if timeout.as_micros() == 0 {
        return Ok(()); // the reset
    }
    validate::positive_interval(
        "timeout",
        timeout.months(),
        timeout.days(),
        timeout.micros(),
    )?;
    validate::in_range(
        "timeout (in microseconds)",
        timeout.as_micros().min(i64::MAX as i128) as i64,
        1,
        MAX_TIMEOUT_MICROS,
    )?;
    Ok(())
}

pub(super) fn check_rate(rate: AnyNumeric) -> Result<f64, WfError> {
    let text = rate.to_string();
    let value: f64 = text.parse().unwrap_or(f64::NAN);
    // Checked on the number as written: a rate too small for a float (1e-400) reads as 0,
    // which would remove the limit.
    let zero = text
        .chars()
        .filter(char::is_ascii_digit)
        .all(|digit| digit == '0');
    if !((value == 0.0 && zero) || (MIN_RATE_PER_SECOND..=MAX_RATE_PER_SECOND).contains(&value)) {
        return Err(validate::ArgError::Invalid {
            arg: "rate_per_second",
            value: text,
            reason: format!(
                "a rate is 0 (no limit) or between {MIN_RATE_PER_SECOND} and {MAX_RATE_PER_SECOND} requests a second"
            ),
        }
        .into());
    }
    Ok(value)
}

fn check_event_types(patterns: Vec<Option<String>>) -> Result<Vec<String>, WfError> {
    if patterns.len() > MAX_EVENT_TYPES {
        validate::in_range(
            "event_types (entries)",
            patterns.len() as i64,
            0,
            MAX_EVENT_TYPES as i64,
        )?;
    }
    let mut checked = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        checked.push(validate::event_pattern("event_types", pattern.as_deref())?.to_string());
    }
    Ok(checked)
}

fn check_schedule(delays: Vec<Option<Interval>>) -> Result<Vec<Interval>, WfError> {
    if delays.is_empty() {
        return Ok(delays.into_iter().flatten().collect()); // the reset
    }
    retry::check_length(delays.len()).map_err(|reason| invalid_schedule(&delays, reason))?;
    let mut checked = Vec::with_capacity(delays.len());
    for delay in &delays {
        let Some(delay) = delay else {
            return Err(validate::ArgError::Null {
                arg: "retry_schedule (an entry)",
            }
            .into());
        };
        let seconds = delay.as_micros() as f64 / 1e6;
        retry::schedule_entry(seconds).map_err(|reason| invalid_schedule(&delays, reason))?;
        checked.push(*delay);
    }
    Ok(checked)
}

fn invalid_schedule(delays: &[Option<Interval>], reason: String) -> WfError {
    validate::ArgError::Invalid {
        arg: "retry_schedule",
        value: format!("{} delays", delays.len()),
        reason,
    }
    .into()
}

/// Creates the endpoint `name`, or changes only the fields given.
///
/// `url` is required to create one. `secret`: one or more `whsec_…` secrets separated by
/// spaces (each signs every request), `'generate'` for a fresh one (returned), `'none'` for
/// unsigned requests. A NULL argument keeps its field; these reset one to its default:
/// `headers => '{}'`, `timeout => '0'`, `max_attempts => 0`, `max_concurrency => 0`,
/// `rate_per_second => 0` (no limit), `event_types => '{}'`, `retry_schedule => '{}'`.
#[allow(clippy::too_many_arguments)] // the SQL signature is the SPEC's
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_endpoint(
    name: Option<&str>,
    url: default!(Option<&str>, "NULL"),
    secret: default!(Option<&str>, "NULL"),
    headers: default!(Option<Document>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    max_concurrency: default!(Option<i32>, "NULL"),
    rate_per_second: default!(Option<AnyNumeric>, "NULL"),
    event_types: default!(Option<Vec<Option<String>>>, "NULL"),
    retry_schedule: default!(Option<Vec<Option<Interval>>>, "NULL"),
) -> Option<String> {
    let name = validate::name("name", name).or_raise();
    if target::is_url(name) {
        WfError::EndpointNameIsUrl(name.to_string()).raise();
    }
    if let Some(url) = url {
        target::parse_url(url)
            .map_err(|e| WfError::InvalidUrl {
                arg: "url",
                reason: e.to_string(),
            })
            .or_raise();
    }
    let secret = parse_secret(secret).or_raise();
    super::header_doc("headers", headers).or_raise();
    if let Some(timeout) = timeout {
        check_timeout(timeout).or_raise();
    }
    if let Some(n) = max_attempts
        && n != 0
    {
        validate::in_range("max_attempts", n.into(), 1, MAX_ENDPOINT_ATTEMPTS).or_raise();
    }
    if let Some(n) = max_concurrency {
        validate::in_range("max_concurrency", n.into(), 0, MAX_ENDPOINT_CONCURRENCY).or_raise();
    }
    let rate = rate_per_second.map(|rate| check_rate(rate).or_raise());
    let event_types = event_types.map(|types| check_event_types(types).or_raise());
    let retry_schedule = retry_schedule.map(|delays| check_schedule(delays).or_raise());

    let (replace, secrets, generated) = match secret {
        SecretChange::Keep => (false, None, None),
        SecretChange::Set(secrets) => (true, Some(secrets), None),
        SecretChange::Generate(secret) => (true, Some(vec![secret.clone()]), Some(secret)),
    };
    super::write("wf_endpoint", |client| {
        let args: [DatumWithOid; 11] = [
            name.into(),
            url.into(),
            secrets.into(),
            headers.into(),
            timeout.into(),
            max_attempts.into(),
            max_concurrency.into(),
            rate.into(),
            event_types.into(),
            retry_schedule.into(),
            replace.into(),
        ];
        let statement = if url.is_some() { &UPSERT } else { &UPDATE };
        db::execute(client, statement, &args, first_value::<bool>)?
            .map(|_| ())
            .ok_or_else(|| WfError::UnknownEndpoint(name.to_string()))
    });
    // The dispatcher reads the limits again, and lets go of messages parked at old ones.
    wake::flag_on_commit();
    generated
}

/// Adds a generated secret to the endpoint `name` and returns it (the only time it is
/// shown): from now on every request is signed with it, and with the secrets it replaces
/// for `keep_old` more (0: not at all), so that receivers can switch without downtime.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_endpoint_rotate(
    name: Option<&str>,
    keep_old: default!(Option<Interval>, "'24 hours'"),
) -> String {
    let name = validate::name("name", name).or_raise();
    let keep_old = validate::required("keep_old", keep_old).or_raise();
    validate::in_range(
        "keep_old (in microseconds)",
        keep_old
            .as_micros()
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        0,
        MAX_KEEP_OLD_MICROS,
    )
    .or_raise();
    let secret = Secret::generate();
    let found = super::write("wf_endpoint_rotate", |client| {
        let args: [DatumWithOid; 4] = [
            name.into(),
            secret.as_str().into(),
            keep_old.into(),
            MAX_RETIRING_SECRETS.into(),
        ];
        Ok(db::execute(client, &ROTATE, &args, |rows| {
            Ok(!rows.is_empty())
        })?)
    });
    if !found {
        WfError::UnknownEndpoint(name.to_string()).raise();
    }
    secret
}

/// Disables an endpoint by hand — a receiver's maintenance, a copy's refresh — with the
/// reason shown in `workflow.endpoints`: its messages wait, nothing is lost, nothing is
/// attempted until `wf_endpoint_enable`. Disabling it again changes only the reason (kept
/// when none is given).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_endpoint_disable(name: Option<&str>, reason: default!(Option<&str>, "NULL")) {
    let name = validate::name("name", name).or_raise();
    let reason = reason
        .map(|reason| validate::text("reason", Some(reason), MAX_REASON_BYTES))
        .transpose()
        .or_raise();
    let found = super::write("wf_endpoint_disable", |client| {
        Ok(db::execute(
            client,
            &DISABLE,
            &[name.into(), reason.into()],
            |rows| Ok(!rows.is_empty()),
        )?)
    });
    if !found {
        WfError::UnknownEndpoint(name.to_string()).raise();
    }
}

/// Re-enables an endpoint disabled by hand, after a 410 or for failing too long: all its
/// waiting messages are due at once, also those waiting on their retry schedule (G11).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_endpoint_enable(name: Option<&str>) {
    let name = validate::name("name", name).or_raise();
    let found = super::write("wf_endpoint_enable", |client| {
        Ok(db::execute(client, &ENABLE, &[name.into()], |rows| {
            Ok(!rows.is_empty())
        })?)
    });
    if !found {
        WfError::UnknownEndpoint(name.to_string()).raise();
    }
    wake::flag_on_commit();
}
