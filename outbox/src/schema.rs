//! The outbox library's tables (outbox, inbox, dead letters), as
//! migrations a service applies before its own, so its tables may refer to
//! them. The migrations are the files of the library's `migrations`
//! folder, embedded by refinery at build time; their history is kept in a
//! table of the library's own ([`HISTORY`]), apart from the service's.

use platform::db::{Grant, MigrationSet};

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

/// What a service's runtime role may do with the library's tables: write
/// events and read them to relay, keep the relay's cursor and the refused
/// rows, record deliveries once, keep and work the dead letters, record
/// operators' actions. Partitions are made, detached and dropped by the
/// owner (`partitions`), the ids recorded apart purged by it (`retention`);
/// reads and writes through the partitioned `outbox` and `inbox` need the
/// parent's grants only.
pub const GRANTS: &[Grant] = &[
    Grant::Table("outbox", "SELECT, INSERT"),
    // The writer's ids (`outbox_next_id`, a SECURITY INVOKER function).
    Grant::Sequence("outbox_row_id"),
    Grant::Table("outbox_relay_cursor", "SELECT, UPDATE"),
    Grant::Table("outbox_refused", "SELECT, INSERT, UPDATE, DELETE"),
    Grant::Table("outbox_standby_check", "SELECT, UPDATE"),
    Grant::Table("outbox_pending", "SELECT"),
    Grant::Table("outbox_partition_cursor", "SELECT"),
    Grant::Table("inbox", "SELECT, INSERT"),
    Grant::Table("inbox_untimed", "SELECT, INSERT"),
    Grant::Table("inbox_horizon", "SELECT"),
    // Drained from the broker (`ON CONFLICT DO UPDATE`), requeued, purged.
    Grant::Table("dead_letters", "SELECT, INSERT, UPDATE, DELETE"),
    Grant::Table("operator_actions", "SELECT, INSERT"),
];

/// Every migration of a service's database: the library's, then the
/// service's own (the runner its `refinery::embed_migrations!` made, and
/// what its runtime role may do with its tables).
pub fn with_service(embedded: refinery::Runner, grants: &'static [Grant]) -> [MigrationSet; 2] {
    [migrations(), MigrationSet::service(embedded, grants)]
}

/// The library's migrations, to apply before a service's own.
pub fn migrations() -> MigrationSet {
    MigrationSet {
        history: HISTORY,
        migrations: embedded::migrations::runner().get_migrations().clone(),
        before: Some(MOVE_HISTORY),
        after: Some(crate::unsent::VIEWS_SQL.as_str()),
        grants: GRANTS,
    }
}
