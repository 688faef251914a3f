//! Who may call what: OAuth 2.0 bearer tokens (RFC 6750) carrying JWTs
//! (RFC 7519) from the operator's own issuer, checked by the service
//! itself. A route of a service's table names the scopes it needs
//! ([`crate::router::Route::scoped`]); the router asks the
//! [`Authenticator`] for the request's [`Caller`] before the handler runs.
//!
//! In order, for a route that needs a scope:
//! 1. exactly one `Authorization: Bearer` header (none: 401; two: 400);
//! 2. the client's address (the peer, or what a trusted proxy's
//!    `X-Forwarded-For` names) has failed authentication less than its
//!    allowance, else 429 before any signature is checked;
//! 3. the token was verified before and has not expired, or it verifies
//!    now ([`verify`]), with the issuer's keys ([`keys`]; a key id not
//!    held fetches them again, at most so often);
//! 4. it grants one of the route's scopes, else 403;
//! 5. its subject is within its request rate ([`limits`]), else 429.
//!
//! # Layout
//! - [`scope`]: [`Scope`], [`Scopes`] and [`Caller`].
//! - [`settings`]: the `AUTH_*` settings.
//! - [`keys`], [`verify`], [`limits`]: the steps above.
//! - [`refusal`]: [`AuthError`], the answers of RFC 6750 section 3.
//! - [`metrics`]: decisions and key refreshes.
//! - [`local_issuer`]: a key pair and tokens for one machine (`make up`,
//!   tests, the load tools).

use std::net::IpAddr;
use std::sync::Arc;

use platform::shutdown::Signal;
use prometheus::Registry;
use tokio::task::JoinHandle;

use crate::Request;
use crate::bridge::Bridge;

pub mod keys;
pub mod limits;
pub mod local_issuer;
pub mod metrics;
pub mod refusal;
pub mod scope;
pub mod settings;
pub mod verify;

use keys::{KeySet, Keys};
use limits::Buckets;
use metrics::AuthMetrics;
pub use refusal::AuthError;
pub use scope::{Caller, Scope, Scopes};
pub use settings::AuthSettings;
use verify::Verifier;

/// Decides who a request comes from and whether it may go on; cheap to
/// clone.
#[derive(Clone)]
pub struct Authenticator(Arc<Mode>);

enum Mode {
    /// `AUTH_DISABLED=true`: every request is the one caller of
    /// [`Caller::checks_off`].
    Off(Arc<Caller>),
    On(Box<Guard>),
}

struct Guard {
    verifier: Arc<Verifier>,
    keys: Arc<Keys>,
    /// Parks a request whose token names a key not held while the keys
    /// are fetched again.
    bridge: Bridge,
    subjects: Buckets<u64>,
    peers: Buckets<IpAddr>,
    trusted_proxies: Vec<IpAddr>,
    metrics: AuthMetrics,
}

impl Authenticator {
    /// Reads the keys (checks on) and starts refreshing them on a period
    /// until `stop`; the task is returned to be drained with the others.
    /// A service whose checks are off says so at every start.
    pub async fn start(
        settings: &AuthSettings,
        bridge: Bridge,
        registry: &Registry,
        stop: Signal,
    ) -> prometheus::Result<(Authenticator, Option<JoinHandle<()>>)> {
        let metrics = AuthMetrics::register(registry)?;
        let Some(tokens) = &settings.tokens else {
            tracing::warn!(
                "token checks are OFF (AUTH_DISABLED=true): whoever reaches this port may do anything"
            );
            metrics.checks_on(false);
            let mode = Mode::Off(Arc::new(Caller::checks_off()));
            return Ok((Authenticator(Arc::new(mode)), None));
        };
        metrics.checks_on(true);
        let keys = Arc::new(Keys::new(tokens));
        let verifier = Arc::new(Verifier::new(tokens.clone()));
        refresh(&keys, &verifier, &metrics, true).await;
        if keys.current().len() == 0 {
            tracing::error!(
                "no signing key could be read from the issuer's JWKS: every token is refused until one is"
            );
        }
        let period = tokens.refresh_every;
        let refresher = tokio::spawn({
            let (keys, verifier, metrics) = (keys.clone(), verifier.clone(), metrics.clone());
            async move {
                while !stop.is_cancelled() {
                    platform::shutdown::sleep(&stop, period).await;
                    if !stop.is_cancelled() {
                        refresh(&keys, &verifier, &metrics, true).await;
                    }
                }
            }
        });
        let limits = &settings.limits;
        let guard = Guard {
            verifier,
            keys,
            bridge,
            subjects: Buckets::new(limits.subject_rate, limits.subject_burst),
            peers: Buckets::new(
                limits.peer_failures_per_minute / 60.0,
                limits.peer_failures_per_minute,
            ),
            trusted_proxies: limits.trusted_proxies.clone(),
            metrics,
        };
        Ok((
            Authenticator(Arc::new(Mode::On(Box::new(guard)))),
            Some(refresher),
        ))
    }

    /// The caller of `request`, if it may do one of `needs`.
    pub fn authorize(
        &self,
        request: &Request,
        needs: &'static [Scope],
    ) -> Result<Arc<Caller>, AuthError> {
        match &*self.0 {
            Mode::Off(caller) => Ok(caller.clone()),
            Mode::On(guard) => {
                let decided = guard.authorize(request, needs);
                guard.metrics.decided(&decided);
                decided
            }
        }
    }

