//! What backstop's telemetry tests share: [`capture`], a `tracing` layer that records every span
//! and event, and [`recorded`], a reader of `metrics-util`'s debugging recorder. Each installs
//! itself for one test on the current thread, so tests never share a subscriber or recorder.
//!
//! ```
//! use backstop_testing::capture::Capture;
//!
//! let (captured, _guard) = Capture::install();
//! tracing::info!(answer = 42u64, "hello");
//! assert_eq!(captured.events().len(), 1);
//! ```

// Test helpers: a poisoned lock or a value of the wrong shape is a failed test, said by a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod capture;
pub mod recorded;
