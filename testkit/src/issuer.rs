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
