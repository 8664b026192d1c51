//! The Grafana dashboard (`grafana/dashboard.json`) against what the proxy
//! really exports: every PromQL expression in it (panel targets, annotations,
//! template variable queries) may name only metric families that
//! `Metrics::metric_names()` lists (histograms through their `_bucket`,
//! `_sum` and `_count` series), the panels an on-call engineer needs are
//! there, and every panel queries the `${datasource}` variable.

mod common;

use std::collections::BTreeSet;

use common::promql::{check_exprs, series_names, Exported};
use mse_proxy::metrics::Metrics;
use mse_proxy::routing::Mode;
use serde_json::Value;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboard.json");
const DATASOURCE: &str = "${datasource}";

/// Panels (by title) the dashboard must keep.
const REQUIRED_PANELS: &[&str] = &[
    "Connection rate by outcome",
    "Error ratio",
    "Open connections",
    "Open connections by route",
    "Throughput",
    "Upstream connect time p50/p99",
    "ClientHello read time p50/p99",
    "TLS handshake time p50/p99",
    "Top 10 routes by traffic",
    "Reloads and expirations",
    "Routes loaded by mode",
    "Resident memory",
    "Open file descriptors",
    "CPU usage",
];

// ---------------------------------------------------------------------------
// The dashboard

/// What a fresh proxy's metrics export. The labelled histograms get a child
/// so that they show (with their type) in the exposition; hello time has no
/// labels and always shows.
fn exported() -> Exported {
    let m = Metrics::new(true);
    let probe = m.for_route("probe", Mode::Terminate);
    probe.handshake(&m);
    Exported::new(m.metric_names(), &m.render(|_| {}))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// A PromQL expression and where it is (a JSON pointer, with the titles of
/// the panels on the way).
struct Expr {
    at: String,
    text: String,
    variable_query: bool,
}

/// Every `expr` anywhere in the document, plus the queries of the `query`
/// template variables.
fn exprs(doc: &Value) -> Vec<Expr> {
    fn walk(v: &Value, at: &str, out: &mut Vec<Expr>) {
        match v {
            Value::Object(map) => {
                // Name the panel (or annotation) in messages.
                let at = match map.get("title").or(map.get("name")).and_then(Value::as_str) {
                    Some(title) if !at.is_empty() => format!("{at} \"{title}\""),
                    _ => at.to_string(),
                };
                for (k, x) in map {
                    let here = format!("{at}/{k}");
                    if k == "expr" {
                        let text = x
                            .as_str()
                            .unwrap_or_else(|| panic!("{here} is not a string"));
                        out.push(Expr {
                            at: here.clone(),
                            text: text.to_string(),
                            variable_query: false,
                        });
                    }
                    walk(x, &here, out);
                }
            }
            Value::Array(items) => {
                for (n, x) in items.iter().enumerate() {
                    walk(x, &format!("{at}/{n}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    for (n, var) in variables(doc).iter().enumerate() {
        if var["type"] != "query" {
            continue;
        }
        let at = format!("/templating/list/{n}");
        let mut found = false;
        for (field, q) in [
            ("query", &var["query"]),
            ("query/query", &var["query"]["query"]),
            ("definition", &var["definition"]),
        ] {
            if let Some(text) = q.as_str().filter(|t| !t.is_empty()) {
                found = true;
                out.push(Expr {
                    at: format!("{at}/{field}"),
                    text: text.to_string(),
                    variable_query: true,
                });
            }
        }
        assert!(found, "{at}: a query variable without a query");
    }
    out
}

fn variables(doc: &Value) -> &[Value] {
    doc["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every panel, including those nested in rows.
fn panels(doc: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&doc["panels"], &mut out);
    out
}

fn title(p: &Value) -> &str {
    p["title"].as_str().unwrap_or("(untitled)")
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn every_expression_uses_only_exported_metrics() {
    let doc = dashboard();
    let exported = exported();
    let exprs = exprs(&doc);
    assert!(exprs.len() > 20, "only {} expressions found", exprs.len());
    let (problems, used) = check_exprs(
        &exported,
        &[],
        exprs
            .iter()
            .map(|e| (e.at.as_str(), e.text.as_str(), e.variable_query)),
    );
    assert!(
        problems.is_empty(),
        "{DASHBOARD} uses metrics the proxy does not export:\n{problems}"
    );
    // The metric families the issue names are all on the dashboard.
    for family in [
        "mse_proxy_connections_total",
        "mse_proxy_connections_active",
        "mse_proxy_connections_open",
        "mse_proxy_bytes_total",
        "mse_proxy_upstream_connect_duration_seconds_bucket",
        "mse_proxy_client_hello_duration_seconds_bucket",
        "mse_proxy_tls_handshake_duration_seconds_bucket",
        "mse_proxy_route_reloads_total",
        "mse_proxy_route_expirations_total",
        "mse_proxy_routes",
        "mse_proxy_process_resident_memory_bytes",
        "mse_proxy_process_open_fds",
        "mse_proxy_process_cpu_seconds_total",
    ] {
        assert!(used.contains(family), "no expression uses {family}");
    }
}

#[test]
fn required_panels_exist_and_query_the_datasource_variable() {
    let doc = dashboard();
    let all = panels(&doc);
    let titles: BTreeSet<&str> = all.iter().map(|p| title(p)).collect();
    let missing: Vec<&&str> = REQUIRED_PANELS
        .iter()
        .filter(|t| !titles.contains(**t))
        .collect();
    assert!(
        missing.is_empty(),
        "panels missing: {missing:?}; found {titles:?}"
    );

    let mut ids = BTreeSet::new();
    for p in &all {
        let t = title(p);
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel `{t}` has no id"));
        assert!(ids.insert(id), "panel id {id} (`{t}`) is used twice");
        assert!(p["gridPos"].is_object(), "panel `{t}` has no gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], DATASOURCE,
            "panel `{t}` must use the `{DATASOURCE}` data source, has {}",
            p["datasource"]
        );
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel `{t}` has no query");
        for (n, target) in targets.iter().enumerate() {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "panel `{t}` target {n} has no expr"
            );
            if !target["datasource"].is_null() {
                assert_eq!(
                    target["datasource"]["uid"], DATASOURCE,
                    "panel `{t}` target {n} uses another data source"
                );
            }
        }
    }
}

#[test]
fn template_variables_choose_the_datasource_and_route() {
    let doc = dashboard();
    assert!(
        doc["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        doc["schemaVersion"]
    );
    let vars = variables(&doc);
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` template variable"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"], DATASOURCE,
            "variable `{}` must query `{DATASOURCE}`",
            v["name"]
        );
    }
    let route = var("route");
    let q = route["query"].as_str().expect("route query is a string");
    assert!(
        q.starts_with("label_values(mse_proxy_connections_total") && q.ends_with(", route)"),
        "route variable query: {q}"
    );
    // `(none)` and `(all)` are route values: they must be regex-escaped,
    // which Grafana does for multi-value / include-all variables.
    assert_eq!(route["multi"], true);
    assert_eq!(route["includeAll"], true);
}

#[test]
fn provisioning_points_at_the_folder_the_readme_mounts() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| {
        std::fs::read_to_string(format!("{root}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let provider = read("grafana/provisioning/dashboards/mse-proxy.yaml");
    let path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(str::trim)
        .expect("the dashboard provider names a path");
    let readme = read("grafana/README.md");
    assert!(
        readme.contains(&format!("{path}/")),
        "grafana/README.md does not mount the dashboard under {path}"
    );
    let datasource = read("grafana/provisioning/datasources/prometheus.yaml");
    assert!(datasource.contains("type: prometheus"));
    assert!(datasource.contains("url: http://prometheus:9090"));
}

// The checker itself: it must catch what it is for.

#[test]
fn checker_finds_series_names_and_skips_labels_functions_and_variables() {
    let names = |e: &str| series_names(e, false).unwrap();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (route, le) (rate(mse_proxy_upstream_connect_duration_seconds_bucket{instance=~"$instance", route=~"$route"}[$__rate_interval])))"#
        ),
        ["mse_proxy_upstream_connect_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "sum(rate(a_total[5m] offset 1h)) without (x) / on (y) group_left b * 1e-3 > bool 0.5"
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names(r#"{__name__="mse_proxy_routes", mode="terminate"}"#),
        ["mse_proxy_routes"]
    );
    assert_eq!(
        series_names(
            r#"label_values(mse_proxy_connections_total{instance=~"$instance"}, route)"#,
            true
        )
        .unwrap(),
        ["mse_proxy_connections_total"]
    );
    assert_eq!(
        series_names("label_values(route)", true).unwrap(),
        Vec::<String>::new()
    );
    assert!(series_names("label_values(mse_proxy_routes, mode)", false).is_err());
    assert!(series_names("not_a_function(mse_proxy_routes)", false).is_err());
    assert!(series_names(r#"{__name__=~"mse_proxy_.*"}"#, false).is_err());
    assert!(series_names("sum(mse_proxy_routes", false).is_err());
}

#[test]
fn checker_rejects_what_the_proxy_does_not_export() {
    let exported = exported();
    for ok in [
        "mse_proxy_connections_total",
        "mse_proxy_connections_open",
        "mse_proxy_process_open_fds",
        "mse_proxy_client_hello_duration_seconds_bucket",
        "mse_proxy_connection_duration_seconds_sum",
        "mse_proxy_tls_handshake_duration_seconds_count",
    ] {
        assert_eq!(exported.check(ok), Ok(()), "{ok}");
    }
    for bad in [
        "up",
        "node_cpu_seconds_total",
        "mse_proxy_connections",
        "mse_proxy_connection_duration_seconds",
        "mse_proxy_connections_total_bucket",
        "mse_proxy_bytes_count",
    ] {
        assert!(exported.check(bad).is_err(), "{bad} passed");
    }
}
