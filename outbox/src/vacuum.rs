//! The vacuum fallback, for servers that run with autovacuum off (as the
//! machines we develop on do): each service keeps its own tables vacuumed
//! and analyzed, doing what autovacuum would do with the server's
//! settings and each table's own storage parameters (the services set
//! small fixed thresholds on the tables that grow with every order, so
//! that each vacuum covers a few thousand recent rows, not a fifth of the
//! table). A table is vacuumed when its dead rows, or the rows inserted
//! since its last vacuum, pass its thresholds, and analyzed when the rows
//! changed since its last analyze do; the rest are left alone.
//! (Vacuuming every table every 30 s cost 2.7 s of server time per cycle
//! once the tables held 1.7 million rows: most of a VACUUM is scanning the
//! table's indexes, whatever changed.)

use deadpool_postgres::Pool;
use platform::shutdown::Signal;

/// Per table: whether autovacuum would vacuum it now (for its dead rows,
/// or for rows inserted since its last vacuum) and whether it would
/// analyze it. Each threshold and scale factor is the table's own storage
/// parameter where it has one (`ALTER TABLE ... SET
/// (autovacuum_vacuum_insert_threshold = ...)`, which autovacuum honours
/// too), the server's setting otherwise.
const DUE_SQL: &str = "\
    WITH knobs AS ( \
        SELECT c.oid, \
            max(v.value) FILTER (WHERE k.name = 'vacuum_threshold') AS dead_base, \
            max(v.value) FILTER (WHERE k.name = 'vacuum_scale_factor') AS dead_scale, \
            max(v.value) FILTER (WHERE k.name = 'vacuum_insert_threshold') AS insert_base, \
            max(v.value) FILTER (WHERE k.name = 'vacuum_insert_scale_factor') AS insert_scale, \
            max(v.value) FILTER (WHERE k.name = 'analyze_threshold') AS analyze_base, \
            max(v.value) FILTER (WHERE k.name = 'analyze_scale_factor') AS analyze_scale \
        FROM pg_class c \
        CROSS JOIN unnest(ARRAY['vacuum_threshold', 'vacuum_scale_factor', \
            'vacuum_insert_threshold', 'vacuum_insert_scale_factor', \
            'analyze_threshold', 'analyze_scale_factor']) AS k(name) \
        CROSS JOIN LATERAL (SELECT COALESCE( \
            (SELECT option_value FROM pg_options_to_table(c.reloptions) \
             WHERE option_name = 'autovacuum_' || k.name), \
            current_setting('autovacuum_' || k.name))::float8 AS value) v \
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1) \
        GROUP BY c.oid) \
    SELECT s.relname::text, \
        s.n_dead_tup > k.dead_base + k.dead_scale * GREATEST(s.n_live_tup, 0) \
            OR s.n_ins_since_vacuum > k.insert_base + k.insert_scale * GREATEST(s.n_live_tup, 0), \
        s.n_mod_since_analyze > k.analyze_base + k.analyze_scale * GREATEST(s.n_live_tup, 0) \
    FROM pg_stat_user_tables s JOIN knobs k ON k.oid = s.relid \
    ORDER BY s.relname";

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

/// What to run on those of `tables` that need it now, by the tables' own
/// thresholds or the server's: `VACUUM (ANALYZE) t`, `VACUUM t` or
/// `ANALYZE t`, by table name.
pub async fn due(client: &tokio_postgres::Client, tables: &[&str]) -> crate::Result<Vec<String>> {
    let rows = client.query(DUE_SQL, &[&tables]).await?;
    let mut statements = Vec::new();
    for row in &rows {
        let (table, vacuum, analyze): (String, bool, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // Table names come from the catalog, filtered to ours.
        match (vacuum, analyze) {
            (true, true) => statements.push(format!("VACUUM (ANALYZE) {table}")),
            (true, false) => statements.push(format!("VACUUM {table}")),
            (false, true) => statements.push(format!("ANALYZE {table}")),
            (false, false) => {}
        }
    }
    Ok(statements)
}

/// Vacuums and analyzes those of `tables` that need it, one by one.
/// Shutdown cancels the statement in progress (on a large table it takes
/// seconds: a service must still exit within its drain budget) and closes
/// its connection.
pub(crate) async fn vacuum_due(pool: &Pool, tables: &[&str], shutdown: &Signal) {
    let Ok(client) = pool.get().await else { return };
    let statements = match due(&client, tables).await {
        Ok(statements) if !statements.is_empty() => statements,
        Ok(_) => return,
        Err(error) => {
            tracing::debug!(%error, "table statistics unreadable; nothing vacuumed");
            return;
        }
    };
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
