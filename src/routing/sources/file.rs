//! Watching the routes file. The parent directory is watched, not the file,
//! so that editors and deploy tools that replace the file by renaming a new
//! one over it keep being followed. Bursts of events are debounced by the
//! reconciler, which re-reads the file once things are quiet; a file being
//! written in place is re-read only once the writer closes it, since between
//! its truncation and the write it is empty.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::routing::reconciler::Control;

/// Keeps the watch alive while held.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
}

/// Starts watching `path` and tells `control` whenever it may have changed.
pub fn watch(path: &Path, control: Control) -> notify::Result<FileWatch> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
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
                match ev.kind {
                    // Written in place: not complete until closed.
                    EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
                        control.file_writing()
                    }
                    // Closed after writing, renamed over, created, removed.
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                    | EventKind::Create(_)
                    | EventKind::Modify(_)
                    | EventKind::Remove(_)
                    | EventKind::Any => control.file_touched(),
                    _ => {}
                }
            }
            Err(e) => tracing::warn!(file = %target.display(), error = %e, "file watch error"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch { _watcher: watcher })
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
