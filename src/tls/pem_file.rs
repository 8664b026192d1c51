//! Reading a certificate or key file the config names, as a renewal may have
//! left it: only a regular file (symlinks followed), and at most
//! [`MAX_PEM_FILE`] bytes (the routes file goes through the same read, with
//! its own cap). A FIFO would hold the reading thread until some
//! writer came, and a device such as `/dev/zero` never ends; both are
//! refused, as is a file too large, with an error naming the file.

use std::io::Read;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A certificate chain or key is a few KiB; a file past this is a mistake (a
/// log, a bundle of everything), not something to hold in memory.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The file's bytes, or why not: one sentence naming the file.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_at_most(path, MAX_PEM_FILE).map_err(|why| format!("`{}`: {why}", path.display()))
}

/// The bytes of a regular file of at most `cap` bytes, or why not (the
/// reason alone: the caller names the file).
pub fn read_at_most(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let file = open(path).map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file ({}); refusing to read it",
            kind(&meta)
        ));
    }
    let too_large = || format!("larger than {cap} bytes; refusing to read it");
    if meta.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    // It may have grown since its size was taken.
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens for reading without blocking: a FIFO then opens at once (and is
/// refused by its type) instead of waiting for a writer. `O_NONBLOCK`
/// changes nothing for a regular file.
#[cfg(target_os = "linux")]
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

/// Elsewhere the type is checked before opening (a FIFO swapped in between
/// could still block the thread).
#[cfg(not(target_os = "linux"))]
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::File::open(path)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_and_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pem");
        std::fs::write(&p, b"pem").unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read(&p).unwrap(), b"pem");
        assert_eq!(read(&link).unwrap(), b"pem");
    }

    #[test]
    fn refuses_what_is_not_a_small_regular_file_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_FILE as usize + 1]).unwrap();
        let fifo = dir.path().join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let missing = dir.path().join("missing.pem");
        let cases = [
            (big.as_path(), "larger than 1048576 bytes"),
            (fifo.as_path(), "not a regular file (a FIFO)"),
            (dir.path(), "not a regular file (a directory)"),
            (Path::new("/dev/zero"), "not a regular file (a device)"),
            (missing.as_path(), "cannot read"),
        ];
        for (path, why) in cases {
            // A FIFO with no writer must not block this thread.
            let e = read(path).unwrap_err();
            assert!(e.starts_with(&format!("`{}`: ", path.display())), "{e}");
            assert!(e.contains(why), "{path:?}: {e}");
        }
        let exact = dir.path().join("exact.pem");
        std::fs::write(&exact, vec![b'a'; MAX_PEM_FILE as usize]).unwrap();
        assert_eq!(read(&exact).unwrap().len() as u64, MAX_PEM_FILE);
    }
}

/// Every PEM certificate in a file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certs(path, &read(path)?)
}

/// Every PEM certificate in `pem`, read from `path`; at least one.
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}`: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}`: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}
