//! The HTTP core over a raw socket: the requests may_minihttp 0.1.11 left
//! unanswered or let grow without bound each get a proper answer here.

mod helpers;
mod limits;
mod protocol;
