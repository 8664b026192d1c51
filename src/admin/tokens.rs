//! The admin API's bearer tokens: read from the token files the config
//! names (one file per role), several valid at once so that a token can be
//! rotated without downtime (add the new one, move the clients, remove the
//! old one), re-read when the files change and on SIGHUP.
//!
//! A token file holds one token per line, optionally named for the audit
//! log as `name:token` (names: letters, digits, `.`, `_`, `-`); blank lines
//! and lines starting with `#` are skipped. A token is 16 to 512 characters
//! of RFC 6750's `b64token` alphabet (so it never holds a `:`), what
//! `openssl rand -hex 32` or `-base64 32` prints. An unnamed token is
//! called `FILE#LINE` (`admin-token#1`), never by its value.
//!
//! A file that is empty, holds a malformed line, or is accessible to its
//! group or others (a secret anyone on the host can read is no secret) is
//! refused with the file named: at `check` and at start it stops the proxy;
//! on a reload the tokens in service stay, and the refusal is logged and
//! counted (`mse_proxy_admin_token_reloads_total{result="error"}`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use prometheus::IntCounterVec;
use tokio::sync::mpsc;

use crate::config::admin::TokenFile;
use crate::config::{AdminConfig, ConfigErrors, Role, TokenSource};
use crate::file_watch::{change, parent_dir};

/// A token file past this many tokens is a mistake, and every request
/// compares its token against all of them.
const MAX_TOKENS: usize = 1000;
const TOKEN_LEN: (usize, usize) = (16, 512);
const NAME_LEN: usize = 64;

/// One valid token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// What the audit log calls whoever holds it.
    pub name: String,
    pub role: Role,
    token: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        write!(f, "Credential({}, {})", self.name, self.role.as_str())
    }
}

/// Every token valid now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TokenSet {
    tokens: Vec<Credential>,
}

impl TokenSet {
    /// The credential `given` is, compared in constant time against every
    /// token (no early exit, so timing tells nothing about which matched).
    pub fn find(&self, given: &[u8]) -> Option<&Credential> {
        let mut found = None;
        for c in &self.tokens {
            if aws_lc_rs::constant_time::verify_slices_are_equal(given, &c.token).is_ok() {
                found = Some(c);
            }
        }
        found
    }

