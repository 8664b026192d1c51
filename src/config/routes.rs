//! The routes schema, shared by the routes file (TOML or JSON), the admin API
//! and any other source: raw [`RouteSpec`]s in, validated [`Route`]s out.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::route_limits::{RouteLimits, RouteLimitsSpec};
use super::route_spec::valid_route_name;
pub use super::route_spec::RouteSpec;
use super::terminate;
use super::{ConfigError, ConfigErrors, ControlLimits};
use crate::host::{check_hostname, normalize_host, parse_host_pattern};
use crate::routing::claims::{host_taken, Claims, Clash};
use crate::routing::route::{Backend, BackendHost, Mode, Route};

/// Most networks one route may allow-list: a handful is plenty, and each
/// connect to a named backend scans them for a refused address.
pub const MAX_ALLOW_INTERNAL: usize = 16;

/// Largest routes file read: a million routes of a few hosts each fit
/// many times over; past it the file is a mistake.
pub const MAX_ROUTES_FILE: u64 = 1 << 30;

/// The routes file: `[[route]]` tables in TOML, or `{"route": [...]}` in JSON.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    #[serde(default)]
    pub route: Vec<RouteSpec>,
}

/// Reads a routes file (JSON when it ends in `.json`, TOML otherwise) and
/// validates every route in it under `limits`; nothing is returned unless
/// all are valid. Only a regular file is read (a FIFO would hold the
/// reconciler until a writer came; `/dev/zero` would never end).
pub fn load_file(path: &Path, limits: &ControlLimits) -> Result<Vec<Route>, ConfigErrors> {
    let bytes = crate::tls::pem_file::read_at_most(path, MAX_ROUTES_FILE)
        .map_err(|why| ConfigError::new(path, "", why))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ConfigError::new(path, "", format!("not UTF-8 text: {e}")))?;
    let specs = parse_file(path, &text)?;
    validate_all(path, &specs, "route", limits)
}

/// Parses routes file text without validating it.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<RouteSpec>, ConfigErrors> {
    let file: RoutesFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| {
            ConfigError::new(
                path,
                format!("line {}", e.line()),
                format!("invalid JSON: {e}"),
            )
        })?
    } else {
        toml::from_str(text).map_err(|e| super::toml_error(path, text, &e))?
    };
    Ok(file.route)
}

/// Validates a whole route set: each route alone, then across routes (names
/// unique, no host claimed twice), in time linear in the hosts. `list`
/// names the array in error fields (`route` for the file).
pub fn validate_all(
    file: &Path,
    specs: &[RouteSpec],
    list: &str,
    limits: &ControlLimits,
) -> Result<Vec<Route>, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    // Over the cap, nothing else is looked at: the work stays bounded.
    ControlLimits::check(specs.len(), limits.routes, "routes", "max_routes")
        .map_err(|why| ConfigError::new(file, list, why))?;
    let mut routes = Vec::with_capacity(specs.len());
    // Position in `specs` of each valid route, so conflict errors name the
    // right entry even when earlier ones were invalid.
    let mut at = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        match validate_one(file, &format!("{list}[{i}]"), spec, limits) {
            Ok(r) => {
                routes.push(r);
                at.push(i);
            }
            Err(e) => errs.0.extend(e.0),
        }
    }
    check_conflicts(
        file,
        &routes,
        &|i, _| format!("{list}[{}]", at[i]),
        &mut errs,
    );
    errs.into_result(routes)
}

/// Cross-route rules: two routes with one name, or two routes claiming one
/// host pattern, are errors; silently picking a winner would misroute an app.
/// `label` names a route in error fields (by position, or by name).
pub fn check_conflicts(
    file: &Path,
    routes: &[Route],
    label: &dyn Fn(usize, &Route) -> String,
    errs: &mut ConfigErrors,
) {
    let mut claims = Claims::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        for clash in claims.clashes(r) {
            match clash {
                Clash::Name { by } => errs.push(
                    file,
                    format!("{}.name", label(i, r)),
                    format!(
                        "route name `{}` is already used by {}",
                        r.name,
                        label(*by, &routes[*by])
                    ),
                ),
                Clash::Host { host, by } if *by != i => errs.push(
                    file,
                    format!("{}.hosts", label(i, r)),
                    host_taken(host, &r.name, &routes[*by].name),
                ),
                Clash::Host { .. } => {}
            }
        }
        claims.claim(r, i);
    }
}

