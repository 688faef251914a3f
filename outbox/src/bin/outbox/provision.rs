//! `outbox provision`: what an administrator makes once per server before
//! a service's first start, since the service's own roles may not: its
//! PostgreSQL roles and database ([`platform::db::provision`]).

use clap::{Args, Subcommand};
use platform::db::Provision;
use platform::settings::{Environment, Settings};

use crate::Service;

#[derive(Args)]
pub(crate) struct ProvisionArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// The service's owner and runtime roles (`<service>_owner`,
    /// `<service>_runtime`) and its database, owned by the owner, which only
    /// they may connect to. Connects as DATABASE_ADMIN_URL (or the file
    /// DATABASE_ADMIN_URL_FILE names): a role that may create roles and
    /// databases, a superuser to hand over an existing database's tables.
    /// Each role's password is the one the service's URL for it carries
    /// (ORDER_DATABASE_OWNER_URL, ORDER_DATABASE_URL, or their _FILE), when
    /// it names that role with one. Run it again at will: it repairs and
    /// changes nothing else.
    Postgres(PostgresArgs),
}

#[derive(Args)]
struct PostgresArgs {
    #[arg(long, value_enum)]
    service: Service,
    /// The database to make or take over; without it, the one the
    /// service's URL setting names (ORDER_DATABASE_URL for `order`), else
    /// `orders` or `products`.
    #[arg(long)]
    database: Option<String>,
}

pub(crate) async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    match args.what {
        What::Postgres(args) => postgres(args).await,
    }
}

/// A service's URL setting (or its `_FILE`), read once, if set.
fn service_url(
    environment: &Settings<'_>,
    setting: &str,
) -> anyhow::Result<Option<tokio_postgres::Config>> {
    match environment.secret(setting)? {
        Some(url) => Ok(Some(platform::db::parse_url(setting, &url)?)),
        None => Ok(None),
    }
}

/// The password a service's URL gives `role`, if it names that role with
/// one: the roles' passwords are the services' own secrets, kept in one
/// place.
fn password_of(url: Option<&tokio_postgres::Config>, role: &str) -> Option<String> {
    url.filter(|config| config.get_user() == Some(role))
        .and_then(|config| config.get_password())
        .map(|password| String::from_utf8_lossy(password).into_owned())
}

async fn postgres(args: PostgresArgs) -> anyhow::Result<()> {
    let environment = Settings::new(&Environment);
    let admin_url = environment.required_secret("DATABASE_ADMIN_URL")?;
    let admin = platform::db::parse_url("DATABASE_ADMIN_URL", &admin_url)?;
    let (service, prefix, default) = match args.service {
        Service::Order => ("order", "ORDER", "orders"),
        Service::Product => ("product", "PRODUCT", "products"),
    };
    let (runtime_setting, owner_setting) = (
        format!("{prefix}_DATABASE_URL"),
        format!("{prefix}_DATABASE_OWNER_URL"),
    );
    let runtime_url = service_url(&environment, &runtime_setting)?;
    let owner_url = service_url(&environment, &owner_setting)?;
    let database = match args.database {
        Some(database) => database,
        None => runtime_url
            .as_ref()
            .and_then(|config| config.get_dbname())
            .unwrap_or(default)
            .to_owned(),
    };
    let roles = platform::db::Roles::of(service);
    let owner_password = password_of(owner_url.as_ref(), &roles.owner);
    let runtime_password = password_of(runtime_url.as_ref(), &roles.runtime);
    let done = platform::db::provision(
        &admin,
        &Provision {
            service,
            database: &database,
            owner_password: owner_password.as_deref(),
            runtime_password: runtime_password.as_deref(),
        },
    )
    .await?;
    let mut made = admin.clone();
    made.dbname(&database);
    println!(
        "{}: owned by {}, reached by {} and {} only",
        platform::db::describe(&made),
        roles.owner,
        roles.owner,
        roles.runtime
    );
    if !done.roles_created.is_empty() {
        println!("  roles created: {}", done.roles_created.join(", "));
    }
    for (role, password, setting) in [
        (&roles.owner, &owner_password, &owner_setting),
        (&roles.runtime, &runtime_password, &runtime_setting),
    ] {
        if password.is_some() {
            println!("  {role}'s password set from {setting}");
        }
    }
    if done.database_created {
        println!("  database created");
    }
    if done.objects_handed_over > 0 {
        println!(
            "  {} objects handed over to {}",
            done.objects_handed_over, roles.owner
        );
    }
    Ok(())
}
