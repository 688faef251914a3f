//! The one crypto provider of every TLS and signature crate in the
//! pipeline: ring. rustls panics at the first handshake of a process where
//! no provider, or more than one, was chosen; reqwest is built without one
//! of its own (`rustls-no-provider`), and the access tokens are verified
//! with ring too (`jsonwebtoken` 9). Every binary installs it first thing,
//! and whatever builds a TLS client installs it again (a no-op then), so a
//! test or a library user cannot forget it.

/// Installs ring as the process's default rustls provider; once, however
/// often it is called.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Err: another provider was installed first by the embedding
        // program; it is used as it is. rustls 0.23.48 deprecates ring's
        // provider for lacking post-quantum key exchange (X25519MLKEM768);
        // aws-lc-rs has it, at the cost of a C build of minutes in every
        // fresh CI run. Our TLS peers (PostgreSQL, RabbitMQ, Redis, the
        // issuer) are classical today; docs/SECURITY.md says so.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
