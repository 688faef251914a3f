//! The HTTP core over a raw socket: each hostile request docs/ARCHITECTURE.md
//! lists ("The HTTP core") gets a proper answer.

mod helpers;
mod limits;
mod protocol;
