//! What the order service consumes: stock replies, which decide an order's
//! status ([`stock_replies`]), and product events, which keep the local
//! replica of the catalogue ([`product_events`]). What it publishes,
//! `order.created`, is written to its outbox by the group-commit writer.

pub mod product_events;
pub mod stock_replies;
