//! Keeps one instance's routes in step with etcd: a full read of the
//! prefix, then a watch from the revision after it. A full read hands the
//! whole etcd route set to the reconciler, which applies it with the other
//! sources in one swap; a watch burst hands over only what it changed
//! (`crate::control::EtcdDelta`), and the whole set only when the
//! reconciler asks for it (a change that clashes, see
//! `routing/reconciler/etcd_delta.rs`) or a hand-over failed.
//!
//! Any loss (etcd down, the link cut, a watch that stops answering progress
//! requests, a watch cancelled because its revision was compacted) ends the
//! watch; after a back-off the follower reads the prefix again in full at
//! the current revision. A full read replaces the set, so a deletion made
//! while this instance was away cannot be missed even if the history that
//! recorded it has been compacted. Meanwhile the last table keeps serving,
//! and writes are refused (`connected` is false).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::etcd::{
    range_end, Client, EventType, KeyValue, RangeRequest, WatchCreateRequest, WatchResponse,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cache::EtcdCache;
use super::stored_app::{app_key, apps_prefix, StoredApp};
use super::{connect, routes_prefix, timed, EtcdStatus};
use crate::apps::{AppKey, AppPut};
use crate::config::etcd::EtcdConfig;
use crate::config::routes::{self, RouteSpec};
use crate::config::ConfigError;
use crate::config::ControlLimits;
use crate::control::{Control, EtcdDelta, Origin};
use crate::proxy::Shared;
use crate::routing::route::Route;

/// The etcd route set as this instance last read it.
#[derive(Default)]
struct Mirror {
    /// Valid routes by name.
    routes: BTreeMap<String, Route>,
    /// App records by key (admitted by the reconciler, not here).
    apps: BTreeMap<String, StoredApp>,
    /// Keys whose value is not a valid route or app record, with why.
    invalid: BTreeMap<String, String>,
    /// Routes and apps changed since the set was last handed over.
    changed_routes: BTreeSet<String>,
    changed_apps: BTreeSet<AppKey>,
    /// A change a delta cannot carry (an app record under a key that is
    /// not its own, or not valid), or a failed hand-over: the next one is
    /// the whole set.
    needs_full: bool,
}

/// What a key under the prefix holds.
enum Kind {
    Route(String),
    App,
    /// Host claims and anything else: not read.
    Other,
}

fn kind(cfg: &EtcdConfig, key: &str) -> Kind {
    if let Some(name) = key.strip_prefix(&routes_prefix(cfg)) {
        Kind::Route(name.to_string())
    } else if key.starts_with(&apps_prefix(cfg)) {
        Kind::App
    } else {
        Kind::Other
    }
}

impl Mirror {
    fn put(&mut self, cfg: &EtcdConfig, limits: &ControlLimits, kv: &KeyValue) {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        self.remove(cfg, &key);
        let parsed = match kind(cfg, &key) {
            Kind::Route(name) => parse(&key, &name, &kv.value, limits).map(|r| {
                self.routes.insert(name, r);
            }),
            Kind::App => serde_json::from_slice::<StoredApp>(&kv.value)
                .map(|a| {
                    let app = a.key();
                    if app_key(cfg, &app) != key {
                        self.needs_full = true;
                    }
                    self.changed_apps.insert(app);
                    self.apps.insert(key.clone(), a);
                })
                .map_err(|e| {
                    self.needs_full = true;
                    format!("{key}: not an app record: {e}")
                }),
            Kind::Other => Ok(()),
        };
        if let Err(why) = parsed {
            tracing::error!(key, error = %why, "etcd entry refused; the others are unaffected");
            self.invalid.insert(key, why);
        }
    }

    fn remove(&mut self, cfg: &EtcdConfig, key: &str) {
        match kind(cfg, key) {
            Kind::Route(name) => {
                self.routes.remove(&name);
                self.changed_routes.insert(name);
            }
            Kind::App => {
                if let Some(old) = self.apps.remove(key) {
                    self.changed_apps.insert(old.key());
                }
            }
            Kind::Other => {}
        }
        self.invalid.remove(key);
    }

