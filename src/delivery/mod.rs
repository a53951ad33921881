//! How a message is delivered, in plain Rust: no Postgres, no I/O, so every rule is unit
//! tested. The dispatcher applies these; the SQL API validates with them at enqueue time.

pub mod headers;
pub mod health;
pub mod retry;
pub mod signing;
pub mod target;
