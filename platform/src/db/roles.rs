//! Who may do what in a service's database. Each service has two roles,
//! named after it:
//! - its owner (`order_owner`): owns the database and every object in it;
//!   runs the migrations, the partition upkeep, retention and vacuum, on
//!   connections of its own;
//! - its runtime role (`order_runtime`): requests, the writer, consumers,
//!   relays; it reads and writes the tables the code names in its
//!   [`Grant`]s, and can neither change nor drop nor truncate anything.
//!
//! Neither is a superuser or may create databases or roles. An
//! administrator makes them once per server with [`provision`] (`outbox
//! provision postgres`), which also makes the database (or hands an
//! existing one and everything in it to the owner) and lets only the
//! service's two roles connect to it. The runtime role's grants follow
//! the code: every start, under the migration lock, the owner revokes
//! what the runtime role holds in the schema and grants the lists of
//! [`super::MigrationSet::grants`], in one transaction.
//!
//! PostgreSQL facts this rests on: a table's privileges are checked on the
//! table a statement names, so reads and writes through a partitioned
//! parent need the parent's grants only and partitions made later need
//! none; `ALTER TABLE ... OWNER` reaches neither partitions nor an owned
//! sequence's siblings, so the hand-over walks every relation; only an
//! owner can `VACUUM` a table (anyone else gets a warning, not an error);
//! in PostgreSQL 15 only the database's owner may create in `public`.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use super::{DbError, connect, describe, quote_identifier};

/// The two roles of service `service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub owner: String,
    pub runtime: String,
}

impl Roles {
    /// `order` → `order_owner`, `order_runtime`.
    pub fn of(service: &str) -> Self {
        Roles {
            owner: format!("{service}_owner"),
            runtime: format!("{service}_runtime"),
        }
    }
}

/// Privileges the runtime role holds on one object of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A table or view, and the privileges (`"SELECT, INSERT"`).
    Table(&'static str, &'static str),
    /// A sequence the runtime role draws from (`USAGE`: `nextval`).
    Sequence(&'static str),
}

impl Grant {
    fn statement(&self, role: &str) -> String {
        match self {
            Grant::Table(table, privileges) => {
                format!("GRANT {privileges} ON TABLE {table} TO {role}")
            }
            Grant::Sequence(sequence) => format!("GRANT USAGE ON SEQUENCE {sequence} TO {role}"),
        }
    }
}

/// Whether a role of that name exists on the server.
async fn role_exists(client: &Client, role: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some())
}

/// What `role` holds on the `public` schema's relations, as
/// `relation privilege` lines (`orders SELECT`), sorted.
const HELD_SQL: &str = "\
    SELECT c.relname::text || ' ' || a.privilege_type \
    FROM pg_class c, LATERAL aclexplode(c.relacl) a \
    WHERE c.relnamespace = 'public'::regnamespace \
      AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) \
    ORDER BY 1";

impl Grant {
    /// The `relation privilege` lines of this grant, as [`HELD_SQL`]
    /// reads them back.
    fn held(&self) -> Vec<String> {
        match self {
            Grant::Table(table, privileges) => privileges
                .split(',')
                .map(|privilege| format!("{table} {}", privilege.trim()))
                .collect(),
            Grant::Sequence(sequence) => vec![format!("{sequence} USAGE")],
        }
    }
}