/// Validates one route under `limits`; `at` is its position for error
/// fields. A list over its cap is refused before any entry of it is parsed.
pub fn validate_one(
    file: &Path,
    at: &str,
    spec: &RouteSpec,
    limits: &ControlLimits,
) -> Result<Route, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let hosts_cap = ControlLimits::check(
        spec.hosts.len(),
        limits.hosts_per_route,
        "hosts",
        "max_hosts_per_route",
    );
    let backends_cap = ControlLimits::check(
        spec.backends.len(),
        limits.backends_per_route,
        "backends",
        "max_backends_per_route",
    );
    if hosts_cap.is_err() || backends_cap.is_err() {
        for (field, r) in [("hosts", hosts_cap), ("backends", backends_cap)] {
            if let Err(why) = r {
                errs.push(file, format!("{at}.{field}"), why);
            }
        }
        return Err(errs);
    }
    if !valid_route_name(&spec.name) {
        errs.push(
            file,
            format!("{at}.name"),
            format!(
                "`{}` must be 1-128 characters of letters, digits, `.`, `_`, `-`",
                spec.name
            ),
        );
    }

    if spec.hosts.is_empty() {
        errs.push(file, format!("{at}.hosts"), "at least one host is required");
    }
    let mut hosts = Vec::with_capacity(spec.hosts.len());
    let mut seen = HashSet::with_capacity(spec.hosts.len());
    for (i, h) in spec.hosts.iter().enumerate() {
        match parse_host_pattern(h) {
            Ok(p) if !seen.insert(p.clone()) => errs.push(
                file,
                format!("{at}.hosts[{i}]"),
                format!("`{h}` listed twice"),
            ),
            Ok(p) => hosts.push(p),
            Err(why) => errs.push(file, format!("{at}.hosts[{i}]"), format!("`{h}`: {why}")),
        }
    }

    let mode = match spec.mode.as_str() {
        "passthrough" => Mode::Passthrough,
        "terminate" => Mode::Terminate,
        other => {
            errs.push(
                file,
                format!("{at}.mode"),
                format!("`{other}` is not one of `passthrough`, `terminate`"),
            );
            Mode::Passthrough
        }
    };

    if spec.backends.is_empty() {
        errs.push(
            file,
            format!("{at}.backends"),
            "at least one backend is required",
        );
    }
    let mut backends = Vec::with_capacity(spec.backends.len());
    for (i, b) in spec.backends.iter().enumerate() {
        match parse_backend(b) {
            Ok(b) => backends.push(b),
            Err(why) => errs.push(file, format!("{at}.backends[{i}]"), format!("`{b}`: {why}")),
        }
    }

    let expires_at = match &spec.expires_at {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                errs.push(
                    file,
                    format!("{at}.expires_at"),
                    format!("`{s}` is not an RFC 3339 time with a zone ({e})"),
                );
                None
            }
        },
    };

    let close_grace = match &spec.close_grace {
        None => None,
        Some(g) => match humantime::parse_duration(g) {
            Ok(d) if d > super::bounds::CLOSE_GRACE_MAX => {
                super::bounds::check_max(
                    file,
                    format!("{at}.close_grace"),
                    d,
                    super::bounds::CLOSE_GRACE_MAX,
                    &mut errs,
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(
                    file,
                    format!("{at}.close_grace"),
                    format!("`{g}` is not a duration such as `30s` ({e})"),
                );
                None
            }
        },
    };

    let terminate = match mode {
        Mode::Terminate => terminate::validate(file, at, spec, &mut errs).map(Box::new),
        Mode::Passthrough => {
            terminate::refuse_on_passthrough(file, at, spec, &mut errs);
            None
        }
    };

    let proxy_protocol = match spec.proxy_protocol.as_deref() {
        None => false,
        Some("v2") => true,
        Some(other) => {
            errs.push(
                file,
                format!("{at}.proxy_protocol"),
                format!("`{other}` is not supported; the only value is `v2`"),
            );
            false
        }
    };

    let allow_internal = match &spec.allow_internal_backends {
        None => Vec::new(),
        Some(list) if list.len() > MAX_ALLOW_INTERNAL => {
            errs.push(
                file,
                format!("{at}.allow_internal_backends"),
                format!(
                    "{} networks; at most {MAX_ALLOW_INTERNAL} are allowed",
                    list.len()
                ),
            );
            Vec::new()
        }
        Some(list) => super::parse_networks(
            file,
            &format!("{at}.allow_internal_backends"),
            list,
            &mut errs,
        ),
    };

    let limits = RouteLimits::validate(
        file,
        at,
        spec.limits.as_ref().unwrap_or(&RouteLimitsSpec::default()),
        &mut errs,
    );

    errs.into_result(Route {
        name: spec.name.clone(),
        limits,
        proxy_protocol,
        allow_internal: allow_internal.into(),
        terminate,
        close_grace,
        hosts,
        mode,
        backends,
        expires_at,
        app: spec.app.clone(),
        spec: spec.clone(),
    })
}

