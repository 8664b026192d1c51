//! The real binary as its own process, for tests that measure the process
//! itself (its RSS, its file descriptors, its limits).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{spec, write_routes};

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary serving one route to `backend`, on an ephemeral port.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// `extra` is appended to the config (after the listener, so tables
    /// only). With `keep_log`, the log keeps being read (and shown if the test
    /// fails) so the proxy never blocks on a full pipe; without it, the pipe
    /// is closed right after the listening line.
    pub async fn spawn(backend: std::net::SocketAddr, extra: &str, keep_log: bool) -> ProxyProcess {
        Self::spawn_under(&[], backend, extra, keep_log).await
    }

    /// The same, run through `wrapper` (a command that execs the rest, e.g.
    /// `prlimit --nofile=1024:4096 --`).
    pub async fn spawn_under(
        wrapper: &[&str],
        backend: std::net::SocketAddr,
        extra: &str,
        keep_log: bool,
    ) -> ProxyProcess {
        let dir = tempfile::tempdir().unwrap();
        write_routes(
            &dir.path().join("routes.toml"),
            &[spec("ok", &["ok.example.test"], &[backend.to_string()])],
        );
        let cfg = dir.path().join("proxy.toml");
        std::fs::write(
            &cfg,
            format!(
                "routes_file = \"routes.toml\"\nworkers = 1\n[[listener]]\naddress = \"127.0.0.1:0\"\n{extra}"
            ),
        )
        .unwrap();
        let bin = env!("CARGO_BIN_EXE_mse-proxy");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // The listening address, from the JSON log line that announces it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["fields"]["message"] == "listening" {
                    if let (Some(tx), Some(a)) = (tx.take(), v["fields"]["address"].as_str()) {
                        let _ = tx.send(a.parse::<std::net::SocketAddr>().unwrap());
                    }
                    if !keep_log {
                        return;
                    }
                }
                eprintln!("proxy: {line}");
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the proxy did not start listening");
        ProxyProcess {
            child: Child(child),
            addr,
            _dir: dir,
        }
    }
}