/// Gives `runtime` exactly `grants` in the `public` schema: when what it
/// holds differs, what it holds is revoked and `grants` given, in one
/// transaction, so a privilege the code no longer names goes too. When it
/// holds them already nothing is written: a start touches no catalog row
/// that the upkeep of another instance may be changing (its partitions'
/// `pg_class` rows). Returns false, changing nothing, when no role of that
/// name exists (a database reached by one role, as in a first trial with
/// the server's superuser).
pub(super) async fn apply_grants(
    client: &mut Client,
    runtime: &str,
    grants: &[Grant],
) -> Result<bool, tokio_postgres::Error> {
    if !role_exists(client, runtime).await? {
        return Ok(false);
    }
    let mut wanted: Vec<String> = grants.iter().flat_map(Grant::held).collect();
    wanted.sort();
    let held: Vec<String> = client
        .query(HELD_SQL, &[&runtime])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if held == wanted {
        return Ok(true);
    }
    let role = quote_identifier(runtime);
    let mut sql = format!("GRANT USAGE ON SCHEMA public TO {role};");
    let held_relations: std::collections::BTreeSet<&str> = held
        .iter()
        .filter_map(|line| line.split_once(' ').map(|(relation, _)| relation))
        .collect();
    for relation in held_relations {
        sql.push_str(&format!(
            "REVOKE ALL ON {} FROM {role};",
            quote_identifier(relation)
        ));
    }
    for grant in grants {
        sql.push_str(&grant.statement(&role));
        sql.push(';');
    }
    let transaction = client.transaction().await?;
    transaction.batch_execute(&sql).await?;
    transaction.commit().await?;
    tracing::info!(
        role = runtime,
        relations = grants.len(),
        "runtime grants made"
    );
    Ok(true)
}

/// What [`provision`] makes on a server for one service.
#[derive(Debug, Clone)]
pub struct Provision<'a> {
    /// The service (`order`): its roles are [`Roles::of`] it.
    pub service: &'a str,
    /// The database it is to use (`orders`).
    pub database: &'a str,
    /// Passwords to set, when the server checks them (left as they are
    /// when `None`).
    pub owner_password: Option<&'a str>,
    pub runtime_password: Option<&'a str>,
}

/// What [`provision`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provisioned {
    pub roles_created: Vec<String>,
    pub database_created: bool,
    /// Objects of the database handed to the owner (an existing database
    /// whose tables another role, say `postgres`, made).
    pub objects_handed_over: u64,
}

/// Makes service `what.service`'s two roles (logins, nothing more: no
/// superuser, no database or role creation, no replication, not exempt
/// from row security) and its database owned by its owner, on the server
/// `admin` reaches as a role that may create roles and databases (a
/// superuser, to hand over objects another role owns). Then only the two
/// roles may connect to the database, nobody may make temporary tables in
/// it but them, and everything in its `public` schema belongs to the
/// owner. Idempotent: run it again to repair or after an upgrade. Servers
/// share roles between databases, so runs are serialized by an advisory
/// lock in `admin`'s database.
pub async fn provision(admin: &Config, what: &Provision<'_>) -> Result<Provisioned, DbError> {
    let roles = Roles::of(what.service);
    let mut done = Provisioned::default();
    let client = connect(admin).await?;
    let at = |source| DbError::Postgres {
        target: describe(admin),
        source,
    };
    const PROVISION_LOCK: i64 = 0x0070_726f_7669_7369;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PROVISION_LOCK])
        .await
        .map_err(at)?;
    for (role, password) in [
        (&roles.owner, what.owner_password),
        (&roles.runtime, what.runtime_password),
    ] {
        if !role_exists(&client, role).await.map_err(at)? {
            match run_formatted(&client, "CREATE ROLE %I", &[role]).await {
                Ok(()) => done.roles_created.push(role.clone()),
                // Another session made it between our look and our create
                // (roles are server-wide; the lock is per database).
                Err(error) if error.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
                Err(error) => return Err(at(error)),
            }
        }
        // An existing role is brought back to what it must be.
        run_formatted(
            &client,
            "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
            &[role],
        )
        .await
        .map_err(at)?;
        if let Some(password) = password {
            run_formatted(&client, "ALTER ROLE %I PASSWORD %L", &[role, password])
                .await
                .map_err(at)?;
        }
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&what.database],
        )
        .await
        .map_err(at)?
        .is_some();
    let make_or_take = if exists {
        "ALTER DATABASE %I OWNER TO %I"
    } else {
        "CREATE DATABASE %I OWNER %I"
    };
    run_formatted(&client, make_or_take, &[what.database, &roles.owner])
        .await
        .map_err(at)?;
    done.database_created = !exists;
    run_formatted(
        &client,
        "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC",
        &[what.database],
    )
    .await
    .map_err(at)?;
    run_formatted(
        &client,
        "GRANT CONNECT ON DATABASE %I TO %I, %I",
        &[what.database, &roles.owner, &roles.runtime],
    )
    .await
    .map_err(at)?;
    let mut inside = admin.clone();
    inside.dbname(what.database);
    let database = connect(&inside).await?;
    done.objects_handed_over =
        hand_over(&database, &roles.owner)
            .await
            .map_err(|source| DbError::Postgres {
                target: describe(&inside),
                source,
            })?;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PROVISION_LOCK])
        .await;
    Ok(done)
}