/// Parses `host:port`, `ip:port` or `[ipv6]:port`.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected `host:port`".to_string())?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port `{port}` is not 1-65535"))?;
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        BackendHost::Ip(
            v6.parse::<IpAddr>()
                .map_err(|_| format!("`{v6}` is not an IPv6 address"))?,
        )
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_ipv6() {
            return Err("write IPv6 backends as `[addr]:port`".into());
        }
        BackendHost::Ip(ip)
    } else {
        let n = normalize_host(host);
        check_hostname(&n)?;
        BackendHost::Name(n)
    };
    Ok(Backend { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPattern;

    fn spec(name: &str, hosts: &[&str], backends: &[&str]) -> RouteSpec {
        RouteSpec::passthrough(name, hosts, backends)
    }

    #[test]
    fn host_patterns_are_normalised() {
        assert_eq!(
            parse_host_pattern("App.Example.COM.").unwrap(),
            HostPattern::Exact("app.example.com".into())
        );
        assert_eq!(
            parse_host_pattern("*.Apps.example.com").unwrap(),
            HostPattern::Wildcard("apps.example.com".into())
        );
        assert!(parse_host_pattern("a.*.example.com").is_err());
        assert!(parse_host_pattern("*").is_err());
        assert!(parse_host_pattern("bad host").is_err());
        assert!(parse_host_pattern("-a.example.com").is_err());
        assert!(parse_host_pattern("a..b").is_err());
    }

    #[test]
    fn internal_allow_lists_are_networks_named_by_field_and_capped() {
        let mut s = spec("r", &["a.test"], &["node.test:443"]);
        s.allow_internal_backends = Some(vec!["127.0.0.0/8".into(), "fe80::1".into()]);
        let r = validate_one(Path::new("f"), "route[0]", &s, &ControlLimits::default()).unwrap();
        let nets: Vec<String> = r.allow_internal.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["127.0.0.0/8", "fe80::1/128"]);
        s.allow_internal_backends = Some(vec!["10.0.0.0/8".into(), "nope".into()]);
        let e = validate_one(Path::new("f"), "route[0]", &s, &ControlLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f: route[0].allow_internal_backends[1]: `nope` is not a network"),
            "{e}"
        );
        s.allow_internal_backends = Some(vec!["10.0.0.0/8".into(); MAX_ALLOW_INTERNAL + 1]);
        let e = validate_one(Path::new("f"), "route[0]", &s, &ControlLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn backends_parse() {
        assert_eq!(
            parse_backend("10.0.0.1:443").unwrap().to_string(),
            "10.0.0.1:443"
        );
        assert_eq!(
            parse_backend("[::1]:8443").unwrap().to_string(),
            "[::1]:8443"
        );
        assert_eq!(
            parse_backend("Node-1.Example.com:443").unwrap().host,
            BackendHost::Name("node-1.example.com".into())
        );
        assert!(parse_backend("::1:443").is_err());
        assert!(parse_backend("host").is_err());
        assert!(parse_backend("host:0").is_err());
        assert!(parse_backend("host:70000").is_err());
    }

    #[test]
    fn conflicts_name_both_routes() {
        let specs = vec![
            spec("a", &["x.example.com"], &["127.0.0.1:1"]),
            spec("b", &["X.example.com."], &["127.0.0.1:2"]),
        ];
        let errs = validate_all(
            Path::new("routes.toml"),
            &specs,
            "route",
            &ControlLimits::default(),
        )
        .unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(
            errs.to_string(),
            "routes.toml: route[1].hosts: host `x.example.com` of route `b` is already claimed by route `a`"
        );
    }

    #[test]
    fn lists_over_their_caps_are_refused_by_field_naming_the_key() {
        let limits = ControlLimits {
            hosts_per_route: 2,
            backends_per_route: 1,
            routes: 2,
        };
        let ok = spec("a", &["a.example.com", "b.example.com"], &["127.0.0.1:1"]);
        assert!(validate_all(
            Path::new("r.toml"),
            std::slice::from_ref(&ok),
            "route",
            &limits
        )
        .is_ok());
        let wide = spec(
            "w",
            &["a.example.com", "b.example.com", "c.example.com"],
            &["127.0.0.1:1", "127.0.0.1:2"],
        );
        let errs = validate_all(Path::new("r.toml"), &[ok.clone(), wide], "route", &limits)
            .unwrap_err()
            .to_string();
        assert_eq!(
            errs,
            "r.toml: route[1].hosts: 3 hosts, at most 2 (limits.max_hosts_per_route)\n\
             r.toml: route[1].backends: 2 backends, at most 1 (limits.max_backends_per_route)"
        );
        let three = [ok.clone(), ok.clone(), ok];
        let errs = validate_all(Path::new("r.toml"), &three, "route", &limits)
            .unwrap_err()
            .to_string();
        assert_eq!(
            errs,
            "r.toml: route: 3 routes, at most 2 (limits.max_routes)"
        );
    }

    #[test]
    fn a_duplicate_among_many_hosts_is_found_and_named() {
        let limits = ControlLimits {
            hosts_per_route: 50_000,
            ..ControlLimits::default()
        };
        let mut hosts: Vec<String> = (0..50_000).map(|i| format!("h{i}.example.com")).collect();
        hosts[49_999] = "H7.Example.com.".into();
        let mut s = spec("a", &[], &["127.0.0.1:1"]);
        s.hosts = hosts;
        let errs = validate_all(Path::new("r.toml"), &[s], "route", &limits)
            .unwrap_err()
            .to_string();
        assert_eq!(
            errs,
            "r.toml: route[0].hosts[49999]: `H7.Example.com.` listed twice"
        );
    }

    #[test]
    fn duplicate_names_rejected() {
        let specs = vec![
            spec("a", &["x.example.com"], &["127.0.0.1:1"]),
            spec("a", &["y.example.com"], &["127.0.0.1:2"]),
        ];
        let errs = validate_all(
            Path::new("r.toml"),
            &specs,
            "route",
            &ControlLimits::default(),
        )
        .unwrap_err();
        assert!(errs.to_string().contains("route[1].name"), "{errs}");
    }

    #[test]
    fn a_close_grace_past_an_hour_is_refused() {
        let mut s = spec("r", &["r.example.test"], &["127.0.0.1:1"]);
        s.close_grace = Some("100years".into());
        let e = validate_one(Path::new("api"), "route `r`", &s, &ControlLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("route `r`.close_grace: "), "{e}");
        assert!(e.contains("the most allowed, 1h"), "{e}");
        s.close_grace = Some("1h".into());
        assert!(validate_one(Path::new("api"), "route `r`", &s, &ControlLimits::default()).is_ok());
    }

    #[test]
    fn every_field_error_is_reported() {
        let mut s = spec("bad name!", &[], &["nope"]);
        s.mode = "teleport".into();
        s.expires_at = Some("tomorrow".into());
        let errs = validate_all(
            Path::new("r.toml"),
            &[s],
            "route",
            &ControlLimits::default(),
        )
        .unwrap_err();
        let text = errs.to_string();
        for f in [
            "route[0].name",
            "route[0].hosts",
            "route[0].mode",
            "route[0].backends[0]",
            "route[0].expires_at",
        ] {
            assert!(
                text.contains(&format!("r.toml: {f}: ")),
                "{f} missing:\n{text}"
            );
        }
    }

    #[test]
    fn toml_file_parses_with_app_metadata() {
        let text = r#"
[[route]]
name = "shop"
hosts = ["81152fe21315.apps.example.com"]
backends = ["10.1.2.3:443", "node-2.example.com:443"]
expires_at = "2030-01-01T00:00:00+01:00"
[route.app]
project = "p1"
name = "shop"
hardware = "4g-eu-001"
"#;
        let specs = parse_file(Path::new("routes.toml"), text).unwrap();
        let routes = validate_all(
            Path::new("routes.toml"),
            &specs,
            "route",
            &ControlLimits::default(),
        )
        .unwrap();
        assert_eq!(routes[0].backends.len(), 2);
        assert_eq!(routes[0].mode, Mode::Passthrough);
        assert_eq!(
            routes[0].expires_at.unwrap().to_rfc3339(),
            "2029-12-31T23:00:00+00:00"
        );
        assert_eq!(
            routes[0].app.as_ref().unwrap().hardware.as_deref(),
            Some("4g-eu-001")
        );
    }

    #[test]
    fn json_file_parses_and_unknown_fields_fail() {
        let ok = r#"{"route":[{"name":"a","hosts":["a.example.com"],"backends":["127.0.0.1:9"]}]}"#;
        assert_eq!(parse_file(Path::new("r.json"), ok).unwrap().len(), 1);
        let bad = r#"{"route":[{"name":"a","hosts":[],"backends":[],"colour":"red"}]}"#;
        let e = parse_file(Path::new("r.json"), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let bad_toml = "[[route]]\nname = \"a\"\nhosts = []\nbackends = []\ncolour = 1\n";
        let e = parse_file(Path::new("r.toml"), bad_toml)
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml: line 5: unknown field `colour`"), "{e}");
    }
}
