//! An issuer of one machine: an ES256 key pair made here (never
//! committed), its JWKS document for the services (`AUTH_JWKS_FILE`), and
//! tokens minted with it for a subject and scopes. `make up` makes one on
//! first start; the `token` tool, the load scripts and the tests mint with
//! it. Production tokens come from the operator's own issuer.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// The private key's file in an issuer's folder (PKCS#8 DER, mode 0600).
pub const KEY_FILE: &str = "signing-key.p8";
/// The public keys' file (JWKS), what `AUTH_JWKS_FILE` names.
pub const JWKS_FILE: &str = "jwks.json";

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the key is not an ES256 (P-256) PKCS#8 key")]
    Key,
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// One signing key and the issuer and audience its tokens name.
pub struct LocalIssuer {
    pub issuer: String,
    pub audience: String,
    kid: String,
    pkcs8: Vec<u8>,
    /// The public point, uncompressed (0x04, x, y).
    public: Vec<u8>,
}

impl LocalIssuer {
    /// A new key pair.
    pub fn generate(issuer: &str, audience: &str) -> Result<Self, IssuerError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| IssuerError::Key)?;
        Self::from_pkcs8(issuer, audience, pkcs8.as_ref().to_vec())
    }

    fn from_pkcs8(issuer: &str, audience: &str, pkcs8: Vec<u8>) -> Result<Self, IssuerError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| IssuerError::Key)?;
        let public = pair.public_key().as_ref().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        Ok(LocalIssuer {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]),
            pkcs8,
            public,
        })
    }

    /// The issuer kept in `dir`, made there first if there is none (the
    /// key readable by its owner only).
    pub fn in_folder(dir: &Path, issuer: &str, audience: &str) -> Result<Self, IssuerError> {
        let key_file = dir.join(KEY_FILE);
        match std::fs::read(&key_file) {
            Ok(pkcs8) => Self::from_pkcs8(issuer, audience, pkcs8),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let made = Self::generate(issuer, audience)?;
                std::fs::create_dir_all(dir)?;
                write_private(&key_file, &made.pkcs8)?;
                std::fs::write(dir.join(JWKS_FILE), made.jwks().to_string())?;
                Ok(made)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The key id tokens name.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// This key's public JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..65]),
        })
    }

    /// A JWKS document holding this key alone.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// An access token for `subject` granting `scopes` (space-separated),
    /// valid from now for `lifetime`.
    pub fn mint(
        &self,
        subject: &str,
        scopes: &str,
        lifetime: Duration,
    ) -> Result<String, IssuerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign(&json!({
            "iss": self.issuer, "aud": self.audience, "sub": subject,
            "scope": scopes, "iat": now, "nbf": now,
            "exp": now + lifetime.as_secs(),
        }))
    }

    /// Signs any claims, as tests of hostile tokens need.
    pub fn sign(&self, claims: &Value) -> Result<String, IssuerError> {
        self.sign_as(&self.kid, claims)
    }

    /// Signs claims under another key's id (a forgery, for tests).
    pub fn sign_as(&self, kid: &str, claims: &Value) -> Result<String, IssuerError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        Ok(jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ec_der(&self.pkcs8),
        )?)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
