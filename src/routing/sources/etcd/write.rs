//! The admin API's writes when routes live in etcd. A write is checked
//! against this instance first (schema, expiry, certificates, conflicts with
//! its file routes and apps), then made with one etcd transaction that
//! claims the route's hosts and fails if another route holds one or if the
//! route changed since it was read. Every instance, this one included,
//! applies it from its watch; the answer says whether this instance's table
//! has it yet.

use std::sync::Arc;

use crate::etcd::{
    create_revision_is, delete_op, mod_revision_is, put_op, Client, Compare, RequestOp,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;

use super::stored_app::{app_key, StoredApp};
use super::{connect, host_key, route_key, timed, EtcdStatus};
use crate::apps::{AppKey, AppPut};
use crate::config::etcd::EtcdConfig;
use crate::config::routes::RouteSpec;
use crate::control::{Control, ControlError};
use crate::host::parse_host_pattern;
use crate::proxy::Shared;
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

/// A key relative to the prefix: what host claims hold.
fn owner_of(cfg: &EtcdConfig, key: &str) -> String {
    key.strip_prefix(&cfg.prefix).unwrap_or(key).to_string()
}

fn unavailable(e: impl std::fmt::Display) -> ControlError {
    ControlError::Unavailable(format!("etcd: {e}"))
}

/// A value and the hosts it claims.
struct Claim {
    key: String,
    /// What each `P/hosts/{host}` holds: the owner's key under the prefix
    /// (`routes/{name}`, `apps/{project}/{name}`), so a claim whose owner
    /// is gone can be told from a live one.
    owner: String,
    hosts: Vec<String>,
    /// The hosts a previous value under `key` claims.
    old_hosts: fn(&[u8]) -> Vec<String>,
    /// When the value and its claims leave etcd (a lease), if ever.
    until: Option<DateTime<Utc>>,
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

    /// What the follower and the cache report (for `/readyz`).
    pub fn status(&self) -> &EtcdStatus {
        &self.status
    }

    /// Writes are taken (the watch is live).
    pub fn connected(&self) -> bool {
        self.status.connected()
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
        match timed(&self.cfg, client.get(key)).await {
            Ok(r) => Ok(match r.kvs.into_iter().next() {
                Some(kv) => Read {
                    rev: kv.mod_revision,
                    value: Some(kv.value),
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
    fn route_hosts(value: &[u8]) -> Vec<String> {
        serde_json::from_slice::<RouteSpec>(value)
            .map(|s| {
                s.hosts
                    .iter()
                    .filter_map(|h| parse_host_pattern(h).ok())
                    .map(|p| p.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hosts a stored app record claims.
    fn app_hosts(value: &[u8]) -> Vec<String> {
        serde_json::from_slice::<StoredApp>(value)
            .map(|a| a.hosts)
            .unwrap_or_default()
    }

    /// `PUT /routes/{name}`.
    pub async fn put(&self, spec: RouteSpec) -> Result<Written, ControlError> {
        let route = self.control.check_put(spec).await?;
        let value = serde_json::to_vec(&route.spec).map_err(unavailable)?;
        let hosts: Vec<String> = route.hosts.iter().map(ToString::to_string).collect();
        let claim = Claim {
            key: route_key(&self.cfg, &route.name),
            owner: owner_of(&self.cfg, &route_key(&self.cfg, &route.name)),
            hosts,
            old_hosts: Self::route_hosts,
            until: route.expires_at,
        };
        self.put_claiming(claim, value).await
    }

    /// `PUT /apps/{project}/{name}`: the record as this instance admits it
    /// (`deployed_at` filled in), claiming every hostname of the app.
    pub async fn put_app(&self, put: AppPut) -> Result<Written, ControlError> {
        let key = put.key.clone();
        let admitted = self.control.check_app(put).await?;
        let stored = StoredApp {
            project: key.project.clone(),
            name: key.name.clone(),
            record: admitted.record,
            cname: admitted.cname,
            hosts: admitted.hosts.clone(),
        };
        let value = serde_json::to_vec(&stored).map_err(unavailable)?;
        let claim = Claim {
            key: app_key(&self.cfg, &key),
            owner: owner_of(&self.cfg, &app_key(&self.cfg, &key)),
            hosts: admitted.hosts,
            old_hosts: Self::app_hosts,
            until: Some(admitted.expires_at),
        };
        self.put_claiming(claim, value).await
    }

    /// One transaction: `value` under `claim.key` and a claim on each of its
    /// hosts, releasing the hosts its previous value claimed and no longer
    /// does. Refused if another owner holds one of the hosts; retried if
    /// anything it read changed before it committed.
    async fn put_claiming(&self, claim: Claim, value: Vec<u8>) -> Result<Written, ControlError> {
        let mut client = self.client().await?;
        let Claim {
            key,
            owner,
            hosts,
            old_hosts,
            until,
        } = claim;
        // One lease for the value and its claims, whatever the attempt.
        let lease = self.lease_until(&mut client, until).await?.unwrap_or(0);
        for _ in 0..ATTEMPTS {
            let current = self.read(&mut client, &key).await?;
            let mut when = vec![mod_revision_is(key.as_str(), current.rev)];
            let mut ops = vec![put_op(key.as_str(), value.clone(), lease)];
            for h in &hosts {
                let hk = host_key(&self.cfg, h);
                let held = self.read(&mut client, &hk).await?;
                if let Some(by) = held.value.as_deref().filter(|v| *v != owner.as_bytes()) {
                    let by = String::from_utf8_lossy(by).into_owned();
                    // A claim outlives its owner only if something deleted
                    // the owner without its claims (not this code): such a
                    // claim is taken over, provided the owner stays gone.
                    let owner_key = format!("{}{by}", self.cfg.prefix);
                    if self.read(&mut client, &owner_key).await?.value.is_some() {
                        return Err(ControlError::Conflict(format!(
                            "host `{h}` of `{owner}` is already claimed by `{by}` (etcd)"
                        )));
                    }
                    when.push(create_revision_is(owner_key, 0));
                }
                when.push(mod_revision_is(hk.as_str(), held.rev));
                ops.push(put_op(hk.as_str(), owner.as_bytes(), lease));
            }
            let old = current.value.as_deref().map(old_hosts).unwrap_or_default();
            let kept: std::collections::HashSet<&String> = hosts.iter().collect();
            let gone = old.into_iter().filter(|h| !kept.contains(h));
            self.release(&mut client, gone, &owner, &mut when, &mut ops)
                .await?;
            if let Some(rev) = self.commit(&mut client, when, ops).await? {
                return Ok(self.written(rev).await);
            }
            // Another writer got there between the reads and the
            // transaction: read again and retry.
        }
        Err(ControlError::Conflict(format!(
            "`{owner}` kept changing in etcd while it was written; try again"
        )))
    }

    /// Adds to a transaction the release of the claims `owner` holds on
    /// `hosts`, each guarded by the revision read (claims held by others
    /// are left alone).
    async fn release(
        &self,
        client: &mut Client,
        hosts: impl IntoIterator<Item = String>,
        owner: &str,
        when: &mut Vec<Compare>,
        ops: &mut Vec<RequestOp>,
    ) -> Result<(), ControlError> {
        for h in hosts {
            let hk = host_key(&self.cfg, &h);
            let held = self.read(client, &hk).await?;
            if held.value.as_deref() == Some(owner.as_bytes()) {
                when.push(mod_revision_is(hk.as_str(), held.rev));
                ops.push(delete_op(hk));
            }
        }
        Ok(())
    }

    /// Runs a transaction; the revision if it succeeded, `None` if a
    /// comparison failed.
    async fn commit(
        &self,
        client: &mut Client,
        when: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<Option<i64>, ControlError> {
        match timed(&self.cfg, client.txn(when, ops)).await {
            Ok(r) if r.succeeded => Ok(Some(r.header.map_or(0, |h| h.revision))),
            Ok(_) => Ok(None),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// A lease ending at `until` (rounded up to whole seconds: etcd never
    /// ends a lease early), or none.
    async fn lease_until(
        &self,
        client: &mut Client,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<i64>, ControlError> {
        let Some(at) = until else {
            return Ok(None);
        };
        let left = (at - Utc::now()).num_milliseconds().max(0);
        let ttl = ((left + 999) / 1000).max(1);
        match timed(&self.cfg, client.lease_grant(ttl)).await {
            Ok(id) => Ok(Some(id)),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// `DELETE /routes/{name}`.
    pub async fn delete(&self, name: &str) -> Result<Written, ControlError> {
        let key = route_key(&self.cfg, name);
        let owner = owner_of(&self.cfg, &key);
        let gone = || self.not_in_etcd(name);
        self.delete_releasing(&key, &owner, Self::route_hosts, gone)
            .await
    }

    /// `DELETE /apps/{project}/{name}`.
    pub async fn delete_app(&self, app: &AppKey) -> Result<Written, ControlError> {
        let key = app_key(&self.cfg, app);
        let owner = owner_of(&self.cfg, &key);
        let gone = || ControlError::NotFound(format!("no app `{app}` in etcd"));
        self.delete_releasing(&key, &owner, Self::app_hosts, gone)
            .await
    }

    /// One transaction deleting `key` and the host claims its value holds.
    async fn delete_releasing(
        &self,
        key: &str,
        owner: &str,
        old_hosts: fn(&[u8]) -> Vec<String>,
        gone: impl Fn() -> ControlError,
    ) -> Result<Written, ControlError> {
        let mut client = self.client().await?;
        for _ in 0..ATTEMPTS {
            let current = self.read(&mut client, key).await?;
            let Some(value) = current.value else {
                return Err(gone());
            };
            let mut when = vec![mod_revision_is(key, current.rev)];
            let mut ops = vec![delete_op(key)];
            self.release(&mut client, old_hosts(&value), owner, &mut when, &mut ops)
                .await?;
            if let Some(rev) = self.commit(&mut client, when, ops).await? {
                return Ok(self.written(rev).await);
            }
        }
        Err(ControlError::Conflict(format!(
            "`{owner}` kept changing in etcd while it was deleted; try again"
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
