//! The issuer the services under test trust: one ES256 key pair per test
//! binary, its JWKS in a file of the system's temporary folder, and the
//! settings that point a service at it. Limits are set out of reach, so
//! that tests of something else are never refused for their pace; the
//! tests of the limits set their own.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use http_api::auth::local_issuer::LocalIssuer;

pub const ISSUER: &str = "https://issuer.test/";
pub const AUDIENCE: &str = "order-pipeline-tests";

pub struct TestIssuer {
    pub issuer: LocalIssuer,
    pub jwks_file: PathBuf,
    jwks_file_text: String,
}

static TEST_ISSUER: LazyLock<TestIssuer> = LazyLock::new(|| {
    platform::tls::install_crypto_provider();
    let issuer = LocalIssuer::generate(ISSUER, AUDIENCE).expect("a key pair");
    let jwks_file = std::env::temp_dir().join(format!(
        "order-pipeline-test-jwks-{}-{}.json",
        std::process::id(),
        issuer.kid()
    ));
    std::fs::write(&jwks_file, issuer.jwks().to_string()).expect("the JWKS file written");
    let jwks_file_text = jwks_file.display().to_string();
    TestIssuer {
        issuer,
        jwks_file,
        jwks_file_text,
    }
});

/// This test binary's issuer.
pub fn issuer() -> &'static TestIssuer {
    &TEST_ISSUER
}

impl TestIssuer {
    /// The settings of a service that trusts this issuer.
    pub fn settings(&self) -> [(&'static str, &str); 5] {
        [
            ("AUTH_ISSUER", ISSUER),
            ("AUTH_AUDIENCE", AUDIENCE),
            ("AUTH_JWKS_FILE", self.jwks_file_text.as_str()),
            ("AUTH_SUBJECT_RATE", "1000000"),
            ("AUTH_PEER_FAILURES_PER_MINUTE", "1000000"),
        ]
    }

    /// A token for `subject` with `scopes` (space-separated), valid an hour.
    pub fn token(&self, subject: &str, scopes: &str) -> String {
        self.issuer
            .mint(subject, scopes, Duration::from_secs(3600))
            .expect("a token")
    }

    /// An HTTP client that sends a token of every scope for `subject` on
    /// each request (a request's own `Authorization` replaces it).
    pub fn client(&self, subject: &str) -> reqwest::Client {
        platform::tls::install_crypto_provider();
        let all = "catalog.write orders.place orders.read orders.read_all";
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {}", self.token(subject, all));
        headers.insert(
            reqwest::header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("a client")
    }
}

/// An RSA key pair made by `openssl` (ring makes none), for the tests of
/// RS256 tokens and of the algorithm confusion they invite.
pub struct RsaKey {
    /// The private key, PEM (PKCS#8).
    pub private_pem: Vec<u8>,
    /// The public key, PEM (SubjectPublicKeyInfo): what an attacker signs
    /// an HS256 token with, posing it as a shared secret.
    pub public_pem: Vec<u8>,
    /// The modulus, big-endian.
    pub modulus: Vec<u8>,
}

impl RsaKey {
    pub fn generate() -> RsaKey {
        let run = |args: &[&str], input: Option<&[u8]>| -> Vec<u8> {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("openssl runs (Debian's openssl package)");
            if let Some(input) = input {
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input)
                    .expect("written");
            }
            let output = child.wait_with_output().expect("openssl ends");
            assert!(output.status.success(), "openssl {args:?} failed");
            output.stdout
        };
        let private_pem = run(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        );
        let public_pem = run(&["pkey", "-pubout"], Some(&private_pem));
        let modulus = run(&["rsa", "-noout", "-modulus"], Some(&private_pem));
        let hex = String::from_utf8(modulus).expect("text");
        let hex = hex.trim().trim_start_matches("Modulus=");
        let modulus = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        RsaKey {
            private_pem,
            public_pem,
            modulus,
        }
    }

    /// Its public JWK under `kid` (RS256, e = 65537).
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        use base64::Engine;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.modulus);
        serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"})
    }
}
