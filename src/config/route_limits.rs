//! Per-route fairness: how many connections one route may hold and how fast
//! it may take new ones, so that a flood on one app cannot take the slots
//! (or the handshake CPU) every other app needs. Defaults come from
//! `[limits]`; a route (routes file, admin API, etcd) or an app record
//! overrides them in its `limits` table.

use std::path::Path;

use super::bounds::MAX_CONNECTIONS;
use super::rate::{self, Rate, RATE_MAX};
use super::raw::{RawLimits, DEFAULT_ROUTE_MAX_CONNECTIONS, DEFAULT_ROUTE_RATE};
pub use super::route_spec::RouteLimitsSpec;
use super::ConfigErrors;
pub use crate::routing::route::RouteLimits;

/// An unset route burst is this many seconds of its rate: room for a
/// reconnect storm (a backend restart, a load balancer failing over).
pub const BURST_SECONDS: u32 = 2;

/// The `[limits]` defaults every route gets unless it says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDefaults {
    /// 0: no cap.
    pub max_connections: usize,
    /// `None`: no rate limit.
    pub rate: Option<Rate>,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_ROUTE_MAX_CONNECTIONS,
            rate: Some(Rate {
                per_second: DEFAULT_ROUTE_RATE,
                burst: DEFAULT_ROUTE_RATE * BURST_SECONDS,
            }),
        }
    }
}

/// What a route's connections are admitted under, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// 0: no cap.
    pub max_connections: usize,
    pub rate: Option<Rate>,
}

impl RouteDefaults {
    pub(super) fn validate(path: &Path, raw: &RawLimits, errs: &mut ConfigErrors) -> Self {
        let max_connections = raw.max_connections_per_route;
        if max_connections > MAX_CONNECTIONS {
            errs.push(
                path,
                "limits.max_connections_per_route",
                format!("{max_connections} is more than the most allowed, {MAX_CONNECTIONS} (0: no cap)"),
            );
        }
        let rate = rate::validate(
            path,
            (
                "limits.route_new_connections_per_second",
                "limits.route_new_connections_burst",
            ),
            raw.route_new_connections_per_second,
            raw.route_new_connections_burst,
            |r| r.saturating_mul(BURST_SECONDS),
            errs,
        );
        RouteDefaults {
            max_connections,
            rate,
        }
    }
}

impl RouteLimits {
    /// Validates `spec`; `at` prefixes the fields in errors (`route[3]`,
    /// `route `shop``), so a refusal reads `route[3].limits.max_connections:
    /// ...`. The bounds are the `[limits]` ones: a route may ask for more
    /// than the default, never for more than the proxy can hold.
    pub fn validate(
        file: &Path,
        at: &str,
        spec: &RouteLimitsSpec,
        errs: &mut ConfigErrors,
    ) -> Self {
        if let Some(n) = spec.max_connections.filter(|n| *n > MAX_CONNECTIONS) {
            errs.push(
                file,
                format!("{at}.limits.max_connections"),
                format!("{n} is more than the most allowed, {MAX_CONNECTIONS} (0: no cap)"),
            );
        }
        if let Some(r) = spec.new_connections_per_second.filter(|r| *r > RATE_MAX) {
            errs.push(
                file,
                format!("{at}.limits.new_connections_per_second"),
                format!("{r} is more than the most allowed, {RATE_MAX} (0: no rate limit)"),
            );
        }
        match spec.new_connections_burst {
            Some(b) if b > RATE_MAX => errs.push(
                file,
                format!("{at}.limits.new_connections_burst"),
                format!("{b} is more than the most allowed, {RATE_MAX}"),
            ),
            Some(0) => errs.push(
                file,
                format!("{at}.limits.new_connections_burst"),
                "must be at least 1 (a rate of 0 turns the limit off)",
            ),
            _ => {}
        }
        RouteLimits {
            max_connections: spec.max_connections,
            per_second: spec.new_connections_per_second,
            burst: spec.new_connections_burst,
        }
    }

    /// The limits in force: each field the route sets, else `[limits]`'s.
    /// A route that sets only a rate gets [`BURST_SECONDS`] of it as its
    /// burst, not the default burst, which could dwarf a small rate; one
    /// that sets only a burst keeps the default rate.
    pub fn effective(&self, d: &RouteDefaults) -> Effective {
        let rate = match self.per_second {
            Some(0) => None,
            Some(per_second) => Some(Rate {
                per_second,
                burst: self
                    .burst
                    .unwrap_or(per_second.saturating_mul(BURST_SECONDS).min(RATE_MAX)),
            }),
            None => d.rate.map(|r| Rate {
                per_second: r.per_second,
                burst: self.burst.unwrap_or(r.burst),
            }),
        };
        Effective {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: &RouteLimitsSpec) -> Result<RouteLimits, String> {
        let mut errs = ConfigErrors::default();
        let l = RouteLimits::validate(Path::new("routes.toml"), "route[0]", spec, &mut errs);
        if errs.is_empty() {
            Ok(l)
        } else {
            Err(errs.to_string())
        }
    }

    #[test]
    fn unset_fields_take_the_defaults_and_set_ones_override() {
        let d = RouteDefaults::default();
        let none = validate(&RouteLimitsSpec::default()).unwrap();
        assert_eq!(
            none.effective(&d),
            Effective {
                max_connections: 10_000,
                rate: Some(Rate {
                    per_second: 1000,
                    burst: 2000
                })
            }
        );
        let own = validate(&RouteLimitsSpec {
            max_connections: Some(50),
            new_connections_per_second: Some(5),
            new_connections_burst: None,
        })
        .unwrap();
        assert_eq!(
            own.effective(&d),
            Effective {
                max_connections: 50,
                rate: Some(Rate {
                    per_second: 5,
                    burst: 10
                })
            },
            "a route's own rate brings its own burst, not the default's 2000"
        );
        let burst_only = validate(&RouteLimitsSpec {
            new_connections_burst: Some(7),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            burst_only.effective(&d).rate,
            Some(Rate {
                per_second: 1000,
                burst: 7
            })
        );
        let off = validate(&RouteLimitsSpec {
            max_connections: Some(0),
            new_connections_per_second: Some(0),
            new_connections_burst: None,
        })
        .unwrap();
        assert_eq!(
            off.effective(&d),
            Effective {
                max_connections: 0,
                rate: None
            }
        );
        let no_default_rate = RouteDefaults { rate: None, ..d };
        assert_eq!(burst_only.effective(&no_default_rate).rate, None);
    }

    #[test]
    fn every_bound_is_named_by_file_and_field() {
        let e = validate(&RouteLimitsSpec {
            max_connections: Some(MAX_CONNECTIONS + 1),
            new_connections_per_second: Some(RATE_MAX + 1),
            new_connections_burst: Some(0),
        })
        .unwrap_err();
        assert_eq!(
            e,
            "routes.toml: route[0].limits.max_connections: 10000001 is more than the most allowed, 10000000 (0: no cap)\n\
             routes.toml: route[0].limits.new_connections_per_second: 1000001 is more than the most allowed, 1000000 (0: no rate limit)\n\
             routes.toml: route[0].limits.new_connections_burst: must be at least 1 (a rate of 0 turns the limit off)"
        );
        let e = validate(&RouteLimitsSpec {
            new_connections_burst: Some(RATE_MAX + 1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("route[0].limits.new_connections_burst: 1000001"),
            "{e}"
        );
    }
}
