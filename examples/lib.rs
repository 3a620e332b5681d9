//! Shared helpers for the backstop examples.
