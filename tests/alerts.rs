//! The alerting rules shipped beside the dashboard (`grafana/alerts.yml`):
//! promtool accepts them and passes their unit tests
//! (`grafana/alerts.test.yml`), which hold for every alert a case where it
//! fires and one where it must not; every metric they name is one a running
//! proxy exports, and every label value they match is one it exports; and
//! fed a running proxy's own metrics, they fire only what they should (the
//! etcd alert for the instance that lost etcd, nothing for one without it).
//! promtool (Debian package `prometheus`) is required: without it these
//! tests fail rather than skip.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use common::promql::{check_exprs, matchers, series_names, Exported};
use common::*;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts.yml");
const RULE_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts.test.yml");

/// Series the rules may name that are Prometheus's, not the proxy's.
const FOREIGN: &[&str] = &["up"];
/// Labels Prometheus gives every target; the proxy never exports them.
const TARGET_LABELS: &[&str] = &["job", "instance"];
/// The scrape job the rules expect (the scrape config of grafana/README.md).
const JOB: &str = "mse-proxy";
const SEVERITIES: &[&str] = &["critical", "warning", "info"];

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn promtool(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_tool("promtool", &args, true).await
}

// ---------------------------------------------------------------------------
// The rules file, read line by line

/// One alerting rule: its name, its expression, and its lines (for the
/// fields every alert must have).
#[derive(Debug)]
struct Rule {
    alert: String,
    expr: Option<String>,
    lines: String,
}

impl Rule {
    fn expr(&self) -> &str {
        self.expr
            .as_deref()
            .unwrap_or_else(|| panic!("alert {} has no expr", self.alert))
    }

    /// The value of a `key:` line of the rule (`for`, `severity`...).
    fn field(&self, key: &str) -> Option<&str> {
        self.lines.lines().find_map(|l| {
            l.trim_start()
                .strip_prefix(key)?
                .strip_prefix(':')
                .map(str::trim)
        })
    }
}

/// The alerting rules of `text`: `- alert:` items whose `expr:` is inline
/// (unquoted) or a `|` / `>` block. That is enough for the file this
/// repository writes, and promtool's own count of rules checks it.
fn rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        let indent = line.len() - t.len();
        assert!(
            !t.starts_with("- record:"),
            "recording rules are not read here"
        );
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push(Rule {
                alert: name.trim().to_string(),
                expr: None,
                lines: String::new(),
            });
        }
        if let Some(rule) = out.last_mut() {
            rule.lines.push_str(line);
            rule.lines.push('\n');
            if let Some(rest) = t.strip_prefix("expr:") {
                assert!(rule.expr.is_none(), "{}: two exprs", rule.alert);
                let rest = rest.trim();
                let expr = if rest.starts_with(['|', '>']) {
                    let mut e = String::new();
                    while let Some(next) = lines.get(i + 1) {
                        let nt = next.trim_start();
                        if !nt.is_empty() && next.len() - nt.len() <= indent {
                            break;
                        }
                        e.push_str(nt);
                        e.push('\n');
                        i += 1;
                    }
                    e
                } else {
                    assert!(
                        !rest.starts_with(['"', '\'']),
                        "{}: write the expr unquoted or as a block",
                        rule.alert
                    );
                    rest.to_string()
                };
                rule.expr = Some(expr);
            }
        }
        i += 1;
    }
    out
}