    /// A set from `(name, role, token)`, for tests of what uses it.
    #[cfg(test)]
    pub(crate) fn of(list: &[(&str, Role, &str)]) -> TokenSet {
        TokenSet {
            tokens: list
                .iter()
                .map(|(name, role, token)| Credential {
                    name: name.to_string(),
                    role: *role,
                    token: token.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    /// Whether any token may do what `role` needs.
    /// The first token with `role` exactly, for a client of this same
    /// instance's API (`mse-proxy state import` into etcd writes through it).
    pub fn first_token(&self, role: Role) -> Option<String> {
        self.tokens
            .iter()
            .find(|c| c.role == role)
            .map(|c| String::from_utf8_lossy(&c.token).into_owned())
    }

    pub fn grants(&self, role: Role) -> bool {
        self.tokens.iter().any(|c| c.role >= role)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Parses one token file's text: `(name, token)` pairs, unnamed ones
/// called `file#line`. Every problem names its line.
pub fn parse(file_name: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = match line.split_once(':') {
            Some((n, t)) if is_name(n.trim()) => (n.trim().to_string(), t.trim()),
            None => (format!("{file_name}#{line_no}"), line),
            Some(_) => {
            return Err(format!(
                "line {line_no}: the name before `:` must be 1 to {NAME_LEN} letters, digits, `.`, `_`, `-`"
                ))
            }
        };
        if token.len() < TOKEN_LEN.0 || token.len() > TOKEN_LEN.1 {
            return Err(format!(
                "line {line_no}: a token must be {} to {} characters (it has {})",
                TOKEN_LEN.0,
                TOKEN_LEN.1,
                token.len()
            ));
        }
        if !is_b64token(token) {
            return Err(format!(
                "line {line_no}: a token may hold only letters, digits and `-._~+/` (then `=`)"
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("line {line_no}: the name `{name}` is used twice"));
        }
        if out.iter().any(|(_, t)| t == token) {
            return Err(format!("line {line_no}: the same token is listed twice"));
        }
        if out.len() == MAX_TOKENS {
            return Err(format!("more than {MAX_TOKENS} tokens"));
        }
        out.push((name, token.to_string()));
    }
    if out.is_empty() {
        return Err("holds no token".into());
    }
    Ok(out)
}

fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_LEN
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Reads one token file: a regular file of at most 1 MiB, accessible to
/// its owner only. The error is one sentence naming the file.
fn read_file(f: &TokenFile) -> Result<Vec<Credential>, String> {
    let shown = f.path.display();
    let meta = std::fs::metadata(&f.path).map_err(|e| format!("`{shown}`: cannot read: {e}"))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "`{shown}`: accessible to its group or others (mode {:04o}); a token file must be \
             the owner's only (chmod 600)",
            mode & 0o7777
        ));
    }
    let bytes = crate::tls::pem_file::read(&f.path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("`{shown}`: not UTF-8 text"))?;
    let file_name = f
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pairs = parse(&file_name, text).map_err(|e| format!("`{shown}`: {e}"))?;
    Ok(pairs
        .into_iter()
        .map(|(name, token)| Credential {
            name,
            role: f.role,
            token: token.into_bytes(),
        })
        .collect())
}

/// Reads every token the config names. Each problem is `config: field:
/// reason`, the reason naming the token file.
pub fn load(config_file: &Path, cfg: &AdminConfig) -> Result<TokenSet, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let mut tokens: Vec<Credential> = Vec::new();
    for f in &cfg.token_files {
        match read_file(f) {
            Ok(list) => tokens.extend(list),
            Err(e) => errs.push(config_file, f.field, e),
        }
    }
    if let TokenSource::Env(var) = &cfg.token {
        match std::env::var(var) {
            Ok(v) => match parse("token_env", &v) {
                Ok(pairs) => tokens.extend(pairs.into_iter().map(|(_, t)| Credential {
                    name: "token_env".into(),
                    role: Role::Write,
                    token: t.into_bytes(),
                })),
                Err(e) => errs.push(config_file, "admin.token_env", format!("{var}: {e}")),
            },
            Err(_) => errs.push(
                config_file,
                "admin.token_env",
                format!("environment variable {var} is not set"),
            ),
        }
    }
    // A token listed for two roles would make its role depend on file order.
    for (i, a) in tokens.iter().enumerate() {
        if let Some(b) = tokens[..i].iter().find(|b| b.token == a.token) {
            errs.push(
                config_file,
                "admin",
                format!(
                    "the token `{}` ({}) is also `{}` ({}): one token, one role",
                    a.name,
                    a.role.as_str(),
                    b.name,
                    b.role.as_str()
                ),
            );
        }
    }
    errs.into_result(TokenSet { tokens })
}

/// The tokens in service, swapped whole on a reload.
pub struct Tokens {
    current: ArcSwap<TokenSet>,
    config_file: std::path::PathBuf,
    cfg: AdminConfig,
    reloads: IntCounterVec,
    /// The last refusal said, so that a directory that keeps changing
    /// (a log file beside the tokens) does not repeat it at every debounce.
    /// Never held across an `.await`.
    last_refusal: std::sync::Mutex<Option<String>>,
}

impl Tokens {
    pub fn new(
        config_file: &Path,
        cfg: AdminConfig,
        first: TokenSet,
        reloads: IntCounterVec,
    ) -> Arc<Tokens> {
        for r in ["ok", "error"] {
            reloads.with_label_values(&[r]);
        }
        Arc::new(Tokens {
            current: ArcSwap::from_pointee(first),
            config_file: config_file.to_path_buf(),
            cfg,
            reloads,
            last_refusal: std::sync::Mutex::new(None),
        })
    }

    pub fn load(&self) -> Arc<TokenSet> {
        self.current.load_full()
    }

    /// Re-reads every token file (on a blocking thread: a file on a slow
    /// mount must not hold an async worker). All or nothing: if one file is
    /// refused, every token in service stays.
    pub async fn reload(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let read = tokio::task::spawn_blocking(move || load(&this.config_file, &this.cfg)).await;
        let refusal = match read {
            Ok(Ok(set)) => {
                self.set_refusal(None);
                if *self.current.load_full() == set {
                    tracing::debug!("admin token files re-read: unchanged");
                    return;
                }
                let n = set.len();
                // In service before it is said to be.
                self.current.store(Arc::new(set));
                tracing::info!(tokens = n, "admin tokens re-read");
                self.reloads.with_label_values(&["ok"]).inc();
                return;
            }
            Ok(Err(errs)) => errs.to_string(),
            Err(e) => format!("reading the admin token files failed: {e}"),
        };
        if self.set_refusal(Some(refusal.clone())) {
            tracing::error!(error = %refusal, "admin token files refused; the tokens in service stay");
            self.reloads.with_label_values(&["error"]).inc();
        }
    }

    /// Records the refusal now in force; true if it differs from the last.
    fn set_refusal(&self, now: Option<String>) -> bool {
        let mut last = self.last_refusal.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *last != now;
        *last = now;
        changed
    }

    /// Whether any token file is configured (and so worth watching).
    pub fn has_files(&self) -> bool {
        !self.cfg.token_files.is_empty()
    }
}

/// Keeps the watch alive while held; dropping it ends the task.
pub struct TokenWatch {
    _watcher: RecommendedWatcher,
}

/// Watches the token files' directories (a rename over a file, a secret
/// volume's symlink swap, a write in place) and re-reads them all once
/// things have been quiet for `debounce`.
pub fn watch(tokens: Arc<Tokens>, debounce: std::time::Duration) -> notify::Result<TokenWatch> {
    let mut dirs = Vec::new();
    let mut names = Vec::new();
    for f in &tokens.cfg.token_files {
        let d = parent_dir(&f.path);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
        names.extend(f.path.file_name().map(|n| n.to_os_string()));
    }
    // A token file itself, or a secret volume's `..data` symlink and its
    // `..2026_12_01...` version directories: not every file beside them.
    let ours = move |p: &Path| {
        p.file_name()
            .is_some_and(|n| names.iter().any(|m| m == n) || n.to_string_lossy().starts_with(".."))
    };
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if change(&ev.kind).is_some() && ev.paths.iter().any(|p| ours(p)) => {
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "admin token watch error"),
        })?;
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until no change came for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tokens.reload().await;
        }
    });
    Ok(TokenWatch { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_names_and_comments() {
        let p = parse(
            "tok",
            "# rotated 2026-12-01\n\nold:aaaaaaaaaaaaaaaaaaaa\n  bbbbbbbbbbbbbbbbbbbb==  \n",
        )
        .unwrap();
        assert_eq!(
            p,
            [
                ("old".to_string(), "aaaaaaaaaaaaaaaaaaaa".to_string()),
                ("tok#4".to_string(), "bbbbbbbbbbbbbbbbbbbb==".to_string())
            ]
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        for (text, why) in [
            ("", "holds no token"),
            ("\n# only a comment\n", "holds no token"),
            ("short", "line 1: a token must be 16"),
            (
                "x:aaaaaaaaaaaaaaaa\nx:bbbbbbbbbbbbbbbb",
                "line 2: the name `x`",
            ),
            (
                "aaaaaaaaaaaaaaaa\naaaaaaaaaaaaaaaa",
                "line 2: the same token",
            ),
            ("a b:aaaaaaaaaaaaaaaa", "line 1: the name"),
            ("aaaaaaaa aaaaaaaaaaa", "line 1: a token may hold only"),
            ("aaaaaaaaaaaaaaaa\u{e9}", "line 1: a token may hold only"),
        ] {
            let e = parse("f", text).unwrap_err();
            assert!(e.starts_with(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn find_matches_only_a_whole_token() {
        let set = TokenSet {
            tokens: vec![
                Credential {
                    name: "r".into(),
                    role: Role::Read,
                    token: b"read-token-0123456789".to_vec(),
                },
                Credential {
                    name: "w".into(),
                    role: Role::Write,
                    token: b"write-token-0123456789".to_vec(),
                },
            ],
        };
        assert_eq!(set.find(b"write-token-0123456789").unwrap().name, "w");
        assert!(set.find(b"write-token-012345678").is_none());
        assert!(set.find(b"").is_none());
        assert!(set.grants(Role::Write) && set.grants(Role::Metrics));
        assert!(!TokenSet::default().grants(Role::Metrics));
    }
}
