//! The Grafana dashboard (`grafana/dashboard.json`) against what the proxy
//! really exports: every PromQL expression in it (panel targets, annotations,
//! template variable queries) may name only metric families that
//! `Metrics::metric_names()` lists (histograms through their `_bucket`,
//! `_sum` and `_count` series), the panels an on-call engineer needs are
//! there, and every panel queries the `${datasource}` variable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use mse_proxy::metrics::Metrics;
use mse_proxy::routing::{Mode, Snapshot};
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

/// PromQL functions and aggregation operators (Prometheus 2.x and 3.x).
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count",
    "count_over_time",
    "count_values",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "end",
    "exp",
    "floor",
    "group",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "info",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "limit_ratio",
    "limitk",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "start",
    "stddev",
    "stddev_over_time",
    "stdvar",
    "stdvar_over_time",
    "sum",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "topk",
    "vector",
    "year",
];

/// Grafana's Prometheus template-variable functions (variable queries only).
const VARIABLE_FUNCTIONS: &[&str] = &["label_names", "label_values", "metrics", "query_result"];

/// Keywords and binary operators spelled as words.
const KEYWORDS: &[&str] = &[
    "and",
    "atan2",
    "bool",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "offset",
    "or",
    "unless",
];

/// Modifiers whose parenthesised list holds label names.
const LABEL_LIST_MODIFIERS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

// ---------------------------------------------------------------------------
// What the proxy exports

struct Exported {
    /// Every family name (`Metrics::metric_names`).
    names: BTreeSet<String>,
    /// The type of every family that shows in an exposition (`# TYPE` lines).
    types: BTreeMap<String, String>,
}

impl Exported {
    fn new() -> Self {
        let m = Metrics::new(true);
        let names: BTreeSet<String> = m.metric_names().iter().cloned().collect();
        // Give the labelled histograms a child so that they show (with their
        // type) in the exposition; hello time has no labels and always shows.
        let probe = m.for_route("probe", Mode::Terminate);
        probe.handshake(&m);
        let text = m.render(&Snapshot::default(), &mse_proxy::apps::Apps::default());
        let types: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.trim().to_string()))
            .collect();
        for n in types.keys() {
            assert!(
                names.contains(n),
                "the exposition has family `{n}` that metric_names() does not list"
            );
        }
        Exported { names, types }
    }

    fn is_type(&self, name: &str, wanted: &[&str]) -> bool {
        self.types
            .get(name)
            .is_some_and(|t| wanted.contains(&t.as_str()))
    }

    /// `Ok` if `series` is a series name the proxy exports.
    fn check(&self, series: &str) -> Result<(), String> {
        if !series.starts_with("mse_proxy_") {
            return Err(format!(
                "`{series}` is outside the `mse_proxy_` namespace (the proxy exports no such metric)"
            ));
        }
        if self.names.contains(series) {
            if self.is_type(series, &["histogram", "summary"]) {
                return Err(format!(
                    "`{series}` is a histogram: it has no series of its own, use `{series}_bucket`, `_sum` or `_count`"
                ));
            }
            return Ok(());
        }
        for (suffix, types) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = series.strip_suffix(suffix) {
                if self.is_type(base, types) {
                    return Ok(());
                }
                if self.names.contains(base) {
                    return Err(format!(
                        "`{series}`: `{base}` is exported but is not a {}",
                        types.join(" or ")
                    ));
                }
            }
        }
        Err(format!(
            "`{series}` is not a metric the proxy exports (known: {})",
            self.names.iter().cloned().collect::<Vec<_>>().join(", ")
        ))
    }
}

