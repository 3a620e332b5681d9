//! The gateway's route table from TOML: any text.
//!
//! Asserts: no panic; either a `ConfigError` naming a field (a route's, as `route <prefix>.…`
//! or `route[<index>].…`, or a top-level one) and a rule, or a gateway whose prefixes are all
//! in normal form (so they can match a normalised path), each reachable with
//! `route_service`, and whose buffer budget is at least a byte.
#![no_main]

use backstop::Gateway;
use backstop::fuzzing::normalise_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Gateway::from_toml(text) {
        Err(err) => {
            assert!(!err.field().is_empty(), "{text:?}: no field in {err}");
            assert!(!err.rule().is_empty(), "{text:?}: no rule in {err}");
        }
        Ok(gateway) => {
            assert!(gateway.buffer_budget() >= 1);
            assert_eq!(gateway.buffer_reserved(), 0);
            for prefix in gateway.prefixes() {
                let normal = normalise_path(prefix);
                let expected = if prefix == "/" {
                    "/".to_owned()
                } else {
                    prefix.to_owned()
                };
                assert_eq!(
                    normal,
                    Ok(expected),
                    "{text:?}: prefix {prefix:?} not normal"
                );
                assert!(prefix == "/" || !prefix.ends_with('/'), "{prefix:?}");
                assert!(gateway.route_service(prefix).is_some(), "{prefix:?}");
            }
        }
    }
});
