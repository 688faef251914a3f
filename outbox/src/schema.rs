//! The outbox and inbox tables, as migrations a service includes in its own
//! list (before its own, so its tables may refer to them).

use service::db::MigrationSource;

/// Number of outbox partitions; the migration creates this many.
pub const PARTITIONS: u16 = 16;

/// The outbox library's migrations, numbered below 100; services number
/// theirs from 100.
pub const MIGRATIONS: &[MigrationSource] = &[
    ("V1__outbox", include_str!("../migrations/V1__outbox.sql")),
    (
        "V2__dead_letters",
        include_str!("../migrations/V2__dead_letters.sql"),
    ),
];
