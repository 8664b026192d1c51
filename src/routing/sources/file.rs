//! Watching the routes file, and the pieces the certificate watch
//! ([`super::certificates`]) shares with it. The parent directory is watched,
//! not the file, so that editors and deploy tools that replace the file by
//! renaming a new one over it keep being followed. Bursts of events are
//! debounced by the reconciler, which re-reads the file once things are
//! quiet; a file being written in place is re-read only once the writer
//! closes it, since between its truncation and the write it is empty.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::routing::reconciler::Control;

/// Keeps the watch alive while held.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
}

/// Starts watching `path` and tells `control` whenever it may have changed.
pub fn watch(path: &Path, control: Control) -> notify::Result<FileWatch> {
    let dir = parent_dir(path);
    let name = path.file_name().map(|n| n.to_os_string());
    let target: PathBuf = path.to_path_buf();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                let ours = ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                if !ours {
                    return;
                }
                match change(&ev.kind) {
                    Some(Change::Writing) => control.file_writing(),
                    Some(Change::Touched) => control.file_touched(),
                    None => {}
                }
            }
            Err(e) => tracing::warn!(file = %target.display(), error = %e, "file watch error"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch { _watcher: watcher })
}

/// The directory to watch for `path`: renaming a new file over it replaces
/// its inode, which a watch on the file itself would not follow.
pub fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// What a watch event says about the file it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Written in place: not complete until closed.
    Writing,
    /// Closed after writing, renamed over, created, removed, its metadata
    /// changed.
    Touched,
}

/// `None` for events that change nothing, such as opening the file to read
/// it (which the readers here do themselves).
pub fn change(kind: &EventKind) -> Option<Change> {
    match kind {
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
            Some(Change::Writing)
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any => Some(Change::Touched),
        _ => None,
    }
}

/// How long a writer that started but has not finished is waited for
/// before what it left is taken as final: much longer than the debounce.
pub fn slow_writer_wait(debounce: Duration) -> Duration {
    (debounce * 10).max(Duration::from_secs(2))
}

/// When a file was last modified, and its size: two equal stamps taken
/// around a read mean nothing wrote to the file in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: std::time::SystemTime,
    len: u64,
}

impl Stamp {
    /// Time since the last modification (zero if the clock went back).
    pub fn age(&self) -> std::time::Duration {
        self.modified.elapsed().unwrap_or_default()
    }

    /// A zero-byte file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The file's stamp, or `None` if it cannot be read.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok()?,
        len: m.len(),
    })
}
