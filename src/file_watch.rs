//! What the file watches (routes file, certificates, admin tokens) share:
//! which directory to watch, what an event says about a file, how long a
//! slow writer is waited for, and stamps that tell whether a file changed
//! during a read. A leaf, so every watch and the reconciler's debounce use
//! the same rules without depending on each other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::EventKind;

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