    /// What changed since the last hand-over, as a delta to `revision`;
    /// `None` when only the whole set will do. Either way the changes are
    /// taken: the caller hands over one or the other.
    fn take_delta(&mut self, cfg: &EtcdConfig, revision: i64) -> Option<EtcdDelta> {
        let routes = std::mem::take(&mut self.changed_routes);
        let apps = std::mem::take(&mut self.changed_apps);
        if std::mem::take(&mut self.needs_full) {
            return None;
        }
        Some(EtcdDelta {
            routes: routes
                .into_iter()
                .map(|name| {
                    let now = self.routes.get(&name).cloned();
                    (name, now)
                })
                .collect(),
            apps: apps
                .into_iter()
                .map(|key| {
                    let now = self
                        .apps
                        .get(&app_key(cfg, &key))
                        .cloned()
                        .map(StoredApp::into_put);
                    (key, now)
                })
                .collect(),
            revision,
        })
    }

    /// Forgets the changes: the whole set is being handed over.
    fn clear_changes(&mut self) {
        self.changed_routes.clear();
        self.changed_apps.clear();
        self.needs_full = false;
    }

    fn app_puts(&self) -> Vec<AppPut> {
        self.apps
            .values()
            .cloned()
            .map(StoredApp::into_put)
            .collect()
    }
}

/// One key's value as a route: valid JSON of the route schema whose name is
/// the key's last segment.
fn parse(key: &str, name: &str, value: &[u8], limits: &ControlLimits) -> Result<Route, String> {
    let file = Path::new(key);
    let spec: RouteSpec = serde_json::from_slice(value)
        .map_err(|e| ConfigError::new(file, "", format!("not a route: {e}")).to_string())?;
    if spec.name != name {
        return Err(ConfigError::new(
            file,
            "name",
            format!("`{}` differs from the key's `{name}`", spec.name),
        )
        .to_string());
    }
    routes::validate_one(file, "route", &spec, limits).map_err(|e| e.to_string())
}

/// Largest watch answer accepted.
const WATCH_MESSAGE_MAX: usize = 64 * 1024 * 1024;

/// Keys per page of a full read.
const PAGE: i64 = 1000;

/// How long the local cache may trail the live set.
const FALLBACK_EVERY: Duration = Duration::from_secs(1);

/// Watch messages taken at once before one apply.
const DRAIN_MAX: usize = 256;

/// What watch messages brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Nothing,
    /// Routes or apps changed, up to this revision.
    Changed(i64),
    /// Only keys this instance does not read changed, up to this revision.
    Unchanged(i64),
}

impl Got {
    /// Both messages' effect: a change wins, at the later revision.
    fn and(self, next: Got) -> Got {
        match (self, next) {
            (g, Got::Nothing) => g,
            (Got::Nothing, g) => g,
            (Got::Changed(a), Got::Changed(b) | Got::Unchanged(b))
            | (Got::Unchanged(a), Got::Changed(b)) => Got::Changed(a.max(b)),
            (Got::Unchanged(a), Got::Unchanged(b)) => Got::Unchanged(a.max(b)),
        }
    }
}

/// Why a watch ended.
enum Ended {
    Stopped,
    /// Resync from a full read.
    Lost(&'static str, String),
}

pub struct Follower {
    pub cfg: EtcdConfig,
    pub control: Control,
    pub status: Arc<EtcdStatus>,
    pub shared: Arc<Shared>,
    pub stop: CancellationToken,
    /// The local cache in `state_dir` (`None`: state kept in memory).
    pub cache: Option<Arc<EtcdCache>>,
}

impl Follower {
    /// Runs until `stop`.
    pub async fn run(self) {
        let mut backoff = Backoff::new(self.cfg.backoff_max);
        let mut first = true;
        let mut reason = "start";
        loop {
            let attempt = async {
                let mut client = connect(&self.cfg).await?;
                let (rev, mirror) = self.resync(&mut client, reason).await?;
                Ok::<_, String>((client, rev, mirror))
            };
            let ended = tokio::select! {
                () = self.stop.cancelled() => return,
                r = attempt => match r {
                    Ok((client, rev, mirror)) => {
                        backoff.reset();
                        self.watch(client, rev, mirror).await
                    }
                    Err(e) => Ended::Lost("unreachable", e),
                },
            };
            self.status.set_connected(false);
            self.shared.metrics.etcd_connected.set(0);
            match ended {
                Ended::Stopped => return,
                Ended::Lost(why, detail) => {
                    tracing::warn!(why, error = %detail, "etcd: lost; serving the last routes, writes refused until it is back");
                    if first {
                        self.load_cache().await;
                    }
                    reason = if why == "compacted" {
                        "compacted"
                    } else {
                        "reconnect"
                    };
                }
            }
            first = false;
            self.shared.metrics.etcd_reconnects.inc();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// Reads the whole prefix and hands it to the reconciler; returns the
    /// revision read and the set.
    async fn resync(
        &self,
        client: &mut Client,
        reason: &'static str,
    ) -> Result<(i64, Mirror), String> {
        let (rev, mut mirror) = self.read_all(client).await?;
        self.shared
            .metrics
            .etcd_resyncs
            .with_label_values(&[reason])
            .inc();
        tracing::info!(
            revision = rev,
            routes = mirror.routes.len(),
            apps = mirror.apps.len(),
            invalid = mirror.invalid.len(),
            reason,
            "etcd: read the route set"
        );
        if self.hand_over(&mut mirror, rev, Origin::Read).await {
            self.write_cache(&mirror, rev);
        }
        Ok((rev, mirror))
    }

    /// Reads the whole prefix at one revision, in pages: one answer holding
    /// a large table would pass gRPC's 4 MiB message limit.
    async fn read_all(&self, client: &mut Client) -> Result<(i64, Mirror), String> {
        let prefix = self.cfg.prefix.as_bytes();
        let end = range_end(prefix);
        let mut mirror = Mirror::default();
        let mut from = prefix.to_vec();
        let mut rev = 0;
        loop {
            let req = RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: PAGE,
                // Later pages at the first page's revision: one snapshot
                // (0, the first time: the current one).
                revision: rev,
                ..Default::default()
            };
            let resp = timed(&self.cfg, client.range(req)).await?;
            if rev == 0 {
                rev = resp.header.as_ref().map_or(0, |h| h.revision);
            }
            for kv in &resp.kvs {
                mirror.put(&self.cfg, &self.shared.config.control_limits, kv);
            }
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok((rev, mirror)),
            }
        }
    }

