//! `mse-proxy state import` with `[etcd]`: moving a state (a single
//! instance's export, say) into etcd. Each route and app is written
//! through a running instance's admin API, so through the very writer
//! the API uses (`routing/sources/etcd/write.rs`: the instance's checks,
//! then one etcd transaction claiming its hosts, under a lease to its
//! expiry). Not offline and not in one etcd transaction: the checks need
//! a live reconciler, and etcd caps a transaction's operations (128 by
//! default, `--max-txn-ops`), far fewer than a state's keys and claims.
//!
//! So all-or-nothing is kept another way: nothing is written unless every
//! route passes the schema check here and no imported name or app key is
//! in use in etcd yet (an import adds, never overwrites, so undoing it
//! never deletes what others wrote); then each entry is written in turn,
//! and if one is refused, those already written are deleted again, and
//! the first refusal is reported by index and field.

use std::io::Write;
use std::path::Path;

use reqwest::{Client, StatusCode, Url};
use serde_json::Value;

use super::failure::{Failure, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::routes;
use crate::config::{Config, ConfigError};
use crate::state::export::Export;

/// Where the admin API is: `--apply`, else `[admin] address` (an
/// unspecified address, `0.0.0.0`, reached on loopback).
pub fn admin_url(config: &Config, apply: Option<&str>) -> Result<Url, Failure> {
    let text = match (apply, &config.admin) {
        (Some(u), _) => u.to_string(),
        (None, Some(a)) => {
            let mut addr = a.address;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
        (None, None) => {
            return Err(Failure(
                EXIT_INVALID,
                format!(
                    "{}: has [etcd] but no [admin]: give the admin API of a running instance with --apply URL",
                    config.source.display()
                ),
            ))
        }
    };
    Url::parse(&text).map_err(|e| Failure(EXIT_INVALID, format!("--apply `{text}`: {e}")))
}

struct Api {
    client: Client,
    base: Url,
    token: String,
}

impl Api {
    fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty().extend(segments);
        }
        u
    }

    async fn exists(&self, segments: &[&str]) -> Result<bool, Failure> {
        let url = self.url(segments);
        let r = self
            .client
            .get(url.clone())
            // Reads need a token too; the write token reads.
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Failure(EXIT_RUNTIME, format!("GET {url}: {e}")))?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(Failure(EXIT_RUNTIME, format!("GET {url}: {s}"))),
        }
    }

    /// A PUT; `Err` holds the API's refusal in words.
    async fn put(&self, segments: &[&str], body: &impl serde::Serialize) -> Result<(), String> {
        let url = self.url(segments);
        let r = self
            .client
            .put(url.clone())
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("PUT {url}: {e}"))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let v: Value = r.json().await.unwrap_or_default();
        Err(refusal(status, &v))
    }

    async fn delete(&self, segments: &[&str]) -> Result<(), String> {
        let url = self.url(segments);
        let r = self
            .client
            .delete(url.clone())
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("DELETE {url}: {e}"))?;
        match r.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(format!("DELETE {url}: {s}")),
        }
    }
}

/// The API's error body in one line: its status, message, and the first
/// violation or detail (field: message).
fn refusal(status: StatusCode, v: &Value) -> String {
    let mut out = format!("{status}: {}", v["error"].as_str().unwrap_or("refused"));
    if let Some(first) = v["violations"].as_array().and_then(|a| a.first()) {
        out.push_str(&format!(
            ": {}: {}",
            first["field"].as_str().unwrap_or_default(),
            first["message"].as_str().unwrap_or_default()
        ));
    } else if let Some(first) = v["details"].as_array().and_then(|a| a.first()) {
        out.push_str(&format!(": {}", first.as_str().unwrap_or_default()));
    }
    out
}

/// What was written, to undo.
enum Written {
    Route(String),
    App(String, String),
}

pub fn import(
    config: &Config,
    base: Url,
    import: Export,
    input: &Path,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let token = match &config.admin {
        Some(a) => crate::admin::tokens::load(&config.source, a)
            .map_err(|e| Failure(EXIT_INVALID, e.to_string()))?
            .first_token(crate::config::Role::Write),
        None => None,
    }
    .ok_or_else(|| {
        Failure(
            EXIT_INVALID,
            format!(
                "{}: no admin token configured ([admin] token_file or token_env): the writes need it",
                config.source.display()
            ),
        )
    })?;
    // The schema check of every route before anything is sent (the same
    // validator as `PUT /routes`; the instance checks the rest).
    for (i, spec) in import.routes.iter().enumerate() {
        routes::validate_one(input, &format!("routes[{i}]"), spec, &config.control_limits)
            .map_err(|e| Failure(EXIT_INVALID, e.to_string()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(EXIT_RUNTIME, format!("cannot start a runtime: {e}")))?;
    let api = Api {
        client: Client::new(),
        base,
        token,
    };
    rt.block_on(async {
        let at = |field: String, message: String| {
            Failure(
                EXIT_INVALID,
                ConfigError::new(input, field, message).to_string(),
            )
        };
        for (i, spec) in import.routes.iter().enumerate() {
            if api.exists(&["routes", &spec.name]).await? {
                return Err(at(
                    format!("routes[{i}].name"),
                    format!("`{}` is already served there; an import into etcd only adds (delete it through the API first)", spec.name),
                ));
            }
        }
        for (i, a) in import.apps.iter().enumerate() {
            if api.exists(&["apps", &a.project, &a.name]).await? {
                return Err(at(
                    format!("apps[{i}]"),
                    format!("app `{}/{}` is already registered there; an import into etcd only adds", a.project, a.name),
                ));
            }
        }
        let mut written = Vec::new();
        let mut failed = None;
        for (i, spec) in import.routes.iter().enumerate() {
            match api.put(&["routes", &spec.name], spec).await {
                Ok(()) => written.push(Written::Route(spec.name.clone())),
                Err(e) => {
                    failed = Some((format!("routes[{i}]"), e));
                    break;
                }
            }
        }
        if failed.is_none() {
            for (i, a) in import.apps.iter().enumerate() {
                // The record as stored, `deployed_at` included: the clock
                // goes on from where it was.
                match api.put(&["apps", &a.project, &a.name], &a.record).await {
                    Ok(()) => written.push(Written::App(a.project.clone(), a.name.clone())),
                    Err(e) => {
                        failed = Some((format!("apps[{i}]"), e));
                        break;
                    }
                }
            }
        }
        let Some((field, why)) = failed else {
            let _ = writeln!(
                err,
                "imported {} route(s) and {} app(s) into etcd through {}",
                import.routes.len(),
                import.apps.len(),
                api.base
            );
            return Ok(());
        };
        for w in written.iter().rev() {
            let undone = match w {
                Written::Route(n) => api.delete(&["routes", n]).await,
                Written::App(p, n) => api.delete(&["apps", p, n]).await,
            };
            if let Err(e) = undone {
                let _ = writeln!(err, "error: undoing the import: {e}");
            }
        }
        Err(at(field, why))
    })
}
