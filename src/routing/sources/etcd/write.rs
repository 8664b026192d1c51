//! The admin API's writes when routes live in etcd. A write is checked
//! against this instance first (schema, expiry, certificates, conflicts with
//! its file routes and apps), then made with one etcd transaction that
//! claims the route's hosts and fails if another route holds one or if the
//! route changed since it was read. Every instance, this one included,
//! applies it from its watch; the answer says whether this instance's table
//! has it yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::Serialize;
use tokio::sync::Mutex;

use super::{connect, host_key, route_key, timed, EtcdStatus};
use crate::config::etcd::EtcdConfig;
use crate::config::routes::{parse_host_pattern, RouteSpec};
use crate::proxy::Shared;
use crate::routing::reconciler::{Control, ControlError};
use crate::routing::route::Route;
use crate::routing::table::Source;

/// Attempts at a transaction that lost a race with another writer.
const ATTEMPTS: usize = 4;

/// What a write did.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Written {
    /// The store revision of the write.
    pub etcd_revision: i64,
    /// This instance's table reflects it already.
    pub live_here: bool,
}

pub struct EtcdWriter {
    cfg: EtcdConfig,
    status: Arc<EtcdStatus>,
    control: Control,
    shared: Arc<Shared>,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for EtcdWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWriter")
            .field("endpoints", &self.cfg.endpoints)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> ControlError {
    ControlError::Unavailable(format!("etcd: {e}"))
}

/// One key as read: its value and its mod revision (0: absent).
struct Read {
    value: Option<Vec<u8>>,
    rev: i64,
}

impl EtcdWriter {
    pub fn new(
        cfg: EtcdConfig,
        status: Arc<EtcdStatus>,
        control: Control,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            cfg,
            status,
            control,
            shared,
            client: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<Client, ControlError> {
        if !self.status.connected() {
            return Err(ControlError::Unavailable(
                "etcd is unreachable: writes are refused until it is back (routes keep serving)"
                    .into(),
            ));
        }
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(&self.cfg).await.map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the client after a failure, so the next write reconnects.
    async fn failed(&self, e: String) -> ControlError {
        *self.client.lock().await = None;
        unavailable(e)
    }

    async fn read(&self, client: &mut Client, key: &str) -> Result<Read, ControlError> {
        match timed(&self.cfg, client.get(key, None)).await {
            Ok(r) => Ok(match r.kvs().first() {
                Some(kv) => Read {
                    value: Some(kv.value().to_vec()),
                    rev: kv.mod_revision(),
                },
                None => Read {
                    value: None,
                    rev: 0,
                },
            }),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// The hosts a stored route claims, in the form claims are keyed by
    /// (none if its value is not a route).
    fn stored_hosts(value: Option<&[u8]>) -> Vec<String> {
        value
            .and_then(|v| serde_json::from_slice::<RouteSpec>(v).ok())
            .map(|s| {
                s.hosts
                    .iter()
                    .filter_map(|h| parse_host_pattern(h).ok())
                    .map(|p| p.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `PUT /routes/{name}`.
    pub async fn put(&self, spec: RouteSpec) -> Result<Written, ControlError> {
        let route = self.control.check_put(spec).await?;
        let mut client = self.client().await?;
        let name = route.name.clone();
        let rk = route_key(&self.cfg, &name);
        let hosts: Vec<String> = route.hosts.iter().map(ToString::to_string).collect();
        let value = serde_json::to_vec(&route.spec).map_err(unavailable)?;
        // One lease for the route and its claims, whatever the attempt.
        let opts = self
            .lease_for(&mut client, &route)
            .await?
            .map(|id| PutOptions::new().with_lease(id));
        for _ in 0..ATTEMPTS {
            let current = self.read(&mut client, &rk).await?;
            let mut when = vec![Compare::mod_revision(
                rk.as_str(),
                CompareOp::Equal,
                current.rev,
            )];
            // Claims to take (or keep) and claims to give back.
            let mut claims: BTreeMap<String, i64> = BTreeMap::new();
            for h in &hosts {
                let hk = host_key(&self.cfg, h);
                let claim = self.read(&mut client, &hk).await?;
                if let Some(owner) = &claim.value {
                    if owner.as_slice() != name.as_bytes() {
                        return Err(ControlError::Conflict(format!(
                            "host `{h}` of route `{name}` is already claimed by route `{}` (etcd)",
                            String::from_utf8_lossy(owner)
                        )));
                    }
                }
                claims.insert(hk, claim.rev);
            }
            let mut release = Vec::new();
            for h in Self::stored_hosts(current.value.as_deref()) {
                let hk = host_key(&self.cfg, &h);
                if claims.contains_key(&hk) {
                    continue;
                }
                let claim = self.read(&mut client, &hk).await?;
                if claim.value.as_deref() == Some(name.as_bytes()) {
                    when.push(Compare::mod_revision(
                        hk.as_str(),
                        CompareOp::Equal,
                        claim.rev,
                    ));
                    release.push(TxnOp::delete(hk, None));
                }
            }
            let mut ops = vec![TxnOp::put(rk.as_str(), value.clone(), opts.clone())];
            for (hk, rev) in &claims {
                when.push(Compare::mod_revision(hk.as_str(), CompareOp::Equal, *rev));
                ops.push(TxnOp::put(hk.as_str(), name.as_bytes(), opts.clone()));
            }
            ops.extend(release);
            let txn = Txn::new().when(when).and_then(ops);
            let resp = match timed(&self.cfg, client.txn(txn)).await {
                Ok(r) => r,
                Err(e) => return Err(self.failed(e).await),
            };
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                return Ok(self.written(rev).await);
            }
            // Another writer got there between the reads and the
            // transaction: read again and retry.
        }
        Err(ControlError::Conflict(format!(
            "route `{name}` kept changing in etcd while it was written; try again"
        )))
    }

    /// A lease ending at the route's expiry (rounded up to whole seconds,
    /// never before it), or none for a route that does not expire.
    async fn lease_for(
        &self,
        client: &mut Client,
        route: &Route,
    ) -> Result<Option<i64>, ControlError> {
        let Some(at) = route.expires_at else {
            return Ok(None);
        };
        let left = (at - Utc::now()).num_milliseconds().max(0);
        let ttl = (left + 999) / 1000 + 1;
        match timed(&self.cfg, client.lease_grant(ttl, None)).await {
            Ok(l) => Ok(Some(l.id())),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// `DELETE /routes/{name}`.
    pub async fn delete(&self, name: &str) -> Result<Written, ControlError> {
        let mut client = self.client().await?;
        let rk = route_key(&self.cfg, name);
        for _ in 0..ATTEMPTS {
            let current = self.read(&mut client, &rk).await?;
            let Some(value) = current.value else {
                return Err(self.not_in_etcd(name));
            };
            let mut when = vec![Compare::mod_revision(
                rk.as_str(),
                CompareOp::Equal,
                current.rev,
            )];
            let mut ops = vec![TxnOp::delete(rk.as_str(), None)];
            for h in Self::stored_hosts(Some(&value)) {
                let hk = host_key(&self.cfg, &h);
                let claim = self.read(&mut client, &hk).await?;
                if claim.value.as_deref() == Some(name.as_bytes()) {
                    when.push(Compare::mod_revision(
                        hk.as_str(),
                        CompareOp::Equal,
                        claim.rev,
                    ));
                    ops.push(TxnOp::delete(hk, None));
                }
            }
            let txn = Txn::new().when(when).and_then(ops);
            let resp = match timed(&self.cfg, client.txn(txn)).await {
                Ok(r) => r,
                Err(e) => return Err(self.failed(e).await),
            };
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                return Ok(self.written(rev).await);
            }
        }
        Err(ControlError::Conflict(format!(
            "route `{name}` kept changing in etcd while it was deleted; try again"
        )))
    }

    /// Deleting a route etcd does not hold: a file route is deleted by
    /// editing the file.
    fn not_in_etcd(&self, name: &str) -> ControlError {
        match self.shared.router.load().get(name) {
            Some(e) if e.source == Source::File => ControlError::Conflict(format!(
                "route `{name}` is defined in this instance's routes file; remove it there"
            )),
            _ => ControlError::NotFound(format!("no route named `{name}` in etcd")),
        }
    }

    async fn written(&self, rev: i64) -> Written {
        Written {
            etcd_revision: rev,
            live_here: self.status.wait_for(rev, self.cfg.request_timeout).await,
        }
    }
}
