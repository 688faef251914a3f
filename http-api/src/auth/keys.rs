//! The issuer's public keys: a JWKS document parsed into the keys a token
//! may name ([`KeySet`]), and where the set is kept and refreshed
//! ([`Keys`]). Fetching runs on tokio, one refresh at a time: on a period
//! (so a key the issuer removed stops working), and when a token names a
//! key id not held, at most once per `refresh_at_most_every`. A failed
//! refresh keeps the keys held: the issuer being down does not log
//! anyone out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::settings::{KeySource, TokenSettings};

/// One key a token may be verified with.
pub(crate) struct VerifyingKey {
    pub(crate) key: DecodingKey,
    /// The algorithm the JWK pins (`alg`), if it does.
    pub(crate) algorithm: Option<Algorithm>,
}

/// The keys of one JWKS document, by key id. A key without an id is kept
/// under "" and used only by tokens without one, when it is the only key.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// The signing keys of a JWKS document. Keys that are not for
    /// signatures, symmetric keys and keys of kinds we cannot read are
    /// passed over (logged), so one odd key does not hide the others.
    pub(crate) fn parse(document: &[u8]) -> Result<KeySet, String> {
        let document: Value =
            serde_json::from_slice(document).map_err(|error| format!("not JSON: {error}"))?;
        let Some(Value::Array(entries)) = document.get("keys") else {
            return Err("no \"keys\" array".into());
        };
        let mut keys = HashMap::new();
        for entry in entries {
            match verifying_key(entry) {
                Ok((kid, key)) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(reason) => tracing::debug!(reason, "a JWKS key is passed over"),
            }
        }
        Ok(KeySet { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key a token's header names; a token without `kid` gets the one
    /// key there is, if there is just one.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyingKey>> {
        match kid {
            Some(kid) => self.keys.get(kid).cloned(),
            None if self.keys.len() == 1 => self.keys.values().next().cloned(),
            None => None,
        }
    }

    pub(crate) fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Whether the key a token named (`kid`, or none) is still here: a
    /// token verified with a key the set no longer holds is forgotten.
    pub(crate) fn holds(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self.contains(kid),
            None => self.find(None).is_some(),
        }
    }
}

fn verifying_key(entry: &Value) -> Result<(String, VerifyingKey), String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|error| error.to_string())?;
    if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature) {
        return Err("not a signing key (use)".into());
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err("a symmetric key".into());
    }
    let algorithm = match jwk.common.key_algorithm {
        Some(alg) => Some(
            alg.to_string()
                .parse::<Algorithm>()
                .map_err(|error| error.to_string())?,
        ),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|error| error.to_string())?;
    let kid = jwk.common.key_id.unwrap_or_default();
    Ok((kid, VerifyingKey { key, algorithm }))
}

/// Outcome of one refresh, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refreshed {
    /// Fetched and parsed; the set replaced the one held.
    Replaced,
    /// Too soon after the last one: nothing done.
    TooSoon,
    /// The issuer could not be reached or sent no valid set: the keys held
    /// are kept.
    Failed,
}

/// The key set held, and how it is refreshed.
pub(crate) struct Keys {
    current: RwLock<Arc<KeySet>>,
    source: KeySource,
    http: reqwest::Client,
    at_most_every: Duration,
    /// When the last refresh started; held through a refresh, so refreshes
    /// run one at a time.
    last: Mutex<Option<Instant>>,
}

impl Keys {
    pub(crate) fn new(settings: &TokenSettings) -> Keys {
        platform::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Keys {
            current: RwLock::new(Arc::new(KeySet::default())),
            source: settings.keys.clone(),
            http,
            at_most_every: settings.refresh_at_most_every,
            last: Mutex::new(None),
        }
    }

    /// The keys held now.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Fetches the set again unless one was fetched less than
    /// `at_most_every` ago (`force`: the periodic refresh, which always
    /// fetches). Returns the set replaced, if it was.
    pub(crate) async fn refresh(&self, force: bool) -> (Refreshed, Option<Arc<KeySet>>) {
        let mut last = self.last.lock().await;
        if !force && last.is_some_and(|at| at.elapsed() < self.at_most_every) {
            return (Refreshed::TooSoon, None);
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let old = std::mem::replace(
                    &mut *self
                        .current
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    Arc::new(set),
                );
                (Refreshed::Replaced, Some(old))
            }
            Err(error) => {
                tracing::warn!(%error, "the issuer's keys could not be refreshed; the keys held are kept");
                (Refreshed::Failed, None)
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let document = match &self.source {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|error| format!("{}: {error}", path.display()))?,
            KeySource::Url(url) => {
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|error| error.to_string())?;
                response
                    .bytes()
                    .await
                    .map_err(|error| error.to_string())?
                    .to_vec()
            }
        };
        KeySet::parse(&document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_passed_over() {
        let document = br#"{"keys":[
            {"kty":"oct","kid":"shared","k":"c2VjcmV0"},
            {"kty":"EC","kid":"enc","use":"enc","crv":"P-256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","kid":"sig","alg":"ES256","crv":"P-256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"XYZ","kid":"odd"}
        ]}"#;
        let set = KeySet::parse(document).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.contains("sig"));
        assert_eq!(
            set.find(Some("sig")).unwrap().algorithm,
            Some(Algorithm::ES256)
        );
        assert!(
            set.find(None).is_some(),
            "the only key serves tokens without kid"
        );
        assert!(set.find(Some("shared")).is_none());
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }
}
