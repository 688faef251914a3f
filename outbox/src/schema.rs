//! The outbox library's tables (outbox, inbox, dead letters), as
//! migrations a service applies before its own, so its tables may refer to
//! them. The migrations are the files of the library's `migrations`
//! folder, embedded by refinery at build time; their history is kept in a
//! table of the library's own ([`HISTORY`]), apart from the service's.

use platform::db::MigrationSet;

/// Number of outbox partitions; the migration creates this many.
pub const PARTITIONS: u16 = 16;

/// Where the library's applied migrations are recorded.
pub const HISTORY: &str = "outbox_schema_history";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Databases migrated before the library had a history of its own
/// recorded its migrations (numbered below 100) in the service's: they
/// move here, once.
const MOVE_HISTORY: &str = "\
    DO $$ BEGIN \
        IF to_regclass('outbox_schema_history') IS NULL \
           AND to_regclass('refinery_schema_history') IS NOT NULL THEN \
            CREATE TABLE outbox_schema_history (LIKE refinery_schema_history INCLUDING ALL); \
            INSERT INTO outbox_schema_history \
                SELECT * FROM refinery_schema_history WHERE version < 100; \
            DELETE FROM refinery_schema_history WHERE version < 100; \
        END IF; \
    END $$";

/// Every migration of a service's database: the library's, then the
/// service's own (the runner its `refinery::embed_migrations!` made).
pub fn with_service(embedded: refinery::Runner) -> [MigrationSet; 2] {
    [migrations(), MigrationSet::service(embedded)]
}

/// The library's migrations, to apply before a service's own.
pub fn migrations() -> MigrationSet {
    MigrationSet {
        history: HISTORY,
        migrations: embedded::migrations::runner().get_migrations().clone(),
        before: Some(MOVE_HISTORY),
        after: Some(crate::unsent::VIEWS_SQL.as_str()),
    }
}
