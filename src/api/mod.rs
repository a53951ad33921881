//! The SQL surface: thin `wf_*` functions that check arguments, run kept statements and map
//! errors. All are SECURITY DEFINER with a pinned `search_path`, so an application role
//! needs only EXECUTE (through `workflow_user`), never rights on the tables.

mod endpoints;
mod maintenance;

pub use maintenance::workflow::PURGE_FINISHED;
pub(crate) mod outbox;
pub(crate) mod workflows;

use crate::config;
use crate::document::Document;
use crate::workflow::validate::{self, ArgError};

/// Inputs, outputs and payloads are limited by their size as stored (uncompressed jsonb),
/// which is what they cost the tables and the dispatcher.
fn payload_size(arg: &'static str, doc: Option<Document>) -> Result<(), ArgError> {
    match doc {
        Some(doc) => validate::size(arg, doc.size(), config::max_payload_bytes()),
        None => Ok(()),
    }
}
