//! The OpenAPI 3 description of the product API, served at
//! `GET /openapi.json` (and checked against the service by schemathesis).

/// The description, kept beside the code as `product/openapi.json`.
pub const DOCUMENT: &str = include_str!("../openapi.json");