    /// Gives the set to the reconciler. A set it refuses (a conflict with
    /// this instance's file routes) keeps the previous table; the next
    /// change tries again.
    async fn hand_over(&self, mirror: &mut Mirror, rev: i64, origin: Origin) -> bool {
        self.shared
            .metrics
            .etcd_invalid_keys
            .set(mirror.invalid.len() as i64);
        mirror.clear_changes();
        match self
            .control
            .etcd_set(mirror.routes.clone(), mirror.app_puts(), rev, origin)
            .await
        {
            Ok(_) => {
                if origin != Origin::Fallback {
                    self.served(rev);
                }
                true
            }
            Err(e) => {
                tracing::error!(revision = rev, error = %e, "etcd: route set not applied");
                mirror.needs_full = true;
                false
            }
        }
    }

    /// Gives the reconciler what a watch burst changed, or the whole set
    /// when the changes cannot go as a delta.
    async fn hand_over_changes(&self, mirror: &mut Mirror, rev: i64) -> bool {
        let Some(delta) = mirror.take_delta(&self.cfg, rev) else {
            return self.hand_over(mirror, rev, Origin::Watch).await;
        };
        self.shared
            .metrics
            .etcd_invalid_keys
            .set(mirror.invalid.len() as i64);
        match self.control.etcd_delta(delta).await {
            Ok(Some(_)) => {
                self.served(rev);
                true
            }
            Ok(None) => self.hand_over(mirror, rev, Origin::Watch).await,
            Err(e) => {
                tracing::error!(revision = rev, error = %e, "etcd: changes not applied");
                mirror.needs_full = true;
                false
            }
        }
    }

    /// A set or delta from etcd itself is live: the stale flag and its
    /// metric clear together, with the set that replaced the cached one.
    fn served(&self, rev: i64) {
        self.status.set_on_fallback(false);
        self.shared.metrics.etcd_revision.set(rev);
        self.shared.metrics.etcd_on_fallback.set(0);
    }

    /// Follows the watch from `rev + 1` until it is lost or stopped.
    async fn watch(&self, client: Client, rev: i64, mut mirror: Mirror) -> Ended {
        let mut cache_due = None;
        let ended = self
            .follow_watch(client, rev, &mut mirror, &mut cache_due)
            .await;
        if cache_due.is_some() {
            self.write_cache(&mirror, self.status.revision());
        }
        ended
    }

