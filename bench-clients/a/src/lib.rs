//! The stack bench's hyper-util clients, copy a (see `clients.rs`, shared by the four copies).
#![allow(clippy::unwrap_used)]

#[path = "../../clients.rs"]
mod clients;

pub use clients::{Bare, Tower};
