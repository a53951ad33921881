//! Every error the SQL surface can raise, mapped to a SQLSTATE in one place.
//!
//! Logic modules return typed errors; only [`WfError::raise`] turns them into a Postgres
//! `ERROR`. Messages name the argument and the problem, never a secret.

use crate::workflow::validate::ArgError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum WfError {
    #[error(transparent)]
    InvalidArgument(#[from] ArgError),
    #[error("{arg} {reason}")]
    InvalidUrl { arg: &'static str, reason: String },
    #[error("{arg} {reason}")]
    InvalidHeaders { arg: &'static str, reason: String },
    #[error("secret {position}: {reason}")]
    InvalidSecret { position: usize, reason: String },
    #[error("step needs workflow: a durable HTTP step belongs to a workflow")]
    StepWithoutWorkflow,
    #[error("endpoint name {0:?} looks like a URL; endpoint names must not contain \"://\"")]
    EndpointNameIsUrl(String),
    #[error("workflow {0} does not exist")]
    UnknownWorkflow(pgrx::Uuid),
    #[error("message {0} does not exist")]
    UnknownMessage(i64),
    #[error("endpoint {0:?} does not exist")]
    UnknownEndpoint(String),
    #[error("no push handler for workflows named {0:?}")]
    UnknownHandler(String),
    #[error("no queue for workflows named {0:?}")]
    UnknownQueue(String),
    #[error("workflow {id} is {status}; {action} needs a running workflow")]
    NotRunning {
        id: pgrx::Uuid,
        status: String,
        action: &'static str,
    },
    #[error("workflow {id} is not leased to {owner}; {action} changed nothing")]
    NotLeasedTo {
        id: pgrx::Uuid,
        owner: String,
        action: &'static str,
    },
    #[error("workflow {id} is parked (sleeping or waiting); {action} needs a leased workflow")]
    Parked {
        id: pgrx::Uuid,
        action: &'static str,
    },
    #[error("workflow {id} has nothing to wait for in step {step:?}: {}", if *cancelled { "its durable HTTP step was cancelled" } else { "no signal was named and no durable HTTP step of that name was enqueued" })]
    NothingToWaitFor {
        id: pgrx::Uuid,
        step: String,
        cancelled: bool,
    },
    #[error("message {id} is {status}; {action} needs a {allowed} message")]
    MessageState {
        id: i64,
        status: String,
        action: &'static str,
        allowed: &'static str,
    },
    #[error(
        "message {id} is a durable step its workflow decided without ({}); it is not sent again",
        decided_reason(decided)
    )]
    StepDecided { id: i64, decided: String },
    #[error("{action} cannot run in a read-only transaction{}", if *standby { " (this server is a hot standby)" } else { "" })]
    ReadOnly { action: &'static str, standby: bool },
    #[error("the row with this idempotency_key was created and removed concurrently, repeatedly")]
    StartRace,
    #[error("a workflow named {name:?} was already started with idempotency_key {key:?}")]
    AlreadyStarted {
        name: String,
        key: String,
        id: pgrx::Uuid,
    },
    #[error("workflow {id} changed concurrently while {action} ran, twice")]
    ChangedConcurrently {
        id: pgrx::Uuid,
        action: &'static str,
    },
    #[error("internal error in the workflow extension: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl WfError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            WfError::InvalidArgument(e) => match e {
                ArgError::Null { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
                ArgError::TooLong { .. } => ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
                ArgError::TooLarge { .. } => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                ArgError::Empty { .. }
                | ArgError::ControlCharacter { .. }
                | ArgError::NotPositive { .. }
                | ArgError::NotFinite { .. }
                | ArgError::Reserved { .. }
                | ArgError::Invalid { .. }
                | ArgError::OutOfRange { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            },
            WfError::InvalidUrl { .. }
            | WfError::InvalidHeaders { .. }
            | WfError::InvalidSecret { .. }
            | WfError::StepWithoutWorkflow
            | WfError::EndpointNameIsUrl(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            WfError::UnknownWorkflow(_) | WfError::UnknownMessage(_) => ERRCODE_NO_DATA_FOUND,
            WfError::UnknownEndpoint(_) | WfError::UnknownHandler(_) | WfError::UnknownQueue(_) => {
                ERRCODE_UNDEFINED_OBJECT
            }
            WfError::AlreadyStarted { .. } => ERRCODE_UNIQUE_VIOLATION,
            WfError::NotLeasedTo { .. } => ERRCODE_OBJECT_IN_USE,
            WfError::NotRunning { .. }
            | WfError::Parked { .. }
            | WfError::NothingToWaitFor { .. }
            | WfError::MessageState { .. }
            | WfError::StepDecided { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            WfError::ReadOnly { .. } => ERRCODE_READ_ONLY_SQL_TRANSACTION,
            WfError::StartRace | WfError::ChangedConcurrently { .. } => {
                ERRCODE_T_R_SERIALIZATION_FAILURE
            }
            WfError::Spi(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            WfError::InvalidArgument(ArgError::TooLarge { .. }) => Some(
                "Raise workflow.max_payload_bytes, or store large documents elsewhere and pass a reference.",
            ),
            WfError::NotRunning { .. } => Some(
                "A completed, failed or cancelled workflow accepts no more steps; start a new one.",
            ),
            WfError::NotLeasedTo { .. } => Some(
                "Its lease ran out and another owner may have claimed it, or the workflow was parked or finished since: stop working on it, and roll back what this transaction did for it.",
            ),
            WfError::Parked { .. } => Some("Claim it with wf_claim once it is ready."),
            WfError::NothingToWaitFor {
                cancelled: false, ..
            } => Some(
                "Name the signal to wait for, or enqueue the durable step with wf_enqueue(..., workflow => ..., step => ...) first.",
            ),
            WfError::NothingToWaitFor {
                cancelled: true, ..
            } => Some("Send it again with wf_retry, or record the step some other way."),
            WfError::UnknownEndpoint(_) => {
                Some("Create it with wf_endpoint(name, url), or pass an http(s):// URL.")
            }
            WfError::InvalidSecret { .. } => Some(
                "Pass whsec_<base64 of 24 to 64 bytes>, several separated by spaces, or 'generate'.",
            ),
            WfError::StartRace | WfError::ChangedConcurrently { .. } => {
                Some("Retry the transaction.")
            }
            WfError::StepDecided { .. } => Some(
                "A workflow's decision governs its side effects: enqueue a new step from a running workflow if it still needs one.",
            ),
            WfError::AlreadyStarted { .. } => Some(
                "Call it with if_exists => 'return' to be handed the existing workflow, or use another key.",
            ),
            WfError::ReadOnly { standby: true, .. } => {
                Some("Write functions run on the primary; reads work here.")
            }
            _ => None,
        }
    }

    /// What a caller may need to act on, beyond the message.
    fn detail(&self) -> Option<String> {
        match self {
            WfError::AlreadyStarted { id, .. } => Some(format!("The existing workflow is {id}.")),
            _ => None,
        }
    }

    /// Raises this error as a Postgres `ERROR`; the current transaction is aborted.
    #[track_caller]
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "workflow");
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
    }
}

/// Why a durable step is decided: its step was recorded, or its workflow finished.
fn decided_reason(decided: &str) -> String {
    match decided {
        "recorded" => "its step is recorded".to_string(),
        "removed" => "its workflow was removed by retention".to_string(),
        "timed out" => "its wait timed out".to_string(),
        status => format!("its workflow is {status}"),
    }
}

/// Raises a `Result`'s error at the SQL boundary.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T, E: Into<WfError>> OrRaise<T> for Result<T, E> {
    #[track_caller]
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.into().raise())
    }
}
