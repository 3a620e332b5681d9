//! Shared helpers for the backstop examples.

pub mod admin;
pub mod feed;
pub mod prometheus;
