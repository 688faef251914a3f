//! The outbox and inbox tables, as migrations a service includes in its own
//! list (before its own, so its tables may refer to them). Each crate's
//! migrations are the files of its `migrations` folder, embedded by
//! refinery at build time.

use platform::db::Migration;

/// Number of outbox partitions; the migration creates this many.
pub const PARTITIONS: u16 = 16;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The outbox library's migrations, numbered below 100; services number
/// theirs from 100.
pub fn migrations() -> Vec<Migration> {
    embedded::migrations::runner().get_migrations().clone()
}

/// Every migration of a service's database: the outbox library's, then the
/// service's own (the runner its `refinery::embed_migrations!` made).
pub fn followed_by(own: refinery::Runner) -> Vec<Migration> {
    let mut all = migrations();
    all.extend(own.get_migrations().iter().cloned());
    all
}
