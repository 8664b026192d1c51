//! Caps on what one change of the route set may hold. They bound the work
//! the one reconciler task does for any change, whatever its source (the
//! routes file, `check`, the admin API, etcd), so a single oversized write
//! cannot stall every other change behind it.

use std::path::Path;

use super::ConfigErrors;

/// The caps, validated (`[limits]` in the static config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// `limits.max_hosts_per_route`: one app has a public and a
    /// configuration hostname; a hundred leaves room for aliases.
    pub hosts_per_route: usize,
    /// `limits.max_backends_per_route`: backends are tried in order, so
    /// more than a few dozen is a mistake, not a deployment.
    pub backends_per_route: usize,
    /// `limits.max_routes`: live routes across every source.
    pub routes: usize,
}

impl Default for ControlLimits {
    /// `[limits]`'s defaults, as the config schema gives them.
    fn default() -> Self {
        let raw = super::raw::RawLimits::default();
        Self {
            hosts_per_route: raw.max_hosts_per_route,
            backends_per_route: raw.max_backends_per_route,
            routes: raw.max_routes,
        }
    }
}

impl ControlLimits {
    /// Validates the raw values; `path` names the config file in errors.
    pub(super) fn validate(
        path: &Path,
        raw: &super::raw::RawLimits,
        errs: &mut ConfigErrors,
    ) -> ControlLimits {
        use super::bounds::{MAX_BACKENDS_PER_ROUTE, MAX_HOSTS_PER_ROUTE, MAX_ROUTES};
        for (field, value, max) in [
            (
                "limits.max_hosts_per_route",
                raw.max_hosts_per_route,
                MAX_HOSTS_PER_ROUTE,
            ),
            (
                "limits.max_backends_per_route",
                raw.max_backends_per_route,
                MAX_BACKENDS_PER_ROUTE,
            ),
            ("limits.max_routes", raw.max_routes, MAX_ROUTES),
        ] {
            if !(1..=max).contains(&value) {
                errs.push(path, field, format!("must be from 1 to {max}"));
            }
        }
        ControlLimits {
            hosts_per_route: raw.max_hosts_per_route,
            backends_per_route: raw.max_backends_per_route,
            routes: raw.max_routes,
        }
    }

    /// `Err(reason)` when `count` `what`s exceed `cap`, named by its key
    /// (`120 hosts, at most 100 (limits.max_hosts_per_route)`).
    pub fn check(count: usize, cap: usize, what: &str, key: &str) -> Result<(), String> {
        if count > cap {
            Err(format!("{count} {what}, at most {cap} (limits.{key})"))
        } else {
            Ok(())
        }
    }
}
