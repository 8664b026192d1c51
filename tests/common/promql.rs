//! PromQL as the dashboard and the alerting rules use it, against what the
//! proxy exports: a lexer just deep enough to tell metric names from
//! functions, labels and keywords, and the set of families a proxy exports
//! (histograms through their `_bucket`, `_sum` and `_count` series). Shared
//! so that `tests/dashboard.rs` and `tests/alerts.rs` check their queries
//! with one definition of "a metric the proxy exports".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

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

pub struct Exported {
    /// Every family name (`Metrics::metric_names`).
    names: BTreeSet<String>,
    /// The type of every family that shows in an exposition (`# TYPE` lines).
    types: BTreeMap<String, String>,
}

impl Exported {
    /// From the family names a proxy lists (`Metrics::metric_names`) and an
    /// exposition of it: the families with samples there show their type.
    pub fn new(names: &[String], exposition: &str) -> Self {
        let names: BTreeSet<String> = names.iter().cloned().collect();
        let types: BTreeMap<String, String> = exposition
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
    pub fn check(&self, series: &str) -> Result<(), String> {
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
pub fn series_names(expr: &str, variable_query: bool) -> Result<Vec<String>, String> {
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

/// Every series name of every expression, checked against `exported`.
/// `foreign` are names from outside the proxy that are allowed (Prometheus's
/// own `up`). Each item is where the expression is, its text, and whether it
/// is a Grafana template-variable query. Returns the problems, one a line
/// (empty when there is none), and every series name used.
pub fn check_exprs<'a>(
    exported: &Exported,
    foreign: &[&str],
    exprs: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
) -> (String, BTreeSet<String>) {
    let mut problems = String::new();
    let mut used = BTreeSet::new();
    for (at, text, variable_query) in exprs {
        match series_names(text, variable_query) {
            Ok(names) if names.is_empty() => {
                let _ = writeln!(problems, "{at}: `{text}` selects no metric");
            }
            Ok(names) => {
                for n in names {
                    if !foreign.contains(&n.as_str()) {
                        if let Err(why) = exported.check(&n) {
                            let _ = writeln!(problems, "{at}: `{text}`: {why}");
                        }
                    }
                    used.insert(n);
                }
            }
            Err(why) => {
                let _ = writeln!(problems, "{at}: `{text}`: cannot parse: {why}");
            }
        }
    }
    (problems, used)
}

/// Every label matcher of `expr` as (label, value): `label="v"`,
/// `label!="v"`, and each alternative of `label=~"a|b"` / `label!~"a|b"`,
/// which must be plain names (a pattern cannot be checked against the
/// values a proxy exports).
pub fn matchers(expr: &str) -> Result<Vec<(String, String)>, String> {
    let toks = lex(expr)?;
    let mut out = Vec::new();
    let mut in_braces = false;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => in_braces = true,
            Tok::Punct('}') => in_braces = false,
            Tok::Ident(label) if in_braces => {
                let (regex, value) = match (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3)) {
                    (Some(Tok::Punct('=')), Some(Tok::Str(v)), _) => (false, v),
                    (Some(Tok::Punct('!')), Some(Tok::Punct('=')), Some(Tok::Str(v))) => (false, v),
                    (Some(Tok::Punct('=' | '!')), Some(Tok::Punct('~')), Some(Tok::Str(v))) => {
                        (true, v)
                    }
                    _ => return Err(format!("cannot read the `{label}` matcher")),
                };
                if !regex {
                    out.push((label.clone(), value.clone()));
                    continue;
                }
                for alt in value.split('|') {
                    if alt.is_empty()
                        || !alt
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!(
                            "`{label}=~\"{value}\"`: `{alt}` is a pattern, not a name"
                        ));
                    }
                    out.push((label.clone(), alt.to_string()));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}
