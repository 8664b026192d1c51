//! The routes file parsers (TOML and JSON) and validation on arbitrary text:
//! errors are fine, panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mse_proxy::config::routes::{parse_file, validate_all};
use mse_proxy::config::ControlLimits;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["routes.toml", "routes.json"] {
        let path = Path::new(name);
        if let Ok(specs) = parse_file(path, text) {
            let _ = validate_all(path, &specs, "route", &ControlLimits::default());
        }
    }
});