/// Every case of a promtool test file's `alert_rule_test`s: the alert, and
/// whether it is expected to fire (`exp_alerts:` with items) or not
/// (`exp_alerts: []`).
fn cases(text: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut out = Vec::new();
    let mut alert = None;
    for (i, l) in lines.iter().enumerate() {
        let l = l.strip_prefix("- ").unwrap_or(l);
        if l.starts_with("eval_time:") {
            alert = None;
        }
        if let Some(name) = l.strip_prefix("alertname:") {
            alert = Some(name.trim().to_string());
        }
        if let Some(rest) = l.strip_prefix("exp_alerts:") {
            let name = alert
                .take()
                .unwrap_or_else(|| panic!("line {}: exp_alerts before alertname", i + 1));
            let items = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("- exp_labels:"));
            out.push((name, rest.trim() != "[]" && items));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A running proxy's metrics

/// The samples of an exposition: series (name and labels, as exposed) and
/// value.
fn samples(text: &str) -> Vec<(&str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect()
}

/// The family name and labels of an exposed series.
fn parse_series(series: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, Vec::new());
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if label.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((label.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name, labels)
}

/// Every value each label takes in an exposition.
fn label_values(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (series, _) in samples(text) {
        for (l, v) in parse_series(series).1 {
            out.entry(l).or_default().insert(v);
        }
    }
    out
}

/// A proxy with what makes the rules' families show: a platform certificate
/// and a connection limit of its own.
fn proxy_with_certificate() -> (Live, PlatformCert) {
    let ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&ca.issue(&["*.apps.example.test"]).unwrap());
    let live = Live::start(
        &[],
        &format!("[limits]\nmax_connections = 1234\n{}", cert.toml()),
    );
    (live, cert)
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn promtool_accepts_the_rules() {
    let (ok, out) = promtool(&["check", "rules", RULES]).await;
    assert!(ok, "promtool check rules {RULES} failed:\n{out}");
    let found = rules(&read(RULES)).len();
    assert!(
        out.contains(&format!("SUCCESS: {found} rules found")),
        "promtool counts other rules than the {found} read here:\n{out}"
    );
}

#[tokio::test]
async fn the_rules_pass_their_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", RULE_TESTS]).await;
    assert!(ok, "promtool test rules {RULE_TESTS} failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_tested_firing_and_not_firing_and_says_what_to_do() {
    let rules = rules(&read(RULES));
    assert!(rules.len() >= 10, "only {} alerts read", rules.len());
    let cases = cases(&read(RULE_TESTS));
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "an alert name is used twice");
    let mut problems = String::new();
    for (alert, _) in &cases {
        if !names.contains(alert.as_str()) {
            // A misspelt name never fires: its "must not fire" case proves nothing.
            let _ = writeln!(problems, "{RULE_TESTS}: `{alert}` is no alert of {RULES}");
        }
    }
    for r in &rules {
        let a = &r.alert;
        for (fires, what) in [(true, "fires"), (false, "must not fire")] {
            if !cases.contains(&(a.clone(), fires)) {
                let _ = writeln!(problems, "{a}: no test case where it {what}");
            }
        }
        for key in ["for", "summary", "description"] {
            if r.field(key).is_none_or(str::is_empty) {
                let _ = writeln!(problems, "{a}: no `{key}`");
            }
        }
        match r.field("severity") {
            Some(s) if SEVERITIES.contains(&s) => {}
            s => {
                let _ = writeln!(problems, "{a}: severity {s:?}, not one of {SEVERITIES:?}");
            }
        }
    }
    assert!(problems.is_empty(), "{problems}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_name_is_exported_by_a_running_proxy() {
    let rules = rules(&read(RULES));
    let (live, _cert) = proxy_with_certificate();
    let text = live.scrape().await;
    let exported = Exported::new(live.server.shared.metrics.metric_names(), &text);
    let (problems, used) = check_exprs(
        &exported,
        FOREIGN,
        rules.iter().map(|r| (r.alert.as_str(), r.expr(), false)),
    );
    assert!(
        problems.is_empty(),
        "{RULES} uses metrics the proxy does not export:\n{problems}"
    );
    assert!(used.contains("mse_proxy_connections_max"), "{used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_label_value_the_rules_match_is_one_a_running_proxy_exports() {
    let rules = rules(&read(RULES));
    let (live, _cert) = proxy_with_certificate();
    let text = live.scrape().await;
    // The gauge the connection-limit alert divides by holds the config's limit.
    assert!(
        samples(&text).contains(&("mse_proxy_connections_max", 1234.0)),
        "{text}"
    );
    let exported = label_values(&text);
    let mut problems = String::new();
    let mut checked = 0;
    for r in &rules {
        let found = matchers(r.expr()).unwrap_or_else(|e| panic!("{}: {e}", r.alert));
        for (label, value) in found {
            if TARGET_LABELS.contains(&label.as_str()) {
                assert!(
                    label != "job" || value == JOB,
                    "{}: job {value}, not {JOB}",
                    r.alert
                );
                continue;
            }
            // `label!=""`: whether the label is there at all.
            if value.is_empty() {
                continue;
            }
            checked += 1;
            if !exported.get(&label).is_some_and(|v| v.contains(&value)) {
                let _ = writeln!(
                    problems,
                    "{}: {label}=\"{value}\" is not exported (the proxy's {label} values: {:?})",
                    r.alert,
                    exported.get(&label)
                );
            }
        }
    }
    assert!(problems.is_empty(), "{problems}");
    // outcomes, results and sources of the error, upstream and reload alerts.
    assert!(checked > 20, "only {checked} label values checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_running_proxys_metrics_only_the_etcd_alert_fires_and_only_where_etcd_is_lost() {
    let rules = rules(&read(RULES));
    // No [etcd]; and [etcd] at a loopback port where nothing listens.
    let plain = Live::start(&[], "");
    let endpoint = format!("http://{}", closed_port().await);
    let lost = Live::start(
        &[],
        &format!(
            "[etcd]\nendpoints = [{endpoint:?}]\ndial_timeout = \"200ms\"\n\
             request_timeout = \"500ms\"\nbackoff_max = \"200ms\"\n"
        ),
    );
    let retried = eventually_async(Duration::from_secs(10), || async {
        samples(&lost.scrape().await)
            .iter()
            .any(|&(s, v)| s == "mse_proxy_etcd_reconnects_total" && v > 0.0)
    })
    .await;
    assert!(retried, "the instance never tried etcd again");

    // Both expositions, as Prometheus would have scraped them for 30
    // minutes: every series the rules name, with the target's labels.
    let used: BTreeSet<String> = rules
        .iter()
        .flat_map(|r| series_names(r.expr(), false).unwrap())
        .collect();
    let mut series = String::new();
    for (instance, live) in [("plain", &plain), ("lost", &lost)] {
        let target = format!("instance=\"{instance}\", job=\"{JOB}\"");
        let _ = writeln!(
            series,
            "      - series: 'up{{{target}}}'\n        values: '1x30'"
        );
        let text = live.scrape().await;
        for (s, v) in samples(&text) {
            let (name, _) = parse_series(s);
            if !used.contains(name) || !v.is_finite() {
                continue;
            }
            let labelled = match s.strip_suffix('}') {
                Some(s) => format!("{s}, {target}}}"),
                None => format!("{s}{{{target}}}"),
            };
            let _ = writeln!(
                series,
                "      - series: '{}'\n        values: '{v}x30'",
                labelled.replace('\'', "''")
            );
        }
    }
    let etcd = rules
        .iter()
        .find(|r| r.alert == "MseProxyEtcdDisconnected")
        .expect("the etcd alert");
    let severity = etcd.field("severity").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let test_file = dir.path().join("running.test.yml");
    std::fs::write(
        &test_file,
        format!(
            "rule_files:\n  - {RULES:?}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    \
             input_series:\n{series}    promql_expr_test:\n      - expr: ALERTS\n        \
             eval_time: 30m\n        exp_samples:\n          - labels: 'ALERTS{{alertname=\"{}\", \
             alertstate=\"firing\", instance=\"lost\", job=\"{JOB}\", severity=\"{severity}\"}}'\n            \
             value: 1\n",
            etcd.alert
        ),
    )
    .unwrap();
    let (ok, out) = promtool(&["test", "rules", test_file.to_str().unwrap()]).await;
    assert!(
        ok,
        "on two running proxies' metrics, the rules fired otherwise than expected:\n{out}\n\
         input:\n{series}"
    );
}

// The readers themselves: they must see what promtool sees.

#[test]
fn rules_and_cases_are_read_with_their_exprs_and_expectations() {
    let text =
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        \
                for: 1m\n        labels:\n          severity: info\n      - alert: B\n        \
                expr: |\n          sum(x)\n            > 1\n        for: 2m\n";
    let r = rules(text);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].alert.as_str(), r[0].expr()), ("A", "up == 0"));
    assert_eq!(r[0].field("severity"), Some("info"));
    assert_eq!((r[1].alert.as_str(), r[1].expr()), ("B", "sum(x)\n> 1\n"));
    assert_eq!(r[1].field("for"), Some("2m"));

    let tests = "    alert_rule_test:\n      - eval_time: 1m\n        alertname: A\n        \
                 exp_alerts: []\n      - eval_time: 5m\n        alertname: A\n        exp_alerts:\n          \
                 - exp_labels:\n              severity: info\n      - eval_time: 6m\n        \
                 alertname: B\n        exp_alerts:\n";
    assert_eq!(
        cases(tests),
        [
            ("A".to_string(), false),
            ("A".to_string(), true),
            ("B".to_string(), false)
        ]
    );
}

#[test]
fn matchers_split_alternatives_and_refuse_patterns() {
    assert_eq!(
        matchers(r#"sum(rate(m{outcome=~"a|b_c", route!="x", app!=""}[5m])) / m{job="j"}"#)
            .unwrap(),
        [
            ("outcome", "a"),
            ("outcome", "b_c"),
            ("route", "x"),
            ("app", ""),
            ("job", "j")
        ]
        .map(|(l, v)| (l.to_string(), v.to_string()))
    );
    assert!(matchers(r#"m{outcome=~"upstream_.*"}"#).is_err());
    assert_eq!(
        parse_series(r#"m{a="x\"y",b="(none)"}"#),
        (
            "m",
            vec![
                ("a".to_string(), "x\"y".to_string()),
                ("b".to_string(), "(none)".to_string())
            ]
        )
    );
}
