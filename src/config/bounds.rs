//! Upper bounds on every duration an operator (or, through the admin API, a
//! writer of routes) sets: a value far past any sane use is a mistake or an
//! attack, and some hold connections open (`close_grace = "100years"` kept
//! an expired app's connection alive). Each refusal names the field and the
//! bound.

use std::path::Path;
use std::time::Duration;

use super::ConfigErrors;

/// Largest accepted `limits.max_connections`: far past what one process
/// serves (two file descriptors and a few KiB each), and well under what
/// the connection semaphore can count.
pub const MAX_CONNECTIONS: usize = 10_000_000;

/// Largest accepted caps on route sets: `limits.max_routes` (ten times
/// the million routes the control plane is measured at),
/// `limits.max_hosts_per_route` (the admin API's body cap holds fewer
/// anyway) and `limits.max_backends_per_route` (tried one after another,
/// so thousands would only add up connect timeouts).
pub const MAX_ROUTES: usize = 10_000_000;
pub const MAX_HOSTS_PER_ROUTE: usize = 100_000;
pub const MAX_BACKENDS_PER_ROUTE: usize = 10_000;

/// Most data-plane workers (`workers`): each is a thread with its own
/// listening socket per listener.
pub const MAX_WORKERS: usize = 128;

/// Most listening sockets one process may have, data plane and admin
/// together: an upgrade hands all of them over in one message, and Linux
/// takes at most 253 descriptors in one (`SCM_MAX_FD`). With one socket
/// per worker per listener, `workers` times the listeners must fit.
pub const MAX_LISTENING_SOCKETS: usize = 253;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

/// How long a removed or changed route's connections may finish, in the
/// config and per route: an expired app must vanish soon.
pub const CLOSE_GRACE_MAX: Duration = HOUR;

/// The bound of each duration field of the static config.
pub const DURATION_MAX: &[(&str, Duration)] = &[
    ("timeouts.client_hello", MINUTE),
    ("timeouts.upstream_connect", MINUTE),
    ("timeouts.idle", Duration::from_secs(7 * 86400)),
    ("timeouts.shutdown_grace", DAY),
    ("reload.debounce", MINUTE),
    ("reload.close_grace", CLOSE_GRACE_MAX),
    ("reload.stall_timeout", Duration::from_secs(600)),
    ("health.failure_cooldown", HOUR),
    ("apps.cname_recheck", Duration::from_secs(7 * 86400)),
    ("dns.timeout", MINUTE),
    // A link that takes longer is down; the follower's back-off waits no
    // longer than a few minutes, so a recovered etcd is followed soon.
    ("etcd.dial_timeout", MINUTE),
    ("etcd.request_timeout", MINUTE),
    ("etcd.heartbeat", MINUTE),
    ("etcd.backoff_max", Duration::from_secs(600)),
    // RFC 8767 suggests 1 to 3 days; past a day an address may well belong
    // to someone else by now.
    ("dns.serve_stale", DAY),
];

/// Records an error if `value` of `field` is past its bound.
pub fn check(path: &Path, field: &str, value: Duration, errs: &mut ConfigErrors) {
    let Some((_, max)) = DURATION_MAX.iter().find(|(f, _)| *f == field) else {
        return;
    };
    check_max(path, field, value, *max, errs);
}

/// Records an error if `value` is past `max`.
pub fn check_max(
    path: &Path,
    field: impl Into<String>,
    value: Duration,
    max: Duration,
    errs: &mut ConfigErrors,
) {
    if value > max {
        errs.push(
            path,
            field,
            format!(
                "{} is more than the most allowed, {}",
                humantime::format_duration(value),
                humantime::format_duration(max)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_century_of_grace_is_refused_naming_field_and_bound() {
        let mut errs = ConfigErrors::default();
        let century = humantime::parse_duration("100years").unwrap();
        check(
            Path::new("p.toml"),
            "reload.close_grace",
            century,
            &mut errs,
        );
        check(Path::new("p.toml"), "timeouts.idle", DAY, &mut errs);
        assert_eq!(errs.0.len(), 1, "{errs:?}");
        let e = errs.0[0].to_string();
        assert!(e.starts_with("p.toml: reload.close_grace: "), "{e}");
        assert!(e.ends_with("the most allowed, 1h"), "{e}");
    }
}
