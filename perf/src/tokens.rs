//! The bearer tokens the measuring tools send, from the environment the
//! scripts set (scripts/auth.sh mints them with the machine's issuer):
//! `ORDER_TOKENS_FILE`, a JSON list of tokens that may place orders (one
//! per subject; each order takes one at random, as many callers would),
//! or `ORDER_TOKEN`, one; and `CATALOG_TOKENS_FILE` or `CATALOG_TOKEN`,
//! the same for writing the catalog (seeding, price changes). None set:
//! no header is sent (a deployment with `AUTH_DISABLED=true`).

use anyhow::Context;

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    orders: Vec<String>,
    catalog: Vec<String>,
}

impl Tokens {
    pub fn from_env() -> anyhow::Result<Tokens> {
        Ok(Tokens {
            orders: listed("ORDER_TOKENS_FILE", "ORDER_TOKEN")?,
            catalog: listed("CATALOG_TOKENS_FILE", "CATALOG_TOKEN")?,
        })
    }

    /// A token to place or read orders with, one of the list at random.
    pub fn order(&self) -> Option<&str> {
        any_of(&self.orders)
    }

    /// A token to write the catalog with, one of the list at random.
    pub fn catalog(&self) -> Option<&str> {
        any_of(&self.catalog)
    }
}

/// The tokens of the JSON list in the file `$file`, or the one in `$one`.
fn listed(file: &str, one: &str) -> anyhow::Result<Vec<String>> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|value: &String| !value.is_empty())
    };
    Ok(match (var(file), var(one)) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
            serde_json::from_str(&text)
                .with_context(|| format!("{path} is not a JSON list of tokens"))?
        }
        (None, Some(token)) => vec![token],
        (None, None) => Vec::new(),
    })
}

fn any_of(tokens: &[String]) -> Option<&str> {
    if tokens.is_empty() {
        return None;
    }
    Some(&tokens[fastrand::usize(..tokens.len())])
}