    async fn follow_watch(
        &self,
        client: Client,
        rev: i64,
        mirror: &mut Mirror,
        cache_due: &mut Option<Instant>,
    ) -> Ended {
        let prefix = self.cfg.prefix.as_bytes();
        let create = WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: range_end(prefix),
            start_revision: rev + 1,
            progress_notify: true,
            ..Default::default()
        };
        // etcd may batch many revisions' events into one answer: allow more
        // than gRPC's default 4 MiB for it.
        let mut stream = match timed(&self.cfg, client.watch(create, WATCH_MESSAGE_MAX)).await {
            Ok(s) => s,
            Err(e) => return Ended::Lost("watch", e),
        };
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the progress request in flight was sent.
        let mut asked: Option<Instant> = None;
        loop {
            let msg = tokio::select! {
                () = self.stop.cancelled() => return Ended::Stopped,
                () = self.status.refit_asked() => {
                    self.hand_over(mirror, self.status.revision(), Origin::Watch).await;
                    continue;
                }
                () = sleep_until_opt(*cache_due) => {
                    *cache_due = None;
                    self.write_cache(mirror, self.status.revision());
                    continue;
                }
                _ = heartbeat.tick() => {
                    if let Some(at) = asked {
                        if at.elapsed() > self.cfg.request_timeout {
                            return Ended::Lost("silent", format!("no progress answer in {:?}", at.elapsed()));
                        }
                    } else if let Err(e) = stream.request_progress().await {
                        return Ended::Lost("watch", e.to_string());
                    } else {
                        asked = Some(Instant::now());
                    }
                    continue;
                }
                m = stream.message() => m,
            };
            let mut got = match self.take(msg, mirror, &mut asked, rev) {
                Ok(g) => g,
                Err(ended) => return ended,
            };
            // Take what is already buffered too, so a burst of writes costs
            // one apply rather than one per response.
            for _ in 0..DRAIN_MAX {
                let Ok(msg) = tokio::time::timeout(Duration::ZERO, stream.message()).await else {
                    break;
                };
                match self.take(msg, mirror, &mut asked, rev) {
                    Ok(g) => got = got.and(g),
                    Err(ended) => return ended,
                }
            }
            match got {
                Got::Changed(now) => {
                    if self.hand_over_changes(mirror, now).await {
                        // The cached copy trails by at most FALLBACK_EVERY:
                        // rewriting a large set on every event would cost
                        // more than applying it.
                        cache_due.get_or_insert(Instant::now() + FALLBACK_EVERY);
                    }
                }
                // Nothing to apply, but the table reflects this revision.
                Got::Unchanged(now) => self.status.applied(now),
                Got::Nothing => {}
            }
        }
    }

    /// Takes one watch message into the mirror.
    fn take(
        &self,
        msg: Result<Option<WatchResponse>, crate::etcd::Error>,
        mirror: &mut Mirror,
        asked: &mut Option<Instant>,
        rev: i64,
    ) -> Result<Got, Ended> {
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Ended::Lost("watch", "stream closed".into())),
            Err(e) => return Err(Ended::Lost("watch", e.to_string())),
        };
        if resp.canceled {
            if resp.compact_revision > 0 {
                return Err(Ended::Lost(
                    "compacted",
                    format!("revision {} was compacted", resp.compact_revision),
                ));
            }
            return Err(Ended::Lost(
                "watch",
                format!("cancelled: {}", resp.cancel_reason),
            ));
        }
        if resp.created {
            self.status.set_connected(true);
            self.status.set_on_fallback(false);
            self.shared.metrics.etcd_connected.set(1);
            tracing::info!(from = rev + 1, "etcd: watching");
            return Ok(Got::Nothing);
        }
        if resp.events.is_empty() {
            // A progress notification: the stream has caught up.
            if let Some(at) = asked.take() {
                let lag = at.elapsed();
                self.status.set_watch_lag(lag);
                self.shared.metrics.etcd_watch_lag.set(lag.as_secs_f64());
            }
            return Ok(Got::Nothing);
        }
        let now = resp.header.as_ref().map_or(rev, |h| h.revision);
        Ok(if self.apply_events(mirror, &resp) {
            Got::Changed(now)
        } else {
            Got::Unchanged(now)
        })
    }

    /// Applies a watch response's events; whether any touched routes or
    /// apps (host claims alone change nothing here).
    fn apply_events(&self, m: &mut Mirror, resp: &WatchResponse) -> bool {
        let mut relevant = false;
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            if matches!(kind(&self.cfg, &key), Kind::Other) {
                continue;
            }
            relevant = true;
            match ev.r#type() {
                EventType::Put => m.put(&self.cfg, &self.shared.config.control_limits, kv),
                EventType::Delete => m.remove(&self.cfg, &key),
            }
        }
        relevant
    }

    /// At start with etcd unreachable: serve the set of the local cache,
    /// if there is one, flagged stale (metric, `/readyz`'s body, a
    /// warning) until etcd answers; its first full read then replaces it,
    /// deletions included.
    async fn load_cache(&self) {
        let Some(stored) = self.cache.as_ref().and_then(|c| c.take_at_start()) else {
            return;
        };
        for why in &stored.unreadable {
            tracing::error!(entry = %why, "etcd cache entry does not parse; left out");
        }
        if stored.routes.is_empty() && stored.apps.is_empty() {
            return;
        }
        let (routes, apps) = cached_set(stored, &self.shared.config.control_limits);
        let n = routes.len();
        let a = apps.len();
        match self
            .control
            .etcd_set(routes, apps, 0, Origin::Fallback)
            .await
        {
            Ok(_) => {
                self.status.set_on_fallback(true);
                self.shared.metrics.etcd_on_fallback.set(1);
                tracing::warn!(routes = n, apps = a, "etcd unreachable at start: serving the local cache of etcd, stale until etcd answers");
            }
            Err(e) => {
                tracing::error!(error = %e, "etcd cache not applied");
            }
        }
    }

    /// Asks for the set just applied to become the local cache (written
    /// off this task, by the cache's own thread).
    fn write_cache(&self, mirror: &Mirror, rev: i64) {
        let Some(cache) = &self.cache else {
            return;
        };
        cache.write(
            rev,
            mirror.routes.values().map(|r| r.spec.clone()).collect(),
            mirror.apps.values().cloned().collect(),
        );
    }
}

