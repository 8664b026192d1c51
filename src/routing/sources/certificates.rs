//! Watching the `[[certificate]]` files, so that a renewal is served with no
//! signal: certbot and cert-manager replace the cert and key files (by
//! renaming new ones over them, or swapping a symlink), other tools write
//! them in place.
//!
//! The parent directories are watched, not the files (a rename replaces the
//! inode a watch on the file would hold), and any change in them counts, so
//! a symlink swapped beside the files (Kubernetes' `..data`) is seen too.
//! Once the directories have been quiet for `reload.debounce`, every pair is
//! re-read on a blocking thread (bounded, [`crate::tls::pem_file`]); a pair
//! whose bytes are those of the live certificate is left alone, and the
//! others go to the reconciler, which swaps them in with the routes
//! unchanged (or refuses them, keeping the old certificate).
//!
//! A renewal writes two files, so a pair may be caught halfway (a new
//! certificate beside the old key). A pair that fails is therefore held
//! back, not reported, until its directories have been quiet for
//! [`slow_writer_wait`]: the other file landing meanwhile is one more change,
//! and the pair is read again. Only a pair still broken then is refused
//! (logged and counted), once per state of its files.

use std::path::PathBuf;
use std::sync::Arc;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::CertificateFiles;
use crate::control::Control;
use crate::file_watch::{change, parent_dir, slow_writer_wait, stamp};
use crate::proxy::Shared;
use crate::timing::sleep_until_opt;
use crate::tls::certs::{Digest, PairRead, PairUpdate};

/// Keeps the watch alive while held; dropping it ends the task.
pub struct CertWatch {
    _watcher: RecommendedWatcher,
}

/// Starts watching the directories of every configured certificate and key.
pub fn watch(shared: Arc<Shared>, control: Control) -> notify::Result<CertWatch> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in &shared.config.certificates {
        for dir in [parent_dir(&f.cert), parent_dir(&f.key)] {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    // One pending wake-up is enough: the task reads everything anyway.
    let (tx, rx) = mpsc::channel(1);
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if change(&ev.kind).is_some() => {
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "certificate watch error"),
        })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(run(rx, shared, control));
    Ok(CertWatch { _watcher: watcher })
}

/// Debounces changes and hands what they changed to the reconciler; ends
/// when the watcher (and with it the sender) is dropped.
async fn run(mut changes: mpsc::Receiver<()>, shared: Arc<Shared>, control: Control) {
    let files = Arc::new(shared.config.certificates.clone());
    let debounce = shared.config.reload.debounce;
    let patience = slow_writer_wait(debounce);
    // Per certificate, the files' state last refused: not refused again
    // for an unrelated change in the directory.
    let mut refused: Vec<Option<Digest>> = vec![None; files.len()];
    let mut last_change = Instant::now();
    let mut due: Option<Instant> = None;
    loop {
        tokio::select! {
            c = changes.recv() => match c {
                None => return,
                Some(()) => {
                    last_change = Instant::now();
                    due = Some(last_change + debounce);
                }
            },
            () = sleep_until_opt(due) => {
                due = None;
                let live: Vec<Digest> = shared
                    .router
                    .load()
                    .termination()
                    .certs()
                    .certs()
                    .iter()
                    .map(|c| c.digest)
                    .collect();
                let skip = (live, refused.clone());
                let files = Arc::clone(&files);
                let read = match tokio::task::spawn_blocking(move || read_changed(&files, &skip)).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the certificate files failed");
                        continue;
                    }
                };
                let Some(updates) = read else {
                    // Written to while read: again once quiet.
                    due = Some(Instant::now() + debounce);
                    continue;
                };
                let settled = last_change.elapsed() >= patience;
                let (ok, failed): (Vec<_>, Vec<_>) =
                    updates.into_iter().partition(|(_, u)| u.result.is_ok());
                let mut send: Vec<(Digest, PairUpdate)> = ok;
                if settled {
                    send.extend(failed);
                } else if !failed.is_empty() {
                    // Perhaps halfway through a renewal: look again later.
                    tracing::debug!(pending = failed.len(), "certificate files not usable yet; waiting");
                    due = Some(last_change + patience);
                }
                if send.is_empty() {
                    continue;
                }
                let digests: Vec<(usize, Digest, bool)> = send
                    .iter()
                    .map(|(d, u)| (u.index, *d, u.result.is_ok()))
                    .collect();
                let Ok(taken) = control
                    .certificates_read(send.into_iter().map(|(_, u)| u).collect())
                    .await
                else {
                    return;
                };
                for (i, digest, ok) in digests {
                    refused[i] = (!ok || !taken).then_some(digest);
                }
            }
        }
    }
}

/// Reads every pair; returns, with the digest of what was read, those that
/// differ from `live` and from the state last `refused`, parsed. `None` if a
/// file changed while it was read.
fn read_changed(
    files: &[CertificateFiles],
    (live, refused): &(Vec<Digest>, Vec<Option<Digest>>),
) -> Option<Vec<(Digest, PairUpdate)>> {
    let mut out = Vec::new();
    for (index, f) in files.iter().enumerate() {
        let before = (stamp(&f.cert), stamp(&f.key));
        let read = PairRead::read(f);
        if (stamp(&f.cert), stamp(&f.key)) != before {
            return None;
        }
        let digest = read.digest();
        if live.get(index) == Some(&digest) || refused.get(index) == Some(&Some(digest)) {
            continue;
        }
        let result = read.parse(f).map_err(|(_, why)| why);
        out.push((digest, PairUpdate { index, result }));
    }
    Some(out)
}