    /// For readiness: `None` when checks are off, else whether signing
    /// keys are held.
    pub fn holds_keys(&self) -> Option<bool> {
        match &*self.0 {
            Mode::Off(_) => None,
            Mode::On(guard) => Some(guard.keys.current().len() > 0),
        }
    }
}

impl Guard {
    fn authorize(
        &self,
        request: &Request,
        needs: &'static [Scope],
    ) -> Result<Arc<Caller>, AuthError> {
        let token = bearer(request)?;
        let client = self.client_address(request);
        if let Some(client) = client {
            self.peers.check(&client).map_err(AuthError::PeerLimited)?;
        }
        let caller = match self.identify(token) {
            Err(error @ AuthError::InvalidToken(_)) => {
                if let Some(client) = client {
                    let _ = self.peers.take(&client);
                }
                return Err(error);
            }
            other => other?,
        };
        if !caller.scopes.any_of(needs) {
            return Err(AuthError::InsufficientScope(needs));
        }
        let subject = Guard::subject_key(&caller);
        self.subjects
            .take(&subject)
            .map_err(AuthError::SubjectLimited)?;
        Ok(caller)
    }

    /// The token's caller: from the cache, or verified now.
    fn identify(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let keys = self.keys.current();
        if let Some(caller) = self.verifier.cached(token, &keys) {
            return Ok(caller);
        }
        let header = verify::header(token)?;
        let keys = match header.kid.as_deref() {
            Some(kid) if !keys.contains(kid) => self.fetch_keys_again()?,
            _ => keys,
        };
        Ok(self.verifier.verify(token, &header, &keys)?)
    }

    /// Fetches the keys again for a key id not held (at most once per
    /// `AUTH_JWKS_MIN_REFRESH_SECS`), parking the request meanwhile.
    fn fetch_keys_again(&self) -> Result<Arc<KeySet>, AuthError> {
        let (keys, verifier, metrics) = (
            self.keys.clone(),
            self.verifier.clone(),
            self.metrics.clone(),
        );
        self.bridge
            .run(async move {
                refresh(&keys, &verifier, &metrics, false).await;
                keys.current()
            })
            .map_err(|_| AuthError::KeysUnavailable)
    }

    /// The client's address: the peer's, unless the peer is a trusted
    /// proxy; then the last address of `X-Forwarded-For` that is not one
    /// of the trusted proxies (what a client writes there itself comes
    /// before what the proxies added, and is not believed).
    fn client_address(&self, request: &Request) -> Option<IpAddr> {
        let peer = request.peer()?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<&[u8]> = request.headers_named("x-forwarded-for").collect();
        let hops = forwarded
            .iter()
            .rev()
            .flat_map(|value| value.rsplit(|byte| *byte == b','));
        for hop in hops {
            let address = std::str::from_utf8(hop.trim_ascii())
                .ok()
                .and_then(|text| text.parse::<IpAddr>().ok());
            match address {
                Some(address) if self.trusted_proxies.contains(&address) => continue,
                Some(address) => return Some(address),
                None => return Some(peer),
            }
        }
        Some(peer)
    }

    /// The key of a caller's request bucket: issuer and subject hashed
    /// (the buckets hold no names).
    fn subject_key(caller: &Caller) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        caller.issuer.hash(&mut hasher);
        caller.subject.hash(&mut hasher);
        hasher.finish()
    }
}

/// Fetches the keys again and forgets the tokens of keys now gone.
async fn refresh(keys: &Keys, verifier: &Verifier, metrics: &AuthMetrics, force: bool) {
    let (outcome, replaced) = keys.refresh(force).await;
    let current = keys.current();
    if replaced.is_some() {
        verifier.forget_removed_keys(&current);
    }
    metrics.refreshed(outcome, current.len());
}

/// The request's bearer token: none is [`AuthError::Missing`] (another
/// scheme too: it carries no bearer token); two `Authorization` headers,
/// or a value that is not a token, is a malformed request. A token in the
/// query string is never read.
fn bearer(request: &Request) -> Result<&str, AuthError> {
    let mut values = request.headers_named("authorization");
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| AuthError::InvalidRequest("the Authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim_matches(' ');
    // RFC 6750's b64token.
    let token_char = |byte: u8| byte.is_ascii_alphanumeric() || b"-._~+/=".contains(&byte);
    if token.is_empty() || !token.bytes().all(token_char) {
        return Err(AuthError::InvalidRequest(
            "the bearer token is empty or holds characters a token cannot",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(headers: &[(&str, &str)]) -> Request {
        Request::from_parts("GET", "/orders", headers, b"")
    }

    #[test]
    fn one_bearer_header_is_read_and_anything_else_refused() {
        assert_eq!(
            bearer(&with(&[("Authorization", "Bearer abc.def-_")])).unwrap(),
            "abc.def-_"
        );
        assert_eq!(
            bearer(&with(&[("authorization", "bearer abc")])).unwrap(),
            "abc"
        );
        assert!(matches!(bearer(&with(&[])), Err(AuthError::Missing)));
        assert!(matches!(
            bearer(&with(&[("Authorization", "Basic dXNlcjpwYXNz")])),
            Err(AuthError::Missing)
        ));
        let twice = with(&[("Authorization", "Bearer a"), ("Authorization", "Bearer b")]);
        assert!(matches!(bearer(&twice), Err(AuthError::InvalidRequest(_))));
        for bad in ["Bearer", "Bearer ", "Bearer a b", "Bearer a\"b"] {
            assert!(
                matches!(
                    bearer(&with(&[("Authorization", bad)])),
                    Err(AuthError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
    }
}
