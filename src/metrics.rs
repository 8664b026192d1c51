//! Every metric the proxy exports, in one place, prefixed `mse_proxy_`.
//!
//! Label values are bounded: `route` is a configured route name (or `(none)`
//! when no route was found, or `(all)` when per-route labels are off), never
//! the SNI a client sent; `outcome`, `mode`, `direction`, `source` and
//! `result` come from closed sets; `certificate` is a configured certificate's
//! name and `app` a registered app's `project/name`. Series of removed routes
//! are dropped.
//! Per-route state that changes under traffic (open connections, routes by
//! mode, expiry times) is read from the live snapshot at scrape time, so it
//! costs nothing on the connection path and can never go stale.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::proxy::Outcome;
use crate::routing::Mode;

/// Route label value when no route was involved (unknown SNI, refusals
/// before routing). Parentheses cannot occur in route names.
pub const NO_ROUTE: &str = "(none)";
/// Route label value for every route when per-route labels are off.
pub const ALL_ROUTES: &str = "(all)";

const PREFIX: &str = "mse_proxy";

/// Buckets for sub-second latencies (hello read, connect, handshake).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for whole connection lifetimes.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// Every `source` whose changes can be refused (`route_reloads_total{result="error"}`).
/// Their error series are registered at zero, so that the first refusal is an
/// increase: a series born at 1 shows no `increase()`, and the reload alert
/// would miss it (grafana/alerts.yml).
pub const REFUSING_SOURCES: [&str; 6] = ["reload", "watch", "api", "app", "etcd", "cname"];

/// Label values of `admin_requests_total{access}` (`crate::admin::audit`): the role a request needed, or `open`.
pub const ADMIN_ACCESS: [&str; 4] = ["open", "metrics", "read", "write"];
/// Label values of `admin_requests_total{outcome}`.
pub const ADMIN_OUTCOMES: [&str; 6] = [
    "ok",
    "unauthenticated",
    "forbidden",
    "invalid",
    "unavailable",
    "error",
];

/// Gauges computed from the live snapshot and apps at scrape time: name,
/// help, labels.
const SCRAPE_TIME: [(&str, &str, &[&str]); 4] = [
    (
        "connections_open",
        "Connections open now, by route",
        &["route"],
    ),
    ("routes", "Routes in the live table, by mode", &["mode"]),
    (
        "route_expiry_timestamp_seconds",
        "When each route expires (Unix time)",
        &["route"],
    ),
    // One family for both kinds, the other label empty, so that one query
    // (`... - time() < 14 * 86400`) watches every certificate.
    (
        "certificate_expiry_timestamp_seconds",
        "When each certificate's chain expires (Unix time, its earliest notAfter): \
         the platform's by `certificate`, app owners' by `app`",
        &["app", "certificate"],
    ),
];

/// Empty gauges for the scrape-time families, in [`SCRAPE_TIME`] order.
fn scrape_gauges() -> [IntGaugeVec; 4] {
    SCRAPE_TIME.map(|(name, help, labels)| IntGaugeVec::new(opts(name, help), labels).unwrap())
}

