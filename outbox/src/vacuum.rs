//! The vacuum fallback, for servers that run with autovacuum off (as the
//! machines we develop on do): each service keeps its own tables vacuumed
//! and analyzed, doing what autovacuum would do with the server's own
//! settings. A table is vacuumed when its dead rows, or the rows inserted
//! since its last vacuum, pass autovacuum's thresholds, and analyzed when
//! the rows changed since its last analyze do; the rest are left alone.
//! (Vacuuming every table every 30 s cost 2.7 s of server time per cycle
//! once the tables held 1.7 million rows: most of a VACUUM is scanning the
//! table's indexes, whatever changed.)

use deadpool_postgres::Pool;
use platform::shutdown::Signal;

/// Per table: whether autovacuum would vacuum it now (for its dead rows,
/// or for rows inserted since its last vacuum) and whether it would
/// analyze it, by the server's autovacuum settings.
const DUE_SQL: &str = "\
    SELECT relname::text, \
        n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8 \
            + current_setting('autovacuum_vacuum_scale_factor')::float8 * GREATEST(n_live_tup, 0) \
        OR n_ins_since_vacuum > current_setting('autovacuum_vacuum_insert_threshold')::float8 \
            + current_setting('autovacuum_vacuum_insert_scale_factor')::float8 * GREATEST(n_live_tup, 0), \
        n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8 \
            + current_setting('autovacuum_analyze_scale_factor')::float8 * GREATEST(n_live_tup, 0) \
    FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY($1)";

/// Whether the server's autovacuum is off (the fallback is then needed).
pub(crate) async fn autovacuum_is_off(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(client) => match client
            .query_one("SELECT current_setting('autovacuum')", &[])
            .await
        {
            Ok(row) => row.get::<_, String>(0) == "off",
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// What to run on each table that needs it, by the server's thresholds.
async fn due(client: &tokio_postgres::Client, tables: &[&str]) -> Vec<String> {
    let rows = match client.query(DUE_SQL, &[&tables]).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!(%error, "table statistics unreadable; nothing vacuumed");
            return Vec::new();
        }
    };
    rows.iter()
        .filter_map(|row| {
            let (table, vacuum, analyze): (String, bool, bool) =
                (row.get(0), row.get(1), row.get(2));
            // Table names come from pg_stat_user_tables, filtered to ours.
            match (vacuum, analyze) {
                (true, true) => Some(format!("VACUUM (ANALYZE) {table}")),
                (true, false) => Some(format!("VACUUM {table}")),
                (false, true) => Some(format!("ANALYZE {table}")),
                (false, false) => None,
            }
        })
        .collect()
}

/// Vacuums and analyzes those of `tables` that need it, one by one.
/// Shutdown cancels the statement in progress (on a large table it takes
/// seconds: a service must still exit within its drain budget) and closes
/// its connection.
pub(crate) async fn vacuum_due(pool: &Pool, tables: &[&str], shutdown: &Signal) {
    let Ok(client) = pool.get().await else { return };
    let statements = due(&client, tables).await;
    if statements.is_empty() {
        return;
    }
    // Throttled as autovacuum is (2 ms pause per 200 pages' cost): an
    // unthrottled VACUUM took a core for a second and showed in the p99.
    if client
        .batch_execute("SET vacuum_cost_delay = 2; SET vacuum_cost_limit = 200")
        .await
        .is_err()
    {
        return;
    }
    for statement in &statements {
        tokio::select! {
            result = client.batch_execute(statement) => {
                if let Err(error) = result {
                    tracing::debug!(%error, statement, "vacuum failed");
                }
            }
            _ = shutdown.cancelled() => {
                let _ = client.cancel_token().cancel_query(tokio_postgres::NoTls).await;
                // Not back to the pool: its VACUUM's answer is still due.
                drop(deadpool_postgres::Object::take(client));
                return;
            }
        }
    }
    tracing::debug!(?statements, "vacuum fallback ran");
    // The connection goes back to the pool: leave its settings as found.
    let _ = client
        .batch_execute("RESET vacuum_cost_delay; RESET vacuum_cost_limit")
        .await;
}
