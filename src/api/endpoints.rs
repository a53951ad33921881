//! Named endpoints: where, how signed, with which headers, timeout and attempts. Changing
//! them is for the extension owner; applications only name them in `wf_enqueue`.

use crate::db::{self, Statement};
use crate::delivery::signing::Secret;
use crate::delivery::target;
use crate::dispatcher::wake;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::pg_sys::{BOOLOID, INT4OID, INTERVALOID, JSONBOID, TEXTARRAYOID, TEXTOID};
use pgrx::prelude::*;

const MAX_ENDPOINT_ATTEMPTS: i64 = 1000;
const MAX_TIMEOUT_MICROS: i64 = 3_600_000_000;

static UPSERT: Statement = Statement {
    sql: "INSERT INTO workflow.endpoint_settings AS e (name, url, secrets, headers, timeout, max_attempts)
          VALUES ($1, $2, COALESCE($3, '{}'), $4, $5, $6)
          ON CONFLICT (name) DO UPDATE
             SET url = EXCLUDED.url,
                 secrets = CASE WHEN $7 THEN EXCLUDED.secrets ELSE e.secrets END,
                 headers = EXCLUDED.headers,
                 timeout = EXCLUDED.timeout,
                 max_attempts = EXCLUDED.max_attempts,
                 updated_at = statement_timestamp()",
    args: &[TEXTOID, TEXTOID, TEXTARRAYOID, JSONBOID, INTERVALOID, INT4OID, BOOLOID],
};

/// The flag has the dispatcher unpark the endpoint's messages (see its `parking` module);
/// set on every call, so that an enable also frees messages parked while the endpoint was
/// disabled by hand.
static ENABLE: Statement = Statement {
    sql: "UPDATE workflow.endpoint_settings
             SET disabled_at = NULL, disabled_reason = NULL, updated_at = statement_timestamp(),
                 unpark_messages = true
           WHERE name = $1
          RETURNING name",
    args: &[TEXTOID],
};

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
    if secret == "generate" {
        return Ok(SecretChange::Generate(Secret::generate()));
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

/// Creates or updates the endpoint `name`. `secret`: one or more `whsec_…` secrets separated
/// by spaces (each signs every request), `'generate'` for a fresh one (returned), or NULL to
/// keep the current secrets. Other NULL arguments mean the defaults.
#[allow(clippy::too_many_arguments)] // the SQL signature is the SPEC's
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_endpoint(
    name: Option<&str>,
    url: Option<&str>,
    secret: default!(Option<&str>, "NULL"),
    headers: default!(Option<Document>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    max_concurrency: default!(Option<i32>, "NULL"),
    rate_per_second: default!(Option<i32>, "NULL"),
) -> Option<String> {
    let name = validate::name("name", name).or_raise();
    if target::is_url(name) {
        WfError::EndpointNameIsUrl(name.to_string()).raise();
    }
    let url = validate::required("url", url).or_raise();
    target::parse_url(url)
        .map_err(|e| WfError::InvalidUrl {
            arg: "url",
            reason: e.to_string(),
        })
        .or_raise();
    let secret = parse_secret(secret).or_raise();
    super::header_doc("headers", headers).or_raise();
    if let Some(timeout) = timeout {
        validate::positive_interval(
            "timeout",
            timeout.months(),
            timeout.days(),
            timeout.micros(),
        )
        .or_raise();
        validate::in_range(
            "timeout (in microseconds)",
            timeout.as_micros().min(i64::MAX as i128) as i64,
            1,
            MAX_TIMEOUT_MICROS,
        )
        .or_raise();
    }
    if let Some(n) = max_attempts {
        validate::in_range("max_attempts", n.into(), 1, MAX_ENDPOINT_ATTEMPTS).or_raise();
    }
    if max_concurrency.is_some() {
        WfError::NotSupported("per-endpoint max_concurrency").raise();
    }
    if rate_per_second.is_some() {
        WfError::NotSupported("per-endpoint rate_per_second").raise();
    }

    let (replace, secrets, generated) = match secret {
        SecretChange::Keep => (false, None, None),
        SecretChange::Set(secrets) => (true, Some(secrets), None),
        SecretChange::Generate(secret) => (true, Some(vec![secret.clone()]), Some(secret)),
    };
    super::write("wf_endpoint", |client| {
        let args: [DatumWithOid; 7] = [
            name.into(),
            url.into(),
            secrets.into(),
            headers.into(),
            timeout.into(),
            max_attempts.into(),
            replace.into(),
        ];
        Ok(db::execute(client, &UPSERT, &args, |_| Ok(()))?)
    });
    generated
}

/// Re-enables an endpoint disabled after a 410; its waiting messages go out again.
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
