//! The bearer tokens the measuring tools send, from the environment the
//! scripts set (scripts/auth.sh mints them with the machine's issuer):
//! `ORDER_TOKENS_FILE`, a JSON list of tokens that may place orders (one
//! per subject; each order takes one at random, as many callers would),
//! or `ORDER_TOKEN`, one; and `CATALOG_TOKEN`, one that may write the
//! catalog (seeding, price changes). None set: no header is sent (a
//! deployment with `AUTH_DISABLED=true`).

use anyhow::Context;

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    orders: Vec<String>,
    catalog: Option<String>,
}

impl Tokens {
    pub fn from_env() -> anyhow::Result<Tokens> {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|value: &String| !value.is_empty())
        };
        let orders = match (var("ORDER_TOKENS_FILE"), var("ORDER_TOKEN")) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{path} is not a JSON list of tokens"))?
            }
            (None, Some(token)) => vec![token],
            (None, None) => Vec::new(),
        };
        Ok(Tokens {
            orders,
            catalog: var("CATALOG_TOKEN"),
        })
    }

    /// A token to place or read orders with, one of the list at random.
    pub fn order(&self) -> Option<&str> {
        if self.orders.is_empty() {
            return None;
        }
        Some(&self.orders[fastrand::usize(..self.orders.len())])
    }

    /// The token to write the catalog with.
    pub fn catalog(&self) -> Option<&str> {
        self.catalog.as_deref()
    }
}
