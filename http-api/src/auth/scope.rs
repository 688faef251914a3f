//! What a caller may do ([`Scope`]), as its token grants it, and who the
//! caller is ([`Caller`]).

use std::fmt;

/// One thing a caller may do. The names are what an issuer puts in the
/// token's scope claim (docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Create, replace, patch and delete products; change stock.
    CatalogWrite,
    /// Place orders (which then belong to the caller).
    OrdersPlace,
    /// Read and list one's own orders.
    OrdersRead,
    /// Read and list every order, ownerless ones included (support staff).
    OrdersReadAll,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::CatalogWrite,
        Scope::OrdersPlace,
        Scope::OrdersRead,
        Scope::OrdersReadAll,
    ];

    /// The scope's name in tokens.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::CatalogWrite => "catalog.write",
            Scope::OrdersPlace => "orders.place",
            Scope::OrdersRead => "orders.read",
            Scope::OrdersReadAll => "orders.read_all",
        }
    }

    /// The scope a token names, if it is one of ours (others are ignored).
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The scopes a token grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scope::ALL.into_iter().collect()
    }

    pub fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    pub fn has(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether any of `needed` is granted (a route accepts any one of its
    /// scopes; an empty list accepts every caller).
    pub fn any_of(self, needed: &[Scope]) -> bool {
        needed.is_empty() || needed.iter().any(|scope| self.has(*scope))
    }

    /// Our scopes among a claim's words; words of other APIs are ignored.
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Scopes {
        words.into_iter().filter_map(Scope::parse).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Scopes(scopes.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

/// Who made a request: the token's issuer and subject, which own the
/// orders it places, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub issuer: String,
    pub subject: String,
    pub scopes: Scopes,
}

impl Caller {
    /// The issuer every caller has when checks are off (`AUTH_DISABLED`):
    /// orders placed then belong to it, and no token's issuer is this.
    pub const CHECKS_OFF_ISSUER: &'static str = "urn:order-pipeline:auth-disabled";

    /// The one caller of a service whose checks are off: it may do all.
    pub fn checks_off() -> Caller {
        Caller {
            issuer: Caller::CHECKS_OFF_ISSUER.to_owned(),
            subject: "anonymous".to_owned(),
            scopes: Scopes::all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_from_words_and_others_ignored() {
        let scopes = Scopes::from_words("openid orders.place profile orders.read".split(' '));
        assert!(scopes.has(Scope::OrdersPlace) && scopes.has(Scope::OrdersRead));
        assert!(!scopes.has(Scope::CatalogWrite) && !scopes.has(Scope::OrdersReadAll));
        assert!(scopes.any_of(&[Scope::OrdersReadAll, Scope::OrdersRead]));
        assert!(!scopes.any_of(&[Scope::CatalogWrite]));
        assert!(Scopes::default().any_of(&[]));
        assert_eq!(
            Scopes::from_words(["Orders.Place", "orders.place "]),
            Scopes::default()
        );
    }
}
