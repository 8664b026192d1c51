//! An app record as etcd holds it (`P/apps/{project}/{name}`): the record
//! as the writing instance admitted it (its `deployed_at` filled in, so
//! every instance computes the same expiry), the CNAME verdicts that
//! instance found, and the host claims written with it.

use serde::{Deserialize, Serialize};

use crate::apps::cname::CnameStates;
use crate::apps::{AppKey, AppPut, AppRecord};
use crate::config::etcd::EtcdConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredApp {
    pub project: String,
    pub name: String,
    pub record: AppRecord,
    #[serde(default)]
    pub cname: CnameStates,
    /// The `P/hosts/{host}` claims written with the record.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl StoredApp {
    pub fn key(&self) -> AppKey {
        AppKey {
            project: self.project.clone(),
            name: self.name.clone(),
        }
    }

    pub fn into_put(self) -> AppPut {
        AppPut {
            key: AppKey {
                project: self.project,
                name: self.name,
            },
            record: self.record,
            cname: self.cname,
        }
    }
}

/// `P/apps/`.
pub fn apps_prefix(cfg: &EtcdConfig) -> String {
    format!("{}apps/", cfg.prefix)
}

/// `P/apps/{project}/{name}`, with `%` and `/` escaped in each part (the
/// platform allows any characters but control ones), so the key is one
/// per app and readable in `etcdctl get --prefix`.
pub fn app_key(cfg: &EtcdConfig, key: &AppKey) -> String {
    format!(
        "{}{}/{}",
        apps_prefix(cfg),
        escape(&key.project),
        escape(&key.name)
    )
}

fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_per_app_even_with_slashes() {
        let cfg = crate::config::etcd::EtcdConfig {
            endpoints: vec![],
            prefix: "/p/".into(),
            dial_timeout: Default::default(),
            request_timeout: Default::default(),
            heartbeat: Default::default(),
            backoff_max: Default::default(),
            user: None,
            tls: None,
            fallback_file: None,
        };
        let k = |p: &str, n: &str| {
            app_key(
                &cfg,
                &AppKey {
                    project: p.into(),
                    name: n.into(),
                },
            )
        };
        assert_eq!(k("proj", "web"), "/p/apps/proj/web");
        assert_ne!(k("a/b", "c"), k("a", "b/c"));
        assert_ne!(k("a%2Fb", "c"), k("a/b", "c"));
    }
}
