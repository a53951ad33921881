//! The workflow model in plain Rust: states, transitions and argument rules.

pub mod validate;

/// The life of a workflow run: `running` until one terminal transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The terminal transitions, with the name each has in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Complete,
    Fail,
    Cancel,
}

impl Finish {
    pub const fn status(self) -> Status {
        match self {
            Finish::Complete => Status::Completed,
            Finish::Fail => Status::Failed,
            Finish::Cancel => Status::Cancelled,
        }
    }

    pub const fn action(self) -> &'static str {
        match self {
            Finish::Complete => "wf_complete",
            Finish::Fail => "wf_fail",
            Finish::Cancel => "wf_cancel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finish_leads_to_a_terminal_status() {
        for finish in [Finish::Complete, Finish::Fail, Finish::Cancel] {
            assert_ne!(finish.status(), Status::Running, "{finish:?}");
        }
    }
}
