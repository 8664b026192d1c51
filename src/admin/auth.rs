//! Who may do what on the admin API, decided from the request's head alone.
//!
//! [`guard`] is a middleware around every route: it runs before any
//! handler, so before any body extractor, and answers 401 or 403 without
//! reading one byte of the body (a client that declares 100 MB and sends
//! none of it is answered at once, and the connection is closed since its
//! body was not read).
//!
//! - `/healthz`, `/readyz`, `/readyz/writes`: open (load balancers,
//!   orchestrators' probes).
//! - `/metrics`: open, or a `metrics` credential or better when
//!   `admin.metrics_token_file` is set.
//! - any other `GET`/`HEAD`: `read` or better.
//! - everything else (`PUT`, `DELETE`, `POST`): `write`.
//!
//! A credential is a bearer token (`Authorization: Bearer ...`, the scheme
//! matched case-insensitively as RFC 9110 says) or, over TLS, a client
//! certificate whose subject CN `admin.tls.client_roles` maps to a role. A
//! request carrying a token is judged by the token alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{header, HeaderMap, Method, StatusCode};

use super::tokens::Tokens;
use super::ApiError;
use crate::config::Role;

/// What the admin API knows of its credentials.
pub struct Auth {
    pub tokens: Arc<Tokens>,
    /// `/metrics` needs a credential.
    pub metrics_auth: bool,
    /// Client certificate subject CN → role.
    pub client_roles: BTreeMap<String, Role>,
}

/// The verified client certificate of the connection a request came on,
/// put in the request's extensions by the TLS listener.
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// The subject, as text (`CN=orchestrator, O=platform`).
    pub subject: String,
    pub common_name: Option<String>,
}

/// Who made a request, for handlers and the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `token:NAME`, `cert:SUBJECT`, or `-` (no credential needed or given).
    pub who: String,
}

/// The role a request needs; `None`: open.
pub fn required(method: &Method, path: &str, metrics_auth: bool) -> Option<Role> {
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/healthz" | "/readyz" | "/readyz/writes" if read => None,
        "/metrics" if read => metrics_auth.then_some(Role::Metrics),
        _ if read => Some(Role::Read),
        _ => Some(Role::Write),
    }
}

/// The token of an `Authorization: Bearer` header: `None` without the
/// header, `Some(Err)` for another scheme or a malformed value.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&[u8], ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = match value.to_str() {
        Ok(t) => t.trim(),
        Err(_) => return Some(Err(())),
    };
    let Some((scheme, token)) = text.split_once(' ') else {
        return Some(Err(()));
    };
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Some(Err(()));
    }
    Some(Ok(token.as_bytes()))
}

impl Auth {
    /// Whether any credential (token or certificate mapping) may do `role`.
    fn configured(&self, role: Role) -> bool {
        self.tokens.load().grants(role) || self.client_roles.values().any(|r| *r >= role)
    }

    /// Decides a request that needs `role`: who it is, and whether it may.
    pub fn decide(
        &self,
        role: Role,
        headers: &HeaderMap,
        peer: Option<&PeerCert>,
    ) -> (Identity, Result<(), ApiError>) {
        let (who, result) = self.judge(role, headers, peer);
        (Identity { who }, result)
    }