/// The proxy's metrics; one per running proxy (tests run several per process).
pub struct Metrics {
    registry: Registry,
    /// Every family name this exports (registered or computed at scrape).
    names: Vec<String>,
    per_route: bool,
    pub accepted: IntCounter,
    pub connections: IntCounterVec,
    pub bytes: IntCounterVec,
    pub hello_seconds: Histogram,
    pub connect_seconds: HistogramVec,
    pub connect_failures: IntCounterVec,
    pub handshake_seconds: HistogramVec,
    pub duration_seconds: HistogramVec,
    pub reloads: IntCounterVec,
    /// Re-reads of a `[[certificate]]` whose files changed on disk, by its
    /// name and result (`ok`: now served; `error`: refused, the old one stays).
    pub certificate_reloads: IntCounterVec,
    pub expirations: IntCounter,
    /// Commits to the durable state store (`crate::state`) that failed: the
    /// change they carried was not applied (the API answered 503).
    pub state_write_errors: IntCounter,
    /// With `[etcd]`: writes of the local cache of etcd (`state_dir`'s
    /// `etcd-cache.redb`) that failed. Serving goes on (etcd is the truth);
    /// what is at risk is a start while etcd is down.
    pub etcd_cache_write_errors: IntCounter,
    /// The etcd revision of the set last written to that cache.
    pub etcd_cache_revision: IntGauge,
    pub dns_lookups: IntCounterVec,
    /// Resolved backend addresses refused by `crate::dns::screen`, by
    /// reason (`loopback`, `link_local`, `unspecified`, `multicast`,
    /// `broadcast`, `admin`); the connection's outcome, per route, is
    /// `backend_address_refused` when no address was left.
    pub backend_addresses_refused: IntCounterVec,
    pub active: IntGauge,
    /// `limits.max_connections`, set once at start (the static config is not
    /// reloaded): `active` over this is how close accepts are to refusal.
    pub connections_max: IntGauge,
    /// `[etcd]` (all zero without it).
    pub etcd_connected: IntGauge,
    pub etcd_revision: IntGauge,
    pub etcd_watch_lag: Gauge,
    pub etcd_reconnects: IntCounter,
    pub etcd_resyncs: IntCounterVec,
    pub etcd_invalid_keys: IntGauge,
    pub etcd_routes_left_out: IntGauge,
    /// etcd changes applied, by how: `delta` (only what changed) or `full`
    /// (the whole set refitted: a read, or a change that clashed).
    pub etcd_applied: IntCounterVec,
    pub etcd_on_fallback: IntGauge,
    /// Admin API requests by the access they needed and their outcome
    /// (`crate::admin::audit`).
    pub admin_requests: IntCounterVec,
    /// Re-reads of the admin token files: `ok` now in service, `error`
    /// refused (the tokens in service stay).
    pub admin_token_reloads: IntCounterVec,
    /// Upgrades asked of this process (`crate::upgrade`), by result: `ok`
    /// (the new process serves), `refused` (another hand-off format),
    /// `failed` (it did not start, or not in time; this one serves on).
    pub upgrades: IntCounterVec,
    /// Passthrough connections of an upgrade's hand-off, by result: `sent`
    /// (taken by the new process), `kept` (not taken: relayed on here),
    /// `received` (taken from the old process).
    pub upgrade_connections: IntCounterVec,
    /// Bulk chunks copied because `pipe2(2)` failed (out of descriptors):
    /// the relay's process-wide count, brought here at each scrape
    /// ([`Metrics::sync_splice_pipe_failures`]).
    pub splice_pipe_failures: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_route", &self.per_route)
            .finish()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn hopts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(PREFIX)
        .buckets(buckets.to_vec())
}

