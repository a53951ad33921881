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
    #[error("workflow {0} does not exist")]
    UnknownWorkflow(pgrx::Uuid),
    #[error("workflow {id} is {status}; {action} needs a running workflow")]
    NotRunning {
        id: pgrx::Uuid,
        status: String,
        action: &'static str,
    },
    #[error(
        "the workflow with this name and idempotency_key was started and removed concurrently, repeatedly"
    )]
    StartRace,
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
                | ArgError::OutOfRange { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            },
            WfError::UnknownWorkflow(_) => ERRCODE_NO_DATA_FOUND,
            WfError::NotRunning { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            WfError::StartRace => ERRCODE_T_R_SERIALIZATION_FAILURE,
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
            WfError::StartRace => Some("Retry the transaction."),
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
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
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
