//! The periodic CNAME recheck: a source of changes like the routes file
//! or etcd. It looks up every registered app's custom hostnames off the
//! reconciler task and reports what changed through the control API.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::apps::cname::{check_all, fold, CnameState};
use crate::apps::CnameReport;
use crate::config::apps::CnamePolicy;
use crate::control::Control;
use crate::proxy::Shared;

/// Rechecks every registered app's custom hostnames (CNAME and ownership
/// proof) each
/// `apps.cname_recheck` and reports changes to the reconciler, which
/// withdraws or restores routes. Lookups run here, never in the reconciler
/// task, so a slow DNS never holds up a route change. Stops with `stop`.
pub async fn recheck(shared: Arc<Shared>, control: Control, stop: CancellationToken) {
    let cfg = &shared.config.apps;
    if cfg.cname_policy == CnamePolicy::Off || cfg.ingress_hostname.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(cfg.cname_recheck);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let apps = control.apps();
        for entry in apps.iter() {
            let hosts: Vec<String> = entry.cname.keys().cloned().collect();
            if hosts.is_empty() {
                continue;
            }
            let fresh = check_all(&shared.dns, cfg, &entry.app.key.project, &hosts).await;
            for (h, s) in &fresh {
                if let CnameState::Unverified(why) = s {
                    tracing::warn!(app = %entry.app.key, host = %h, error = %why, "CNAME recheck got no answer; keeping the last verdict");
                }
            }
            if fold(&entry.cname, fresh.clone()) != entry.cname {
                let report = CnameReport {
                    key: entry.app.key.clone(),
                    id: entry.app.record.id,
                    cname: fresh,
                };
                if control.cname_checked(report).await.is_err() {
                    return;
                }
            }
        }
    }
}
