//! Checking one bearer token: its signature with a key of the issuer's
//! set, the algorithm pinned by configuration (and by the key, when its
//! JWK names one), `iss`, `aud`, `exp` and `nbf` with a small leeway, and
//! that it is an access token, not an ID token. A verified token is kept
//! until it expires, so a caller's next requests cost a hash lookup; the
//! entries of a key the issuer removed go with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::KeySet;
use super::scope::{Caller, Scopes};
use super::settings::TokenSettings;

/// Verified tokens kept at most; past it the expired go, then all.
const CACHE_CAPACITY: usize = 20_000;
const CACHE_SHARDS: usize = 16;

/// Why a token was refused (told to the caller as `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token names a key the issuer does not have")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    #[error("an ID token is not an access token")]
    IdToken,
}

/// A token's header, as much as choosing its key needs.
pub(crate) struct Header {
    pub(crate) kid: Option<String>,
    algorithm: Algorithm,
    typ: Option<String>,
}

/// Reads a token's header without trusting it.
pub(crate) fn header(token: &str) -> Result<Header, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    Ok(Header {
        kid: header.kid,
        algorithm: header.alg,
        typ: header.typ,
    })
}

/// A verified token's caller, until the token expires.
struct Verified {
    caller: Arc<Caller>,
    /// `exp` plus the leeway.
    until: SystemTime,
    kid: Option<String>,
}

/// Verifies tokens against the keys it is given, and remembers the good.
pub(crate) struct Verifier {
    settings: TokenSettings,
    cache: Vec<Mutex<HashMap<Box<str>, Verified>>>,
}

impl Verifier {
    pub(crate) fn new(settings: TokenSettings) -> Verifier {
        Verifier {
            settings,
            cache: (0..CACHE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The caller of a token verified before, not expired since, whose
    /// key `keys` still hold (a refresh forgets the tokens of a removed
    /// key too, but one verified during that refresh may be remembered
    /// after it).
    pub(crate) fn cached(&self, token: &str, keys: &KeySet) -> Option<Arc<Caller>> {
        let shard = self.shard(token);
        let entries = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(token)?;
        (keys.holds(entry.kid.as_deref()) && SystemTime::now() < entry.until)
            .then(|| entry.caller.clone())
    }

    /// Verifies `token` (whose `header` was read) with the key it names in
    /// `keys`; remembers the caller.
    pub(crate) fn verify(
        &self,
        token: &str,
        header: &Header,
        keys: &KeySet,
    ) -> Result<Arc<Caller>, TokenError> {
        if !self.settings.algorithms.contains(&header.algorithm) {
            return Err(TokenError::Algorithm);
        }
        if let Some(typ) = &header.typ {
            let access = ["jwt", "at+jwt", "application/at+jwt"];
            if !access.iter().any(|kind| typ.eq_ignore_ascii_case(kind)) {
                return Err(TokenError::IdToken);
            }
        }
        let key = keys
            .find(header.kid.as_deref())
            .ok_or(TokenError::UnknownKey)?;
        if key
            .algorithm
            .is_some_and(|pinned| pinned != header.algorithm)
        {
            return Err(TokenError::Algorithm);
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.key,
            &self.validation(header.algorithm),
        )
        .map_err(refusal)?
        .claims;
        let (caller, expires) = self.caller(&claims)?;
        let caller = Arc::new(caller);
        self.remember(token, &caller, expires, header.kid.clone());
        Ok(caller)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&self.settings.issuers);
        validation.set_audience(&self.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation
    }

    /// The caller a verified token's claims name, and when it expires.
    fn caller(&self, claims: &Map<String, Value>) -> Result<(Caller, u64), TokenError> {
        // ID tokens: OpenID Connect's nonce and at_hash, Keycloak's typ.
        if claims.contains_key("nonce")
            || claims.contains_key("at_hash")
            || claims.get("typ").and_then(Value::as_str) == Some("ID")
        {
            return Err(TokenError::IdToken);
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| TokenError::MissingClaim(name.to_owned()))
        };
        let subject = text(&self.settings.subject_claim)?.to_owned();
        let issuer = text("iss")?.to_owned();
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let mut scopes = Scopes::default();
        for name in &self.settings.scope_claims {
            scopes = scopes.union(match claims.get(name) {
                Some(Value::String(words)) => Scopes::from_words(words.split(' ')),
                Some(Value::Array(words)) => {
                    Scopes::from_words(words.iter().filter_map(Value::as_str))
                }
                _ => Scopes::default(),
            });
        }
        Ok((
            Caller {
                issuer,
                subject,
                scopes,
            },
            expires,
        ))
    }

    fn remember(&self, token: &str, caller: &Arc<Caller>, expires: u64, kid: Option<String>) {
        let until = UNIX_EPOCH + Duration::from_secs(expires) + self.settings.leeway;
        let mut entries = self
            .shard(token)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= CACHE_CAPACITY / CACHE_SHARDS {
            let now = SystemTime::now();
            entries.retain(|_, entry| now < entry.until);
            if entries.len() >= CACHE_CAPACITY / CACHE_SHARDS {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Verified {
                caller: caller.clone(),
                until,
                kid,
            },
        );
    }

    /// Forgets the tokens verified with a key `keys` no longer holds.
    pub(crate) fn forget_removed_keys(&self, keys: &KeySet) {
        for shard in &self.cache {
            shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .retain(|_, entry| keys.holds(entry.kid.as_deref()));
        }
    }

    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Verified>> {
        // The signature's last bytes are as good as random, and free.
        let tail = token.as_bytes().iter().rev().take(4);
        let spread = tail.fold(0usize, |sum, byte| {
            sum.wrapping_mul(31) + usize::from(*byte)
        });
        &self.cache[spread % CACHE_SHARDS]
    }
}

fn refusal(error: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            TokenError::Signature
        }
        _ => TokenError::Malformed,
    }
}
