//! Integration tests of backstop live in `tests/`.
