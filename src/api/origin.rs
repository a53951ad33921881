//! The destination of a URL target, as the outbox's generated `origin` column computes it
//! (see `delivery::target::origin`). Its SQL definition is in `schema.sql`, where the
//! column that uses it is created.

use pgrx::prelude::*;

#[pg_schema]
mod workflow {
    use pgrx::prelude::*;

    /// The canonical origin of a URL: `scheme://host:port`.
    #[pg_extern(immutable, strict, parallel_safe, sql = false)]
    fn url_origin(url: &str) -> Option<String> {
        crate::delivery::target::origin(url)
    }
}
