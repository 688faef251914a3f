//! `token`: the issuer of one machine, for local use, load runs and
//! tests. `token keygen` makes its key pair in a folder (once; the JWKS
//! the services read with `AUTH_JWKS_FILE` beside it); `token mint`
//! prints an access token for a subject and scopes, or a JSON list of
//! tokens for many subjects (the load scripts'). Production tokens come
//! from the operator's issuer, never from this.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http_api::auth::Scope;
use http_api::auth::local_issuer::{JWKS_FILE, LocalIssuer};

#[derive(Parser)]
#[command(about = "The issuer of one machine: its key pair and access tokens minted with it")]
struct Cli {
    /// The folder of the key pair (signing-key.p8 and jwks.json).
    #[arg(long, env = "AUTH_LOCAL_ISSUER_DIR", default_value = ".state/auth")]
    dir: PathBuf,
    /// The issuer tokens name (iss); the services' AUTH_ISSUER.
    #[arg(long, env = "AUTH_ISSUER")]
    issuer: String,
    /// The audience tokens name (aud); the services' AUTH_AUDIENCE.
    #[arg(long, env = "AUTH_AUDIENCE")]
    audience: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Makes the key pair if the folder has none; prints the JWKS file's path.
    Keygen,
    /// Prints an access token (one line), or with --subjects N a JSON list
    /// of N tokens for subjects <subject>-1 to <subject>-N.
    Mint {
        #[arg(long, default_value = "local-user")]
        subject: String,
        /// Scopes, space- or comma-separated: catalog.write, orders.place,
        /// orders.read, orders.read_all, or "all".
        #[arg(long, default_value = "orders.place orders.read")]
        scope: String,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 3600)]
        lifetime_secs: u64,
        #[arg(long)]
        subjects: Option<u32>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let issuer = LocalIssuer::in_folder(&cli.dir, &cli.issuer, &cli.audience)?;
    match cli.command {
        Command::Keygen => println!("{}", cli.dir.join(JWKS_FILE).display()),
        Command::Mint {
            subject,
            scope,
            lifetime_secs,
            subjects,
        } => {
            let scopes = scopes(&scope)?;
            let lifetime = Duration::from_secs(lifetime_secs);
            match subjects {
                None => println!("{}", issuer.mint(&subject, &scopes, lifetime)?),
                Some(count) => {
                    let tokens = (1..=count)
                        .map(|n| issuer.mint(&format!("{subject}-{n}"), &scopes, lifetime))
                        .collect::<Result<Vec<_>, _>>()?;
                    println!("{}", serde_json::to_string(&tokens)?);
                }
            }
        }
    }
    Ok(())
}

/// The scope claim's value: our scope names, checked, space-separated.
fn scopes(text: &str) -> anyhow::Result<String> {
    if text.trim() == "all" {
        let all: Vec<&str> = Scope::ALL.iter().map(|scope| scope.name()).collect();
        return Ok(all.join(" "));
    }
    let names: Vec<&str> = text.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    for name in &names {
        anyhow::ensure!(
            Scope::parse(name).is_some(),
            "unknown scope {name}: catalog.write, orders.place, orders.read, orders.read_all or all"
        );
    }
    Ok(names.join(" "))
}
