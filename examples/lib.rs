//! Shared helpers for the backstop examples.

pub mod feed;
pub mod prometheus;
