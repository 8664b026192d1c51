//! An app record as a store holds it: the record as the instance admitted
//! it (its `deployed_at` filled in, so every instance, and the same one
//! after a restart, computes the same expiry), the CNAME verdicts found,
//! and the hostnames it claims. etcd (`P/apps/{project}/{name}`) and the
//! embedded store (`crate::state`) keep this same shape.

use serde::{Deserialize, Serialize};

use super::cname::CnameStates;
use super::store::{AppEntry, AppPut};
use super::{AppKey, AppRecord};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredApp {
    pub project: String,
    pub name: String,
    pub record: AppRecord,
    #[serde(default)]
    pub cname: CnameStates,
    /// The hostnames claimed with the record (in etcd: the
    /// `P/hosts/{host}` keys written with it).
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

impl From<&AppEntry> for StoredApp {
    /// What to store for an admitted app.
    fn from(e: &AppEntry) -> Self {
        StoredApp {
            project: e.app.key.project.clone(),
            name: e.app.key.name.clone(),
            record: e.app.record.clone(),
            cname: e.cname.clone(),
            hosts: e.app.hosts().map(|(_, h)| h.to_string()).collect(),
        }
    }
}
