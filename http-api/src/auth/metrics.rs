//! What the token checks record: each decision by outcome (never by
//! subject: a label per caller would grow without bound), key refreshes
//! by result, the keys held, and whether checks are on at all.

use std::sync::Arc;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::keys::Refreshed;
use super::{AuthError, Caller};

#[derive(Clone)]
pub(crate) struct AuthMetrics {
    decisions: IntCounterVec,
    refreshes: IntCounterVec,
    keys: IntGauge,
    checks_on: IntGauge,
}

impl AuthMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = AuthMetrics {
            decisions: IntCounterVec::new(
                Opts::new(
                    "auth_decisions_total",
                    "Requests to routes that need a token, by outcome (accepted, or the refusal's code)",
                ),
                &["outcome"],
            )?,
            refreshes: IntCounterVec::new(
                Opts::new(
                    "auth_jwks_refreshes_total",
                    "Fetches of the issuer's keys, by result (replaced, failed, too_soon)",
                ),
                &["result"],
            )?,
            keys: IntGauge::new("auth_jwks_keys", "Signing keys of the issuer held")?,
            checks_on: IntGauge::new(
                "auth_checks_enabled",
                "1 when tokens are checked, 0 when AUTH_DISABLED turned checks off",
            )?,
        };
        registry.register(Box::new(metrics.decisions.clone()))?;
        registry.register(Box::new(metrics.refreshes.clone()))?;
        registry.register(Box::new(metrics.keys.clone()))?;
        registry.register(Box::new(metrics.checks_on.clone()))?;
        Ok(metrics)
    }

    pub(crate) fn checks_on(&self, on: bool) {
        self.checks_on.set(i64::from(on));
    }

    pub(crate) fn decided(&self, decided: &Result<Arc<Caller>, AuthError>) {
        let outcome = match decided {
            Ok(_) => "accepted",
            Err(error) => error.outcome(),
        };
        self.decisions.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn refreshed(&self, outcome: Refreshed, keys: usize) {
        let result = match outcome {
            Refreshed::Replaced => "replaced",
            Refreshed::TooSoon => "too_soon",
            Refreshed::Failed => "failed",
        };
        self.refreshes.with_label_values(&[result]).inc();
        self.keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }
}
