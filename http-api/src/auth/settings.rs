//! The settings of the token checks (`AUTH_*`, the same for both
//! services: one issuer serves the pipeline). Checks are on unless
//! `AUTH_DISABLED=true`; on, a service does not start without an issuer,
//! an audience and a key source.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use platform::settings::{ConfigError, Settings};

/// Where the issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document fetched over https (http only on a loopback address).
    Url(String),
    /// A JWKS document in a file, read again on every refresh.
    File(PathBuf),
}

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss` values accepted (Entra's v1 and v2 tokens differ).
    pub issuers: Vec<String>,
    /// `aud` values accepted; a token's `aud` may be one or a list.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted; never `none`, never HMAC.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// Keys are fetched again this often, so a key the issuer removed
    /// stops working.
    pub refresh_every: Duration,
    /// A token with a key id not held fetches the keys again, but at most
    /// this often.
    pub refresh_at_most_every: Duration,
    /// Clock difference allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim naming the caller within its issuer.
    pub subject_claim: String,
    /// Claims read for scopes, each a space-separated string or a list.
    pub scope_claims: Vec<String>,
}

/// Limits on callers.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Requests per second per subject, and the burst above it.
    pub subject_rate: f64,
    pub subject_burst: f64,
    /// Failed authentications per minute per peer address (also the burst).
    pub peer_failures_per_minute: f64,
    /// Peers whose `X-Forwarded-For` names the client (load balancers).
    pub trusted_proxies: Vec<IpAddr>,
}

/// Checks on or off, and the limits.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `None`: checks off (`AUTH_DISABLED=true`).
    pub tokens: Option<TokenSettings>,
    pub limits: LimitSettings,
}

/// Algorithms a deployment may pin.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl AuthSettings {
    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let disabled: bool = settings.optional("AUTH_DISABLED", "true or false", false)?;
        let tokens = if disabled {
            None
        } else {
            Some(TokenSettings::read(settings)?)
        };
        Ok(AuthSettings {
            tokens,
            limits: LimitSettings::read(settings)?,
        })
    }

    /// Checks off, for tests of something else and for tools.
    pub fn disabled() -> Self {
        AuthSettings {
            tokens: None,
            limits: LimitSettings::read(&Settings::new(&Vec::new()))
                .expect("the defaults are valid"),
        }
    }
}

impl TokenSettings {
    fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let list = |name: &str, expected| -> Result<Vec<String>, ConfigError> {
            let raw: String = settings.required(name, expected)?;
            Ok(words(&raw))
        };
        let issuers = list(
            "AUTH_ISSUER",
            "the issuer (iss), or several comma-separated",
        )?;
        let audiences = list("AUTH_AUDIENCE", "the API's audience (aud), or several")?;
        let keys = match (
            settings.optional::<String>("AUTH_JWKS_URL", "a URL", String::new())?,
            settings.optional::<String>("AUTH_JWKS_FILE", "a file", String::new())?,
        ) {
            (url, file) if url.is_empty() == file.is_empty() => {
                return Err(invalid(
                    "AUTH_JWKS_URL",
                    "the issuer's JWKS URL",
                    "set exactly one of AUTH_JWKS_URL and AUTH_JWKS_FILE",
                ));
            }
            (url, _) if !url.is_empty() => KeySource::Url(checked_url(&url)?),
            (_, file) => KeySource::File(PathBuf::from(file)),
        };
        let algorithms = words(&settings.optional(
            "AUTH_ALGORITHMS",
            "algorithms, comma-separated",
            "RS256,ES256,EdDSA".to_owned(),
        )?)
        .iter()
        .map(|name| algorithm(name))
        .collect::<Result<Vec<_>, _>>()?;
        let secs = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| {
            settings
                .optional_in(name, "whole seconds", default, range)
                .map(Duration::from_secs)
        };
        Ok(TokenSettings {
            issuers,
            audiences,
            algorithms,
            keys,
            refresh_every: secs("AUTH_JWKS_REFRESH_SECS", 300, 1..=86_400)?,
            refresh_at_most_every: secs("AUTH_JWKS_MIN_REFRESH_SECS", 10, 1..=3_600)?,
            leeway: secs("AUTH_LEEWAY_SECS", 30, 0..=300)?,
            subject_claim: settings.optional("AUTH_SUBJECT_CLAIM", "a claim name", "sub".into())?,
            scope_claims: words(&settings.optional(
                "AUTH_SCOPE_CLAIMS",
                "claim names, comma-separated",
                "scope,scp".to_owned(),
            )?),
        })
    }
}

impl LimitSettings {
    fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let rate = |name: &str, default: f64| {
            settings.optional_in(name, "a positive number", default, f64::MIN_POSITIVE..)
        };
        let trusted_proxies = words(&settings.optional(
            "AUTH_TRUSTED_PROXIES",
            "IP addresses, comma-separated",
            String::new(),
        )?)
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|_| invalid("AUTH_TRUSTED_PROXIES", "IP addresses", "not an IP address"))
        })
        .collect::<Result<_, _>>()?;
        Ok(LimitSettings {
            subject_rate: rate("AUTH_SUBJECT_RATE", 50.0)?,
            subject_burst: rate("AUTH_SUBJECT_BURST", 100.0)?,
            peer_failures_per_minute: rate("AUTH_PEER_FAILURES_PER_MINUTE", 60.0)?,
            trusted_proxies,
        })
    }
}

/// The words of a comma- or space-separated list.
fn words(raw: &str) -> Vec<String> {
    raw.split([',', ' '])
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

fn algorithm(name: &str) -> Result<Algorithm, ConfigError> {
    let expected = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA";
    match name.parse::<Algorithm>() {
        Ok(algorithm) if ASYMMETRIC.contains(&algorithm) => Ok(algorithm),
        Ok(_) => Err(invalid(
            "AUTH_ALGORITHMS",
            expected,
            "HMAC is refused: the services hold no shared secret",
        )),
        Err(_) => Err(invalid("AUTH_ALGORITHMS", expected, "unknown algorithm")),
    }
}

/// https, or http to a loopback address (a local issuer, tests).
fn checked_url(url: &str) -> Result<String, ConfigError> {
    let expected = "an https URL (http only to 127.0.0.1, ::1 or localhost)";
    let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    let loopback = local.iter().any(|base| {
        url.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
    });
    if url.starts_with("https://") || loopback {
        Ok(url.to_owned())
    } else {
        Err(invalid("AUTH_JWKS_URL", expected, "not https"))
    }
}

fn invalid(name: &str, expected: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        expected,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<AuthSettings, ConfigError> {
        AuthSettings::read(&Settings::new(&pairs.to_vec()))
    }

    const GOOD: [(&str, &str); 3] = [
        ("AUTH_ISSUER", "https://issuer.example/"),
        ("AUTH_AUDIENCE", "orders-api"),
        ("AUTH_JWKS_URL", "https://issuer.example/jwks"),
    ];

    #[test]
    fn checks_are_on_unless_disabled_and_need_an_issuer() {
        let error = read(&[]).unwrap_err().to_string();
        assert!(error.starts_with("AUTH_ISSUER is not set"), "{error}");
        assert!(read(&[("AUTH_DISABLED", "true")]).unwrap().tokens.is_none());
        let tokens = read(&GOOD).unwrap().tokens.unwrap();
        assert_eq!(
            tokens.algorithms,
            [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        );
        assert_eq!(tokens.scope_claims, ["scope", "scp"]);
        assert_eq!(tokens.leeway, Duration::from_secs(30));
    }

    #[test]
    fn hmac_none_and_clear_urls_are_refused() {
        for (name, value) in [
            ("AUTH_ALGORITHMS", "RS256,HS256"),
            ("AUTH_ALGORITHMS", "none"),
            ("AUTH_JWKS_URL", "http://issuer.example/jwks"),
            ("AUTH_JWKS_URL", "http://127.0.0.1.evil.example/jwks"),
            ("AUTH_LEEWAY_SECS", "3600"),
            ("AUTH_TRUSTED_PROXIES", "10.0.0.1,lb"),
        ] {
            let mut pairs = vec![(name, value)];
            pairs.extend(GOOD);
            let error = read(&pairs).unwrap_err().to_string();
            assert!(error.starts_with(name), "{name}={value}: {error}");
        }
        let mut both = vec![("AUTH_JWKS_FILE", "/etc/jwks.json")];
        both.extend(GOOD);
        assert!(read(&both).is_err());
        let local = [
            ("AUTH_JWKS_URL", "http://127.0.0.1:8999/jwks"),
            ("AUTH_ISSUER", "a"),
            ("AUTH_AUDIENCE", "b c"),
        ];
        assert_eq!(read(&local).unwrap().tokens.unwrap().audiences, ["b", "c"]);
    }
}