// ---------------------------------------------------------------------------
// A PromQL lexer just deep enough to tell metric names from everything else

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A number, or a duration outside brackets (`offset 5m`).
    Num,
    /// A Grafana variable (`$route`, `${datasource}`, `$__rate_interval`).
    Var,
    /// `[...]`: a range or subquery window.
    Window,
    Punct(char),
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '\'' | '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string at {i}")),
                        Some(&q) if q == c => break,
                        Some('\\') if c != '`' => {
                            s.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(&x) => {
                            s.push(x);
                            i += 1;
                        }
                    }
                }
                i += 1;
                toks.push(Tok::Str(s));
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                }
                toks.push(Tok::Var);
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                if i == chars.len() {
                    return Err("unterminated `[`".into());
                }
                i += 1;
                toks.push(Tok::Window);
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() {
                    let d = chars[i];
                    let exponent_sign = (d == '+' || d == '-')
                        && matches!(chars[i - 1], 'e' | 'E')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit);
                    if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                toks.push(Tok::Num);
            }
            c if ident_start(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            c => {
                toks.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    Ok(toks)
}

#[derive(Debug)]
enum Paren {
    /// `by (...)`, `on (...)`, ...: label names.
    Labels,
    /// A function call, with the index of the argument being read.
    Call(String, usize),
    Group,
}

/// Every series name an expression selects. `variable_query`: the expression
/// is a Grafana template-variable query (`label_values(...)` and friends).
fn series_names(expr: &str, variable_query: bool) -> Result<Vec<String>, String> {
    let toks = lex(expr)?;
    let mut out = Vec::new();
    let mut stack: Vec<Paren> = Vec::new();
    let mut in_braces = false;
    let mut i = 0;
    while i < toks.len() {
        let next = toks.get(i + 1);
        match &toks[i] {
            Tok::Punct('{') => in_braces = true,
            Tok::Punct('}') => in_braces = false,
            // A label matcher; `__name__="x"` selects the series `x`.
            Tok::Ident(label) if in_braces => match (label.as_str(), next, toks.get(i + 2)) {
                ("__name__", Some(Tok::Punct('=')), Some(Tok::Str(name))) => out.push(name.clone()),
                ("__name__", ..) => {
                    return Err(
                        "a `__name__` matcher other than `=\"name\"` cannot be checked".into(),
                    )
                }
                _ => {}
            },
            Tok::Ident(word) if next == Some(&Tok::Punct('(')) => {
                let w = word.as_str();
                let paren = if LABEL_LIST_MODIFIERS.contains(&w) {
                    Paren::Labels
                } else if FUNCTIONS.contains(&w)
                    || (variable_query && VARIABLE_FUNCTIONS.contains(&w))
                {
                    Paren::Call(word.clone(), 0)
                } else {
                    return Err(format!("`{word}(` is not a PromQL function"));
                };
                stack.push(paren);
                i += 2;
                continue;
            }
            Tok::Ident(word) => {
                let w = word.as_str();
                let is_label = match stack.last() {
                    Some(Paren::Labels) => true,
                    // label_values(metric, label) / label_values(label)
                    Some(Paren::Call(f, arg)) if f == "label_values" => {
                        *arg > 0 || !toks[i + 1..].contains(&Tok::Punct(','))
                    }
                    _ => false,
                };
                // `sum by (x) (...)`: an aggregation with its modifier first.
                let aggregation = FUNCTIONS.contains(&w)
                    && matches!(next, Some(Tok::Ident(m)) if m == "by" || m == "without");
                if !is_label && !aggregation && !KEYWORDS.contains(&w) {
                    out.push(word.clone());
                }
            }
            Tok::Punct('(') => stack.push(Paren::Group),
            Tok::Punct(')') => {
                stack.pop().ok_or("unbalanced `)`")?;
            }
            Tok::Punct(',') => {
                if let Some(Paren::Call(_, arg)) = stack.last_mut() {
                    *arg += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !stack.is_empty() || in_braces {
        return Err("unbalanced brackets".into());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The dashboard

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
    let exported = Exported::new();
    let exprs = exprs(&doc);
    assert!(exprs.len() > 20, "only {} expressions found", exprs.len());
    let mut problems = String::new();
    let mut used = BTreeSet::new();
    for e in &exprs {
        match series_names(&e.text, e.variable_query) {
            Ok(names) if names.is_empty() => {
                let _ = writeln!(problems, "{}: `{}` selects no metric", e.at, e.text);
            }
            Ok(names) => {
                for n in names {
                    if let Err(why) = exported.check(&n) {
                        let _ = writeln!(problems, "{}: `{}`: {why}", e.at, e.text);
                    }
                    used.insert(n);
                }
            }
            Err(why) => {
                let _ = writeln!(problems, "{}: `{}`: cannot parse: {why}", e.at, e.text);
            }
        }
    }
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
    let exported = Exported::new();
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