/// The cached set as the follower hands sets over: each route checked as
/// a key read from etcd is (one that no longer validates is logged and
/// left out, the others still serve); apps are admitted by the
/// reconciler.
fn cached_set(
    stored: crate::state::Stored,
    limits: &ControlLimits,
) -> (BTreeMap<String, Route>, Vec<AppPut>) {
    let mut routes = BTreeMap::new();
    for spec in stored.routes {
        let name = spec.name.clone();
        match routes::validate_one(
            Path::new("etcd cache"),
            &format!("route `{name}`"),
            &spec,
            limits,
        ) {
            Ok(r) => {
                routes.insert(name, r);
            }
            Err(e) => tracing::error!(route = %name, error = %e, "cached etcd route left out"),
        }
    }
    let apps = stored.apps.into_iter().map(StoredApp::into_put).collect();
    (routes, apps)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Exponential back-off from 100 ms to a ceiling.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100),
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(100).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_anywhere_in_a_burst_makes_the_burst_a_change() {
        use Got::*;
        assert_eq!(Nothing.and(Unchanged(5)), Unchanged(5));
        assert_eq!(Changed(3).and(Unchanged(5)), Changed(5));
        assert_eq!(Unchanged(7).and(Changed(5)), Changed(7));
        assert_eq!(Changed(7).and(Nothing), Changed(7));
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let seen: Vec<u64> = (0..5).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(seen, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }

    #[test]
    fn a_value_must_be_a_valid_route_named_like_its_key() {
        let ok = br#"{"name":"a","hosts":["a.example.com"],"backends":["127.0.0.1:1"]}"#;
        assert_eq!(
            parse("/p/routes/a", "a", ok, &ControlLimits::default())
                .unwrap()
                .name,
            "a"
        );
        let e = parse("/p/routes/b", "b", ok, &ControlLimits::default()).unwrap_err();
        assert!(e.contains("/p/routes/b: name: "), "{e}");
        let e = parse("/p/routes/a", "a", b"{", &ControlLimits::default()).unwrap_err();
        assert!(e.contains("not a route"), "{e}");
        let bad = br#"{"name":"a","hosts":[],"backends":["127.0.0.1:1"]}"#;
        let e = parse("/p/routes/a", "a", bad, &ControlLimits::default()).unwrap_err();
        assert!(e.contains("hosts"), "{e}");
    }

    #[test]
    fn a_value_over_a_cap_is_refused_like_in_a_file() {
        let wide =
            br#"{"name":"a","hosts":["a.example.com","b.example.com"],"backends":["127.0.0.1:1"]}"#;
        let one_host = ControlLimits {
            hosts_per_route: 1,
            ..ControlLimits::default()
        };
        assert!(parse("/p/routes/a", "a", wide, &ControlLimits::default()).is_ok());
        assert_eq!(
            parse("/p/routes/a", "a", wide, &one_host).unwrap_err(),
            "/p/routes/a: route.hosts: 2 hosts, at most 1 (limits.max_hosts_per_route)"
        );
    }
}
