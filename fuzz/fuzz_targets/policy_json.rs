//! The client policy from JSON: any text.
//!
//! Asserts: no panic; either a `ConfigError` naming a field and a rule, or a policy within
//! every documented bound that round-trips through TOML and JSON unchanged.
#![no_main]

#[path = "common/policy.rs"]
mod policy;

use backstop::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    policy::check(text, Policy::from_json(text));
});
