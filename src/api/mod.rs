//! The SQL surface: thin `wf_*` functions that check arguments, run kept statements and map
//! errors. All are SECURITY DEFINER with a pinned `search_path`, so an application role
//! needs only EXECUTE (through `workflow_user`), never rights on the tables.

mod endpoints;
mod maintenance;

pub use maintenance::workflow::PURGE_FINISHED;
mod outbox;
mod workflows;