    /// [`Auth::decide`]'s work: `who` is named even when refused (a known
    /// token's name, a certificate's subject), for the audit line.
    fn judge(
        &self,
        role: Role,
        headers: &HeaderMap,
        peer: Option<&PeerCert>,
    ) -> (String, Result<(), ApiError>) {
        let disabled = || {
            let what = if role == Role::Write {
                "writes"
            } else {
                "reads"
            };
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{what} are disabled: no admin token is configured for them"),
            )
        };
        match bearer(headers) {
            Some(Ok(given)) => {
                let set = self.tokens.load();
                match set.find(given) {
                    Some(c) if c.role >= role => (format!("token:{}", c.name), Ok(())),
                    Some(c) => (
                        format!("token:{}", c.name),
                        Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            format!(
                                "the token `{}` may {} only; this needs a {} token",
                                c.name,
                                c.role.as_str(),
                                role.as_str()
                            ),
                        )),
                    ),
                    None if !self.configured(role) => ("token:?".into(), Err(disabled())),
                    None => (
                        "token:?".into(),
                        Err(ApiError::unauthorized(
                            "unknown token",
                            r#"Bearer error="invalid_token""#,
                        )),
                    ),
                }
            }
            Some(Err(())) => (
                "-".into(),
                Err(ApiError::unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                    "Bearer",
                )),
            ),
            None => {
                if let Some(p) = peer {
                    let who = format!("cert:{}", p.subject);
                    match p
                        .common_name
                        .as_ref()
                        .and_then(|cn| self.client_roles.get(cn))
                    {
                        Some(r) if *r >= role => return (who, Ok(())),
                        Some(r) => {
                            let e = ApiError::new(
                                StatusCode::FORBIDDEN,
                                format!(
                                    "the client certificate `{}` may {} only",
                                    p.subject,
                                    r.as_str()
                                ),
                            );
                            return (who, Err(e));
                        }
                        None if !self.configured(role) => return (who, Err(disabled())),
                        None => {
                            let e = ApiError::unauthorized("a bearer token is required", "Bearer");
                            return (who, Err(e));
                        }
                    }
                }
                if !self.configured(role) {
                    return ("-".into(), Err(disabled()));
                }
                (
                    "-".into(),
                    Err(ApiError::unauthorized(
                        "a bearer token is required",
                        "Bearer",
                    )),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_whole() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer(&headers(v)), Some(Ok(&b"abc"[..])), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer(&headers(v)), Some(Err(())), "{v}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    /// An `Auth` with a read token `reader` and certificate roles.
    fn auth(tokens: &[(&str, Role, &str)], certs: &[(&str, Role)]) -> Auth {
        let config = crate::config::Config::from_toml(
            std::path::Path::new("t.toml"),
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[admin]\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let reloads =
            prometheus::IntCounterVec::new(prometheus::Opts::new("r", "r"), &["result"]).unwrap();
        Auth {
            tokens: Tokens::new(
                std::path::Path::new("t.toml"),
                config.admin.unwrap(),
                super::super::tokens::TokenSet::of(tokens),
                reloads,
            ),
            metrics_auth: false,
            client_roles: certs.iter().map(|(c, r)| (c.to_string(), *r)).collect(),
        }
    }

    fn peer(cn: &str) -> PeerCert {
        PeerCert {
            subject: format!("CN={cn}"),
            common_name: Some(cn.into()),
        }
    }

    fn status(r: &Result<(), ApiError>) -> u16 {
        r.as_ref().map_or_else(|e| e.status.as_u16(), |()| 200)
    }

    #[test]
    fn who_is_named_even_when_refused() {
        let a = auth(
            &[("reader", Role::Read, "read-token-0123456789")],
            &[("orchestrator", Role::Write), ("prometheus", Role::Metrics)],
        );
        let none = HeaderMap::new();
        let (id, r) = a.decide(Role::Write, &none, Some(&peer("orchestrator")));
        assert_eq!((id.who.as_str(), status(&r)), ("cert:CN=orchestrator", 200));
        let (id, r) = a.decide(Role::Read, &none, Some(&peer("prometheus")));
        assert_eq!((id.who.as_str(), status(&r)), ("cert:CN=prometheus", 403));
        let (id, r) = a.decide(Role::Read, &none, Some(&peer("stranger")));
        assert_eq!((id.who.as_str(), status(&r)), ("cert:CN=stranger", 401));
        // A token decides alone, even beside a certificate that could write.
        let h = headers("Bearer read-token-0123456789");
        let (id, r) = a.decide(Role::Write, &h, Some(&peer("orchestrator")));
        assert_eq!((id.who.as_str(), status(&r)), ("token:reader", 403));
        let (id, r) = a.decide(Role::Read, &headers("Basic eDp5"), None);
        assert_eq!((id.who.as_str(), status(&r)), ("-", 401));
        let (id, r) = a.decide(Role::Read, &headers("Bearer nope-nope-nope-nope"), None);
        assert_eq!((id.who.as_str(), status(&r)), ("token:?", 401));
    }

    #[test]
    fn nothing_configured_for_a_role_is_forbidden_not_open() {
        let a = auth(&[("reader", Role::Read, "read-token-0123456789")], &[]);
        let (_, r) = a.decide(Role::Write, &HeaderMap::new(), None);
        assert_eq!(status(&r), 403);
        let (_, r) = a.decide(Role::Read, &HeaderMap::new(), None);
        assert_eq!(status(&r), 401);
        let (_, r) = auth(&[], &[]).decide(Role::Metrics, &HeaderMap::new(), None);
        assert_eq!(status(&r), 403);
    }

    #[test]
    fn roles_by_method_and_path() {
        let get = Method::GET;
        assert_eq!(required(&get, "/healthz", true), None);
        assert_eq!(required(&get, "/readyz/writes", true), None);
        assert_eq!(required(&get, "/metrics", false), None);
        assert_eq!(required(&get, "/metrics", true), Some(Role::Metrics));
        assert_eq!(required(&get, "/routes", false), Some(Role::Read));
        assert_eq!(required(&get, "/nowhere", false), Some(Role::Read));
        assert_eq!(
            required(&Method::PUT, "/routes/a", false),
            Some(Role::Write)
        );
        assert_eq!(
            required(&Method::POST, "/healthz", false),
            Some(Role::Write)
        );
        assert_eq!(
            required(&Method::DELETE, "/apps/p/n", false),
            Some(Role::Write)
        );
    }
}
