//! What the product service consumes: `order.created`, applied by
//! [`reservations`]. What it publishes (`stock.*`, `product.*`) is written
//! to its outbox by the store and by the reservation handler.

pub mod reservations;
