//! The SQL surface: thin `wf_*` functions that check arguments, run kept statements and map
//! errors. All are SECURITY DEFINER with a pinned `search_path`, so an application role
//! needs only EXECUTE (through `workflow_user`), never rights on the tables.

mod crowding;
mod dispatch;
mod endpoints;
mod handlers;
mod maintenance;
mod origin;
mod signals;

pub(crate) mod outbox;
mod publish;
mod queues;
mod replay;
pub(crate) mod workflows;

use crate::config;
use crate::delivery::headers;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::workflow::validate::{self, ArgError};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Runs the statements of a write function. Where nothing can be written — a hot standby,
/// a read-only transaction — it refuses at once with `25006`, before SPI would try to
/// assign a transaction id.
pub(crate) fn write<R>(
    action: &'static str,
    statements: impl FnOnce(&mut SpiClient<'_>) -> Result<R, WfError>,
) -> R {
    // SAFETY: reading backend globals on the main thread inside a transaction.
    let (read_only, standby) = unsafe { (pg_sys::XactReadOnly, pg_sys::RecoveryInProgress()) };
    if read_only {
        WfError::ReadOnly { action, standby }.raise();
    }
    Spi::connect_mut(statements).or_raise()
}

/// Runs the statements of a read-only function: no transaction id, standby-safe.
pub(crate) fn read<R>(statements: impl FnOnce(&SpiClient<'_>) -> Result<R, WfError>) -> R {
    Spi::connect(statements).or_raise()
}

/// Inputs, outputs and payloads are limited by their size as stored (uncompressed jsonb),
/// which is what they cost the tables and the dispatcher.
fn payload_size(arg: &'static str, doc: Option<Document>) -> Result<(), ArgError> {
    match doc {
        Some(doc) => validate::size(arg, doc.size(), config::max_payload_bytes()),
        None => Ok(()),
    }
}

/// The checks every new message passes, enqueued or published: a payload within the size
/// limit, a headers document the dispatcher can read, a finite due time.
fn message_parts(
    payload: Option<Document>,
    headers: Option<Document>,
    deliver_at: Option<pgrx::datum::TimestampWithTimeZone>,
) -> Result<Document, WfError> {
    let payload = validate::required("payload", payload)?;
    payload_size("payload", Some(payload))?;
    header_doc("headers", headers)?;
    if let Some(due) = deliver_at {
        validate::finite_timestamp("deliver_at", due.into_inner())?;
    }
    Ok(payload)
}

/// Checks a headers document. It is read with the extension's own parser, so a document
/// it cannot hold (nested past its depth limit, a number like `1e400`) is a `22023` like
/// any other bad header, not an internal error.
fn header_doc(arg: &'static str, doc: Option<Document>) -> Result<(), WfError> {
    if let Some(doc) = doc {
        let invalid = |reason: String| WfError::InvalidHeaders { arg, reason };
        let value: serde_json::Value = serde_json::from_str(&doc.to_text())
            .map_err(|e| invalid(format!("cannot be read as headers: {e}")))?;
        headers::parse(&value).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}