/// Hands the `public` schema and every relation and function in it to
/// `owner`: each one by name, since `ALTER TABLE` on a partitioned table
/// leaves its partitions with their old owner. Indexes follow their table
/// and sequences owned by a column follow theirs; a standalone sequence,
/// a view, a partition are altered themselves. Returns how many changed.
async fn hand_over(client: &Client, owner: &str) -> Result<u64, tokio_postgres::Error> {
    let statements: Vec<String> = client
        .query(HAND_OVER_SQL, &[&owner])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for statement in &statements {
        client.batch_execute(statement).await?;
    }
    Ok(statements.len() as u64)
}

/// The statements that hand the `public` schema's objects to role `$1`.
const HAND_OVER_SQL: &str = "\
    SELECT format('ALTER %s %s OWNER TO %I', \
        CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' \
            WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, \
        c.oid::regclass, $1::text) \
    FROM pg_class c \
    WHERE c.relnamespace = 'public'::regnamespace \
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S') \
      AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1) \
      AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d \
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
            AND d.deptype IN ('a', 'i'))) \
    UNION ALL \
    SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1::text) \
    FROM pg_proc p \
    WHERE p.pronamespace = 'public'::regnamespace \
      AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1) \
    UNION ALL \
    SELECT format('ALTER SCHEMA public OWNER TO %I', $1::text) \
    FROM pg_namespace n \
    WHERE n.nspname = 'public' \
      AND n.nspowner NOT IN (SELECT oid FROM pg_roles \
          WHERE rolname IN ($1, 'pg_database_owner'))";

/// Runs the statement PostgreSQL's `format(template, args...)` makes:
/// identifiers (`%I`) and literals (`%L`) quoted by the server, since
/// DDL takes no parameters.
async fn run_formatted(
    client: &Client,
    template: &str,
    args: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let placeholders: Vec<String> = (2..=args.len() + 1)
        .map(|n| format!("${n}::text"))
        .collect();
    let query = format!("SELECT format($1::text, {})", placeholders.join(", "));
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&template];
    for arg in args {
        params.push(arg);
    }
    let statement: String = client.query_one(&query, &params).await?.get(0);
    client.batch_execute(&statement).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_roles_are_named_after_it() {
        let roles = Roles::of("order");
        assert_eq!(roles.owner, "order_owner");
        assert_eq!(roles.runtime, "order_runtime");
    }

    #[test]
    fn grants_read_back_as_the_catalog_lists_them() {
        assert_eq!(
            Grant::Table("orders", "SELECT, INSERT").held(),
            ["orders SELECT", "orders INSERT"]
        );
        assert_eq!(
            Grant::Sequence("outbox_row_id").held(),
            ["outbox_row_id USAGE"]
        );
    }

    #[test]
    fn grants_name_the_object_and_the_role() {
        assert_eq!(
            Grant::Table("orders", "SELECT, INSERT").statement("\"order_runtime\""),
            "GRANT SELECT, INSERT ON TABLE orders TO \"order_runtime\""
        );
        assert_eq!(
            Grant::Sequence("outbox_row_id").statement("r"),
            "GRANT USAGE ON SEQUENCE outbox_row_id TO r"
        );
    }
}
