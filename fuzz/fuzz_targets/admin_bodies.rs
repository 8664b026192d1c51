//! The admin API's request bodies on arbitrary bytes: a route (`PUT
//! /routes/{name}`) and an app record (`PUT /apps/{project}/{name}`), parsed
//! and validated as the API does. Errors are fine, panics are not. The
//! first byte picks the body kind.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mse_proxy::apps::record::{self, AppKey, AppRecord, Context};
use mse_proxy::config::apps::AppsConfig;
use mse_proxy::config::routes::{validate_one, RouteSpec};
use mse_proxy::config::ControlLimits;

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        if let Ok(spec) = serde_json::from_slice::<RouteSpec>(body) {
            let _ = validate_one(Path::new("api"), "route", &spec, &ControlLimits::default());
        }
    } else if let Ok(rec) = serde_json::from_slice::<AppRecord>(body) {
        let key = AppKey {
            project: "p".into(),
            name: "n".into(),
        };
        let policy = AppsConfig::default();
        let ctx = Context {
            policy: &policy,
            now: chrono::Utc::now(),
            previous: None,
        };
        let _ = record::validate(&key, rec, ctx);
    }
});
