//! The reconciler's side of certificate renewals (the watch is
//! `crate::routing::sources::certificates`): certificates read again are
//! swapped in with the routes unchanged, or refused with the ones in
//! service kept; either way counted under the certificate's name.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{ControlError, Reconciler, CERTIFICATES};
use crate::config::CertificateFiles;
use crate::tls::certs::PairUpdate;

impl Reconciler {
    /// Refuses the updates that did not load, and swaps in the others if,
    /// with the live certificates, they still serve every terminate route
    /// and claim no name twice. Returns whether those were taken.
    pub(super) fn certificates_read(&mut self, updates: Vec<PairUpdate>) -> bool {
        let shared = Arc::clone(&self.shared);
        let files = &shared.config.certificates;
        let mut loaded = Vec::new();
        for u in updates {
            let Some(f) = files.get(u.index) else {
                continue;
            };
            match u.result {
                Ok(c) => loaded.push((u.index, c)),
                Err(why) => refused(&shared, f, &why),
            }
        }
        if loaded.is_empty() {
            return true;
        }
        let taken: Vec<(usize, DateTime<Utc>)> =
            loaded.iter().map(|(i, c)| (*i, c.not_after)).collect();
        let live = Arc::clone(shared.router.load().termination().certs());
        let result = live
            .replaced(loaded)
            .map_err(ControlError::Conflict)
            .and_then(|store| {
                let merged = self.merged(&self.file_routes, &self.api_routes, &self.apps)?;
                self.apply_with(merged, CERTIFICATES, Some(Arc::new(store)))
            });
        match result {
            Ok(_) => {
                for (i, not_after) in taken {
                    let f = &files[i];
                    shared
                        .metrics
                        .certificate_reloads
                        .with_label_values(&[&f.name, "ok"])
                        .inc();
                    tracing::info!(certificate = %f.name, cert = %f.cert.display(), %not_after, "renewed certificate in service");
                }
                // Names served now may let left-out etcd entries fit.
                if let Some(status) = &self.etcd {
                    status.ask_refit();
                }
                true
            }
            Err(e) => {
                for (i, _) in taken {
                    refused(&shared, &files[i], &e.to_string());
                }
                false
            }
        }
    }
}

/// Counts and logs a renewal refused; the certificate in service stays.
fn refused(shared: &crate::proxy::Shared, f: &CertificateFiles, why: &str) {
    shared
        .metrics
        .certificate_reloads
        .with_label_values(&[&f.name, "error"])
        .inc();
    tracing::error!(
        certificate = %f.name,
        cert = %f.cert.display(),
        key = %f.key.display(),
        error = %why,
        "certificate files refused; the certificate in service stays"
    );
}
