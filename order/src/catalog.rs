//! Asking the product service about a product the replica has never seen
//! (created a moment ago, its event still on the way).

use std::time::Duration;

use crate::store::ProductSnapshot;

/// Why the product service gave no answer about a product.
#[derive(Debug, thiserror::Error)]
#[error("the product service did not answer: {0}")]
pub struct CatalogUnavailable(String);

/// The product service's HTTP API, as the order service uses it.
#[derive(Clone)]
pub struct Catalog {
    http: reqwest::Client,
    base: String,
}

impl Catalog {
    pub fn new(base: &str) -> Self {
        platform::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap_or_default();
        Catalog {
            http,
            base: base.to_owned(),
        }
    }

    /// The product, `None` if the product service says there is none.
    pub async fn product(&self, id: i64) -> Result<Option<ProductSnapshot>, CatalogUnavailable> {
        let response = self
            .http
            .get(format!("{}/products/{id}", self.base))
            .send()
            .await
            .map_err(|error| CatalogUnavailable(error.to_string()))?;
        match response.status().as_u16() {
            200 => response
                .json::<ProductSnapshot>()
                .await
                .map(Some)
                .map_err(|error| CatalogUnavailable(format!("unreadable product: {error}"))),
            404 => Ok(None),
            status => Err(CatalogUnavailable(format!("status {status}"))),
        }
    }
}
