//! Watching the routes file. The parent directory is watched, not the file,
//! so that editors and deploy tools that replace the file by renaming a new
//! one over it keep being followed. Bursts of events are debounced by the
//! reconciler, which re-reads the file once things are quiet.

use std::path::{Path, PathBuf};

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
                let relevant = matches!(
                    ev.kind,
                    EventKind::Create(_)
                        | EventKind::Modify(_)
                        | EventKind::Remove(_)
                        | EventKind::Any
                ) && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                if relevant {
                    control.file_touched();
                }
            }
            Err(e) => tracing::warn!(file = %target.display(), error = %e, "file watch error"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch { _watcher: watcher })
}
