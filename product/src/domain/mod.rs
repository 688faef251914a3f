//! Validated product types: a handler cannot hold a name, price, stock or
//! delta that breaks the rules, because only `parse` makes one.

use http_api::json::{InputError, JsonObject};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Names have 1 to this many characters.
pub const MAX_NAME_CHARS: usize = 199;
/// Prices are whole cents up to ten billion (10^12 cents).
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// Stock is at most 10^9 units.
pub const MAX_STOCK: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(text: String) -> Result<Self, InputError> {
        let chars = text.chars().count();
        if text.trim().is_empty() || chars > MAX_NAME_CHARS {
            return Err(InputError::invalid(
                "invalid_name",
                format!(
                    "name must have 1 to {MAX_NAME_CHARS} characters and not be blank (it has {chars})"
                ),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(InputError::invalid(
                "invalid_name",
                "name must not contain control characters",
            ));
        }
        Ok(ProductName(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(i64);

impl Price {
    pub fn parse(cents: i64) -> Result<Self, InputError> {
        if !(0..=MAX_PRICE).contains(&cents) {
            return Err(InputError::invalid(
                "invalid_price",
                format!("price is in whole cents from 0 to {MAX_PRICE}"),
            ));
        }
        Ok(Price(cents))
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock(i64);

impl Stock {
    pub fn parse(units: i64) -> Result<Self, InputError> {
        if !(0..=MAX_STOCK).contains(&units) {
            return Err(InputError::invalid(
                "invalid_stock",
                format!("stock is from 0 to {MAX_STOCK} units"),
            ));
        }
        Ok(Stock(units))
    }

    pub fn units(self) -> i64 {
        self.0
    }
}

/// A restock (positive) or correction (negative); never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn parse(body: &[u8]) -> Result<Self, InputError> {
        let object = JsonObject::parse(body, &["delta"])?;
        let delta = object
            .required_i64("delta")
            .map_err(InputError::out_of_range_as("invalid_delta"))?;
        if delta == 0 || delta.unsigned_abs() > MAX_STOCK.unsigned_abs() {
            return Err(InputError::invalid(
                "invalid_delta",
                format!("delta is a non-zero number of units from -{MAX_STOCK} to {MAX_STOCK}"),
            ));
        }
        Ok(StockDelta(delta))
    }

    pub fn units(self) -> i64 {
        self.0
    }
}

/// A product to create: every field given and valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: ProductName,
    pub price: Price,
    pub stock: Stock,
}

const PRODUCT_FIELDS: &[&str] = &["name", "price", "stock"];

impl NewProduct {
    /// The request in canonical form: two bodies with the same fields and
    /// values are the same request, whatever their layout.
    pub fn fingerprint(&self) -> String {
        serde_json::json!([self.name.as_str(), self.price.cents(), self.stock.units()]).to_string()
    }

    /// A `POST` or `PUT` body: all three fields.
    pub fn parse(body: &[u8]) -> Result<Self, InputError> {
        let object = JsonObject::parse(body, PRODUCT_FIELDS)?;
        Ok(NewProduct {
            name: ProductName::parse(object.required_str("name")?)?,
            price: Price::parse(
                object
                    .required_i64("price")
                    .map_err(InputError::out_of_range_as("invalid_price"))?,
            )?,
            stock: Stock::parse(
                object
                    .required_i64("stock")
                    .map_err(InputError::out_of_range_as("invalid_stock"))?,
            )?,
        })
    }
}

/// A `PATCH` body: at least one field, each valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductChanges {
    pub name: Option<ProductName>,
    pub price: Option<Price>,
    pub stock: Option<Stock>,
}

impl ProductChanges {
    pub fn parse(body: &[u8]) -> Result<Self, InputError> {
        let object = JsonObject::parse(body, PRODUCT_FIELDS)?;
        let changes = ProductChanges {
            name: object
                .optional_str("name")?
                .map(ProductName::parse)
                .transpose()?,
            price: object
                .optional_i64("price")
                .map_err(InputError::out_of_range_as("invalid_price"))?
                .map(Price::parse)
                .transpose()?,
            stock: object
                .optional_i64("stock")
                .map_err(InputError::out_of_range_as("invalid_stock"))?
                .map(Stock::parse)
                .transpose()?,
        };
        if changes == ProductChanges::default() {
            return Err(InputError::invalid(
                "empty_patch",
                "give at least one of name, price, stock",
            ));
        }
        Ok(changes)
    }
}

impl From<NewProduct> for ProductChanges {
    fn from(product: NewProduct) -> Self {
        ProductChanges {
            name: Some(product.name),
            price: Some(product.price),
            stock: Some(product.stock),
        }
    }
}

/// A path segment as a product id: positive and numeric, or no product.
pub fn parse_id(segment: &str) -> Option<i64> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok().filter(|id| *id > 0)
}

/// A product as stored, cached and answered. `version` grows with every
/// change (a client may use it to notice one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub price: i64,
    pub stock: i64,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_api::HttpError;

    fn code(error: InputError) -> &'static str {
        error.code()
    }

    #[test]
    fn a_valid_product_parses() {
        let product = NewProduct::parse(br#"{"name": "Tea", "price": 450, "stock": 10}"#).unwrap();
        assert_eq!(product.name.as_str(), "Tea");
        assert_eq!((product.price.cents(), product.stock.units()), (450, 10));
    }

    #[test]
    fn names_must_be_present_non_blank_and_short() {
        let body = |name: &str| {
            format!(
                r#"{{"name": {}, "price": 1, "stock": 1}}"#,
                serde_json::json!(name)
            )
        };
        assert_eq!(
            code(NewProduct::parse(body("").as_bytes()).unwrap_err()),
            "invalid_name"
        );
        assert_eq!(
            code(NewProduct::parse(body("   ").as_bytes()).unwrap_err()),
            "invalid_name"
        );
        assert_eq!(
            code(NewProduct::parse(body(&"é".repeat(200)).as_bytes()).unwrap_err()),
            "invalid_name"
        );
        assert!(NewProduct::parse(body(&"é".repeat(199)).as_bytes()).is_ok());
        assert_eq!(
            code(NewProduct::parse(body("a\u{0}b").as_bytes()).unwrap_err()),
            "invalid_name"
        );
    }

    #[test]
    fn prices_and_stock_have_ranges() {
        let body = |price: &str, stock: &str| {
            format!(r#"{{"name": "x", "price": {price}, "stock": {stock}}}"#)
        };
        assert_eq!(
            code(NewProduct::parse(body("-1", "1").as_bytes()).unwrap_err()),
            "invalid_price"
        );
        assert_eq!(
            code(NewProduct::parse(body("1", "-1").as_bytes()).unwrap_err()),
            "invalid_stock"
        );
        assert_eq!(
            code(NewProduct::parse(body("1", "1000000001").as_bytes()).unwrap_err()),
            "invalid_stock"
        );
        assert_eq!(
            code(NewProduct::parse(body("1e30", "1").as_bytes()).unwrap_err()),
            "invalid_price"
        );
        assert_eq!(
            code(NewProduct::parse(body("1.5", "1").as_bytes()).unwrap_err()),
            "malformed_body"
        );
        assert_eq!(
            code(NewProduct::parse(body("\"1\"", "1").as_bytes()).unwrap_err()),
            "malformed_body"
        );
        assert!(NewProduct::parse(body("0", "1000000000").as_bytes()).is_ok());
    }

    #[test]
    fn patches_need_a_field_and_validate_each() {
        assert_eq!(
            code(ProductChanges::parse(b"{}").unwrap_err()),
            "empty_patch"
        );
        assert_eq!(
            code(ProductChanges::parse(br#"{"price": -5}"#).unwrap_err()),
            "invalid_price"
        );
        let changes = ProductChanges::parse(br#"{"stock": 3}"#).unwrap();
        assert_eq!(changes.stock, Some(Stock(3)));
        assert_eq!(changes.name, None);
    }

    #[test]
    fn deltas_are_non_zero_and_bounded() {
        assert_eq!(StockDelta::parse(br#"{"delta": 5}"#).unwrap().units(), 5);
        assert_eq!(StockDelta::parse(br#"{"delta": -5}"#).unwrap().units(), -5);
        assert_eq!(
            code(StockDelta::parse(br#"{"delta": 0}"#).unwrap_err()),
            "invalid_delta"
        );
        assert_eq!(
            code(StockDelta::parse(br#"{"delta": 2000000000}"#).unwrap_err()),
            "invalid_delta"
        );
        // The one i64 whose absolute value does not fit an i64.
        assert_eq!(
            code(StockDelta::parse(br#"{"delta": -9223372036854775808}"#).unwrap_err()),
            "invalid_delta"
        );
    }

    #[test]
    fn ids_are_positive_decimal_numbers() {
        assert_eq!(parse_id("42"), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "abc",
            "1.5",
            "99999999999999999999",
            "+3",
            " 4",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
