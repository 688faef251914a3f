//! The OpenAPI 3 description of the order API, served at
//! `GET /openapi.json` (and checked against the service by schemathesis).

/// The description, kept beside the code as `order/openapi.json`.
pub const DOCUMENT: &str = include_str!("../openapi.json");