impl Metrics {
    /// Builds and registers every metric. `per_route = false` folds all
    /// routes into one label value, for tables too large to label.
    pub fn new(per_route: bool) -> Self {
        let registry = Registry::new();
        let mut m = Metrics {
            per_route,
            accepted: IntCounter::with_opts(opts(
                "connections_accepted_total",
                "Connections accepted, before any check",
            ))
            .unwrap(),
            connections: IntCounterVec::new(
                opts(
                    "connections_total",
                    "Connections finished, by route, mode and outcome",
                ),
                &["route", "mode", "outcome"],
            )
            .unwrap(),
            bytes: IntCounterVec::new(
                opts(
                    "bytes_total",
                    "Bytes relayed, by route and direction (in: from clients, out: to clients)",
                ),
                &["route", "direction"],
            )
            .unwrap(),
            hello_seconds: Histogram::with_opts(hopts(
                "client_hello_duration_seconds",
                "Time from accept to a whole ClientHello",
                LATENCY_BUCKETS,
            ))
            .unwrap(),
            connect_seconds: HistogramVec::new(
                hopts(
                    "upstream_connect_duration_seconds",
                    "Time to connect to a backend, by route",
                    LATENCY_BUCKETS,
                ),
                &["route"],
            )
            .unwrap(),
            connect_failures: IntCounterVec::new(
                opts(
                    "upstream_connect_failures_total",
                    "Failed connect attempts to backend addresses, by route",
                ),
                &["route"],
            )
            .unwrap(),
            handshake_seconds: HistogramVec::new(
                hopts(
                    "tls_handshake_duration_seconds",
                    "Client TLS handshake time on terminate routes",
                    LATENCY_BUCKETS,
                ),
                &["route"],
            )
            .unwrap(),
            duration_seconds: HistogramVec::new(
                hopts(
                    "connection_duration_seconds",
                    "Lifetime of routed connections, by route",
                    DURATION_BUCKETS,
                ),
                &["route"],
            )
            .unwrap(),
            reloads: IntCounterVec::new(
                opts(
                    "route_reloads_total",
                    "Route set changes, by source and result",
                ),
                &["source", "result"],
            )
            .unwrap(),
            certificate_reloads: IntCounterVec::new(
                opts(
                    "certificate_reloads_total",
                    "Renewals of a certificate's files taken (ok) or refused, the old one kept (error)",
                ),
                &["certificate", "result"],
            )
            .unwrap(),
            expirations: IntCounter::with_opts(opts(
                "route_expirations_total",
                "Routes removed at their expiry",
            ))
            .unwrap(),
            state_write_errors: IntCounter::with_opts(opts(
                "state_write_errors_total",
                "Commits to the durable state store that failed; the change was not applied",
            ))
            .unwrap(),
            etcd_cache_write_errors: IntCounter::with_opts(opts(
                "etcd_cache_write_errors_total",
                "Writes of the local cache of etcd (state_dir) that failed; serving goes on",
            ))
            .unwrap(),
            etcd_cache_revision: IntGauge::with_opts(opts(
                "etcd_cache_revision",
                "The etcd revision of the set last written to the local cache of etcd",
            ))
            .unwrap(),
            dns_lookups: IntCounterVec::new(
                opts(
                    "dns_lookups_total",
                    "Backend name lookups, by result (stale: the DNS did not answer, the last good answer was served)",
                ),
                &["result"],
            )
            .unwrap(),
            backend_addresses_refused: IntCounterVec::new(
                opts(
                    "backend_addresses_refused_total",
                    "Resolved backend addresses refused as internal (loopback, link-local, the admin listener...), by reason",
                ),
                &["reason"],
            )
            .unwrap(),
            active: IntGauge::with_opts(opts(
                "connections_active",
                "Connections open now, all routes",
            ))
            .unwrap(),
            connections_max: IntGauge::with_opts(opts(
                "connections_max",
                "The connection limit (limits.max_connections); accepts beyond it are refused",
            ))
            .unwrap(),
            etcd_connected: IntGauge::with_opts(opts(
                "etcd_connected",
                "1 while the etcd watch is live (routes follow the store, writes are taken)",
            ))
            .unwrap(),
            etcd_revision: IntGauge::with_opts(opts(
                "etcd_revision",
                "The etcd revision the live table reflects",
            ))
            .unwrap(),
            etcd_watch_lag: Gauge::with_opts(opts(
                "etcd_watch_lag_seconds",
                "How long the etcd watch took to answer the last progress request",
            ))
            .unwrap(),
            etcd_reconnects: IntCounter::with_opts(opts(
                "etcd_reconnects_total",
                "Times the etcd watch was lost and connecting began again",
            ))
            .unwrap(),
            etcd_resyncs: IntCounterVec::new(
                opts(
                    "etcd_resyncs_total",
                    "Full reads of the etcd route set, by reason (start, reconnect, compacted)",
                ),
                &["reason"],
            )
            .unwrap(),
            etcd_invalid_keys: IntGauge::with_opts(opts(
                "etcd_invalid_keys",
                "Keys under the etcd prefix that are not valid routes (not served)",
            ))
            .unwrap(),
            etcd_routes_left_out: IntGauge::with_opts(opts(
                "etcd_routes_left_out",
                "Valid etcd routes this instance does not serve (a host its own routes claim, or no certificate)",
            ))
            .unwrap(),
            etcd_applied: IntCounterVec::new(
                opts(
                    "etcd_applied_total",
                    "etcd changes applied: as a delta (what changed) or in full (the whole set refitted)",
                ),
                &["how"],
            )
            .unwrap(),
            etcd_on_fallback: IntGauge::with_opts(opts(
                "etcd_on_fallback",
                "1 while the table comes from the local cache of etcd in state_dir (stale: etcd unreachable since start)",
            ))
            .unwrap(),
            admin_requests: IntCounterVec::new(
                opts(
                    "admin_requests_total",
                    "Admin API requests, by the access they needed (open, metrics, read, write) and outcome",
                ),
                &["access", "outcome"],
            )
            .unwrap(),
            admin_token_reloads: IntCounterVec::new(
                opts(
                    "admin_token_reloads_total",
                    "Re-reads of the admin token files: taken (ok) or refused, the old tokens kept (error)",
                ),
                &["result"],
            )
            .unwrap(),
            upgrades: IntCounterVec::new(
                opts(
                    "upgrades_total",
                    "Upgrades asked of this process: the new one serves (ok), another hand-off format (refused), it did not start in time (failed)",
                ),
                &["result"],
            )
            .unwrap(),
            upgrade_connections: IntCounterVec::new(
                opts(
                    "upgrade_connections_total",
                    "Passthrough connections of upgrades: taken by the new process (sent), relayed on here (kept), taken from the old one (received)",
                ),
                &["result"],
            )
            .unwrap(),
            splice_pipe_failures: IntCounter::with_opts(opts(
                "splice_pipe_failures_total",
                "Bulk chunks the passthrough relay copied through user space because no pipe \
                 could be had for splice (out of file descriptors)",
            ))
            .unwrap(),
            registry,
            names: Vec::new(),
        };
        let build =
            IntGaugeVec::new(opts("build_info", "Build information"), &["version"]).unwrap();
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.accepted.clone()),
            Box::new(m.connections.clone()),
            Box::new(m.bytes.clone()),
            Box::new(m.hello_seconds.clone()),
            Box::new(m.connect_seconds.clone()),
            Box::new(m.connect_failures.clone()),
            Box::new(m.handshake_seconds.clone()),
            Box::new(m.duration_seconds.clone()),
            Box::new(m.reloads.clone()),
            Box::new(m.certificate_reloads.clone()),
            Box::new(m.expirations.clone()),
            Box::new(m.state_write_errors.clone()),
            Box::new(m.etcd_cache_write_errors.clone()),
            Box::new(m.etcd_cache_revision.clone()),
            Box::new(m.dns_lookups.clone()),
            Box::new(m.backend_addresses_refused.clone()),
            Box::new(m.active.clone()),
            Box::new(m.connections_max.clone()),
            Box::new(m.etcd_connected.clone()),
            Box::new(m.etcd_revision.clone()),
            Box::new(m.etcd_watch_lag.clone()),
            Box::new(m.etcd_reconnects.clone()),
            Box::new(m.etcd_resyncs.clone()),
            Box::new(m.etcd_invalid_keys.clone()),
            Box::new(m.etcd_routes_left_out.clone()),
            Box::new(m.etcd_applied.clone()),
            Box::new(m.etcd_on_fallback.clone()),
            Box::new(m.admin_requests.clone()),
            Box::new(m.admin_token_reloads.clone()),
            Box::new(m.upgrades.clone()),
            Box::new(m.upgrade_connections.clone()),
            Box::new(m.splice_pipe_failures.clone()),
            Box::new(build),
            Box::new(prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                PREFIX,
            )),
        ];
        for c in collectors {
            m.names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            m.registry.register(c).expect("metric names are unique");
        }
        for (n, _, _) in SCRAPE_TIME {
            m.names.push(format!("{PREFIX}_{n}"));
        }
        // Outcome series exist from the start, so rates are defined at zero.
        for o in Outcome::ALL {
            m.connections
                .with_label_values(&[NO_ROUTE, NO_ROUTE, o.as_str()]);
        }
        for s in REFUSING_SOURCES {
            m.reloads.with_label_values(&[s, "error"]);
        }
        for access in ADMIN_ACCESS {
            for outcome in ADMIN_OUTCOMES {
                m.admin_requests.with_label_values(&[access, outcome]);
            }
        }
        for r in ["ok", "stale", "not_found", "unavailable"] {
            m.dns_lookups.with_label_values(&[r]);
        }
        for r in crate::dns::screen::Refusal::ALL {
            m.backend_addresses_refused.with_label_values(&[r.as_str()]);
        }
        for r in ["ok", "refused", "failed"] {
            m.upgrades.with_label_values(&[r]);
        }
        for r in ["sent", "kept", "received"] {
            m.upgrade_connections.with_label_values(&[r]);
        }
        for r in ["start", "reconnect", "compacted"] {
            m.etcd_resyncs.with_label_values(&[r]);
        }
        for how in ["delta", "full"] {
            m.etcd_applied.with_label_values(&[how]);
        }
        m
    }

    /// Brings `splice_pipe_failures_total` up to `total`, the relay's
    /// process-wide count (a counter only grows).
    pub fn sync_splice_pipe_failures(&self, total: u64) {
        let have = self.splice_pipe_failures.get();
        if total > have {
            self.splice_pipe_failures.inc_by(total - have);
        }
    }

    /// Every metric family name the proxy can export, whether or not it has
    /// samples yet (dashboards and alerts are checked against this).
    pub fn metric_names(&self) -> &[String] {
        &self.names
    }

    /// The label value for a route name.
    pub fn route_label<'a>(&self, name: &'a str) -> &'a str {
        if self.per_route {
            name
        } else {
            ALL_ROUTES
        }
    }

    /// A connection that ended before any route was chosen.
    pub fn unrouted(&self, outcome: Outcome) {
        self.connections
            .with_label_values(&[NO_ROUTE, NO_ROUTE, outcome.as_str()])
            .inc();
    }

    /// Handles for one route, resolved once and kept in the route's entry.
    pub fn for_route(&self, name: &str, mode: Mode) -> RouteMetrics {
        let route = self.route_label(name);
        RouteMetrics {
            route: route.to_string(),
            mode,
            bytes_in: self.bytes.with_label_values(&[route, "in"]),
            bytes_out: self.bytes.with_label_values(&[route, "out"]),
            connect: self.connect_seconds.with_label_values(&[route]),
            connect_failures: self.connect_failures.with_label_values(&[route]),
            handshake: OnceLock::new(),
            duration: self.duration_seconds.with_label_values(&[route]),
            outcomes: Default::default(),
        }
    }

    /// Drops the series of a route that left the table.
    pub fn forget_route(&self, name: &str) {
        if !self.per_route {
            return;
        }
        let _ = self.bytes.remove_label_values(&[name, "in"]);
        let _ = self.bytes.remove_label_values(&[name, "out"]);
        let _ = self.connect_seconds.remove_label_values(&[name]);
        let _ = self.connect_failures.remove_label_values(&[name]);
        let _ = self.handshake_seconds.remove_label_values(&[name]);
        let _ = self.duration_seconds.remove_label_values(&[name]);
        for mode in [Mode::Passthrough, Mode::Terminate] {
            for o in Outcome::ALL {
                let _ = self
                    .connections
                    .remove_label_values(&[name, mode.as_str(), o.as_str()]);
            }
        }
    }

    /// Series of the certificates the config names, at zero, so that a
    /// renewal's first error is a change a rate sees.
    pub fn certificates_configured<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            for result in ["ok", "error"] {
                self.certificate_reloads.with_label_values(&[name, result]);
            }
        }
    }

    /// The Prometheus text exposition: the registry plus the scrape-time
    /// gauges `fill` sets from the live table and apps (open connections by
    /// route, routes by mode, route and certificate expiries). Computed at
    /// each scrape, so series of removed routes, apps or certificates cannot
    /// linger. A closure, so this module knows no table or app type: the
    /// table and the apps fill in what they hold (`Snapshot::scrape`,
    /// `Apps::scrape`).
    pub fn render(&self, fill: impl FnOnce(&Scrape)) -> String {
        let mut families = self.registry.gather();
        let registry = Registry::new();
        let [open, routes, expiry, cert_expiry] = scrape_gauges();
        for mode in [Mode::Passthrough, Mode::Terminate] {
            routes.with_label_values(&[mode.as_str()]).set(0);
        }
        let scrape = Scrape {
            per_route: self.per_route,
            open,
            routes,
            expiry,
            cert_expiry,
        };
        fill(&scrape);
        let Scrape {
            open,
            routes,
            expiry,
            cert_expiry,
            ..
        } = scrape;
        for c in [open, routes, expiry, cert_expiry] {
            let _ = registry.register(Box::new(c));
        }
        families.extend(registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The scrape-time gauges of one scrape, for the live table and the apps
/// to fill in ([`Metrics::render`]).
pub struct Scrape {
    per_route: bool,
    open: IntGaugeVec,
    routes: IntGaugeVec,
    expiry: IntGaugeVec,
    cert_expiry: IntGaugeVec,
}

impl Scrape {
    /// One live route: counted by mode; its open connections and expiry by
    /// route label (folded into `(all)`, and no expiry, when per-route
    /// labels are off).
    pub fn route(&self, name: &str, mode: Mode, open: usize, expires_at: Option<i64>) {
        self.routes.with_label_values(&[mode.as_str()]).inc();
        let label = if self.per_route { name } else { ALL_ROUTES };
        self.open.with_label_values(&[label]).add(open as i64);
        if let (true, Some(t)) = (self.per_route, expires_at) {
            self.expiry.with_label_values(&[label]).set(t);
        }
    }

    /// A platform certificate's earliest notAfter (Unix time).
    pub fn certificate(&self, label: &str, not_after: i64) {
        self.cert_expiry
            .with_label_values(&["", label])
            .set(not_after);
    }

    /// An app owner's certificate; per app, like per route: not when
    /// labels are folded for size.
    pub fn app_certificate(&self, app: &str, not_after: i64) {
        if self.per_route {
            self.cert_expiry
                .with_label_values(&[app, ""])
                .set(not_after);
        }
    }
}

/// One route's metric handles: plain atomics on the connection path.
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    mode: Mode,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub connect: Histogram,
    pub connect_failures: IntCounter,
    handshake: OnceLock<Histogram>,
    pub duration: Histogram,
    outcomes: [OnceLock<IntCounter>; Outcome::ALL.len()],
}

impl RouteMetrics {
    /// Counts a finished connection on this route.
    pub fn finished(
        &self,
        m: &Metrics,
        outcome: Outcome,
        bytes_in: u64,
        bytes_out: u64,
        took: Duration,
    ) {
        let idx = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[idx]
            .get_or_init(|| {
                m.connections.with_label_values(&[
                    &self.route,
                    self.mode.as_str(),
                    outcome.as_str(),
                ])
            })
            .inc();
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
        self.duration.observe(took.as_secs_f64());
    }

    /// The handshake histogram (terminate routes only, created on first use).
    pub fn handshake(&self, m: &Metrics) -> &Histogram {
        self.handshake
            .get_or_init(|| m.handshake_seconds.with_label_values(&[&self.route]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_families_without_samples() {
        let m = Metrics::new(true);
        let names = m.metric_names();
        for n in [
            "mse_proxy_tls_handshake_duration_seconds",
            "mse_proxy_connections_open",
            "mse_proxy_process_open_fds",
            "mse_proxy_route_reloads_total",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }

    #[test]
    fn the_connection_limit_is_exported() {
        let m = Metrics::new(true);
        m.connections_max.set(1234);
        let text = m.render(|_| {});
        assert!(
            text.contains("\nmse_proxy_connections_max 1234\n"),
            "{text}"
        );
        assert!(m
            .metric_names()
            .iter()
            .any(|n| n == "mse_proxy_connections_max"));
    }

    #[test]
    fn refusal_series_start_at_zero() {
        let text = Metrics::new(true).render(|_| {});
        for s in REFUSING_SOURCES {
            let series =
                format!("mse_proxy_route_reloads_total{{result=\"error\",source=\"{s}\"}} 0\n");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn route_labels_fold_when_per_route_is_off() {
        let m = Metrics::new(false);
        assert_eq!(m.route_label("shop"), ALL_ROUTES);
        let m = Metrics::new(true);
        assert_eq!(m.route_label("shop"), "shop");
    }

    #[test]
    fn forgotten_routes_leave_the_exposition() {
        let m = Metrics::new(true);
        let rm = m.for_route("shop", Mode::Passthrough);
        rm.finished(&m, Outcome::Ok, 10, 20, Duration::from_millis(5));
        let text = m.render(|_| {});
        assert!(
            text.contains("mse_proxy_bytes_total{direction=\"in\",route=\"shop\"} 10"),
            "{text}"
        );
        assert!(text.contains(
            "mse_proxy_connections_total{mode=\"passthrough\",outcome=\"ok\",route=\"shop\"} 1"
        ));
        m.forget_route("shop");
        let text = m.render(|_| {});
        assert!(!text.contains("route=\"shop\""), "{text}");
    }
}
