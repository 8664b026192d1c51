//! File descriptors: each open connection holds two (client and upstream),
//! so `limits.max_connections` means nothing unless the process may open
//! twice as many. Many systems start services with a soft `RLIMIT_NOFILE`
//! of 1,024 and a much higher hard limit; the proxy raises the soft limit
//! to the hard one at start, and refuses a connection limit the result
//! cannot hold, naming both numbers, rather than failing connects with
//! EMFILE later (which would look like a backend failure).

/// Descriptors kept for everything but connections: listeners, the admin
/// API and its clients, the routes and certificate watches, DNS, etcd, log
/// files, the runtime's own.
pub const HEADROOM: u64 = 256;

/// Descriptors `max_connections` connections need at most.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(HEADROOM)
}

/// The error for a limit `fds` descriptors cannot hold, if it is one.
pub fn refusal(max_connections: usize, fds: u64) -> Option<String> {
    let need = needed(max_connections);
    (need > fds).then(|| {
        format!(
            "{max_connections} connections need up to {need} file descriptors (two each + \
             {HEADROOM}), but this process may open {fds} (RLIMIT_NOFILE); raise the limit \
             (`ulimit -n`, systemd `LimitNOFILE=`, docker `--ulimit nofile=`) or lower \
             limits.max_connections to at most {}",
            fds.saturating_sub(HEADROOM) / 2
        )
    })
}

/// Fits `config.max_connections` to `fds` descriptors: a value set in the
/// file that does not fit is an error; the default is lowered to fit (a
/// warning), so a stock config starts wherever the limit is low.
pub fn fit(config: &mut crate::config::Config, fds: u64) -> Result<(), String> {
    let Some(msg) = refusal(config.max_connections, fds) else {
        return Ok(());
    };
    let most = fds.saturating_sub(HEADROOM) / 2;
    if config.max_connections_set || most == 0 {
        return Err(msg);
    }
    tracing::warn!(
        fds,
        max_connections = most,
        "limits.max_connections is not set: {most} connections, what RLIMIT_NOFILE holds \
         (raise the limit for more)"
    );
    config.max_connections = most as usize;
    Ok(())
}

/// The most descriptors the process can get: the hard limit (what
/// [`raise`] raises the soft one to). `None` where unknown.
pub fn hard_limit() -> Option<u64> {
    imp::limits().map(|(_, hard)| hard)
}

/// Raises the soft limit to the hard one; the soft limit in force after.
pub fn raise() -> std::io::Result<u64> {
    imp::raise()
}

#[cfg(target_os = "linux")]
mod imp {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    pub fn limits() -> Option<(u64, u64)> {
        getrlimit(Resource::RLIMIT_NOFILE).ok()
    }

    pub fn raise() -> std::io::Result<u64> {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        if soft >= hard {
            return Ok(soft);
        }
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        Ok(hard)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn limits() -> Option<(u64, u64)> {
        None
    }

    pub fn raise() -> std::io::Result<u64> {
        Ok(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_a_connection_plus_headroom() {
        assert_eq!(needed(1000), 2256);
        assert_eq!(needed(usize::MAX), u64::MAX);
        assert!(refusal(1000, 2256).is_none());
        let e = refusal(1000, 1024).unwrap();
        assert!(e.contains("2256"), "{e}");
        assert!(e.contains("1024"), "{e}");
        assert!(e.contains("at most 384"), "{e}");
    }

    #[test]
    fn the_default_is_lowered_to_fit_and_a_set_value_refused() {
        let path = std::path::Path::new("p.toml");
        let mut c =
            crate::config::Config::from_toml(path, "[[listener]]\naddress = \"127.0.0.1:0\"\n")
                .unwrap();
        assert!(!c.max_connections_set);
        fit(&mut c, 20_000).unwrap();
        assert_eq!(c.max_connections, 9872);
        let mut c = crate::config::Config::from_toml(
            path,
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[limits]\nmax_connections = 100000\n",
        )
        .unwrap();
        assert!(fit(&mut c, 20_000).unwrap_err().contains("200256"));
        assert_eq!(c.max_connections, 100_000);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let after = raise().unwrap();
        assert_eq!(Some(after), hard_limit());
    }
}
