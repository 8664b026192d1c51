//! An app record as etcd holds it (`P/apps/{project}/{name}`): the shape is
//! [`StoredApp`], shared with the embedded store (`crate::state`), so a
//! record moves between the two unchanged.

pub use crate::apps::stored::StoredApp;
use crate::apps::AppKey;
use crate::config::etcd::EtcdConfig;

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
