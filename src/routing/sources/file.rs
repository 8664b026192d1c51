//! Watching the routes file (what a watch event means, and file stamps,
//! are in [`crate::file_watch`], shared with the other watches). The parent directory is watched,
//! not the file, so that editors and deploy tools that replace the file by
//! renaming a new one over it keep being followed. Bursts of events are
//! debounced by the reconciler, which re-reads the file once things are
//! quiet; a file being written in place is re-read only once the writer
//! closes it, since between its truncation and the write it is empty.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::control::Control;
use crate::file_watch::{change, parent_dir, Change};

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
