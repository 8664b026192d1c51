//! The real binary as its own process, for what an in-process proxy cannot
//! show: a restart, SIGTERM and SIGKILL. It runs on a config file in a
//! directory the test owns (so its `state/` is there too), with a JSON log
//! read in a thread (so the pipe never fills) for the listening addresses.
//! Also for what the process itself measures: its RSS, its descriptors and
//! their limits.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, TOKEN};

/// A config for [`ProxyProcess`]: loopback listener and admin API on port
/// 0, the write token in `token` beside it, a JSON log; `extra` is more
/// TOML (top-level keys first, then tables).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    super::write_secret(&dir.join("token"), &format!("{TOKEN}\n"));
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "{extra}\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
             [admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
             [log]\nformat = \"json\"\naccess_log = false\n"
        ),
    )
    .unwrap();
    path
}

pub struct ProxyProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Upgrades, as the log tells them: a new process's pid once the old
    /// one has stopped accepting and reports it ("upgrade: the new process
    /// serves; handing over": every later connection reaches the new
    /// one), or 0 when the running one reports a failed upgrade.
    upgrades: std::sync::Mutex<std::sync::mpsc::Receiver<u32>>,
    /// Processes started by upgrades (not our children): killed on drop.
    successors: Vec<u32>,
}

impl ProxyProcess {
    /// Starts `mse-proxy --config config` and waits for its listener and
    /// admin API to be announced.
    pub async fn start(config: &Path) -> ProxyProcess {
        Self::start_with(&[], config, true).await
    }

    /// The same, run through `wrapper`: a command that execs the rest with
    /// the same pid, e.g. `prlimit --nofile=1024:4096 --`.
    pub async fn start_under(wrapper: &[&str], config: &Path) -> ProxyProcess {
        Self::start_with(wrapper, config, true).await
    }

    /// Without `keep_log`, the log pipe is closed once both addresses are
    /// announced (a log destination that breaks).
    pub async fn start_with(wrapper: &[&str], config: &Path, keep_log: bool) -> ProxyProcess {
        // The admin calls below go through reqwest, which needs it.
        mse_proxy::tls::install_default_provider();
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
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut announced = 0;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // From the first `{`: another process writing to the same
                // stderr (an upgrade's) may have put text before it.
                let json = line.find('{').map_or("", |i| &line[i..]);
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                let msg = v["fields"]["message"].as_str().unwrap_or_default();
                if msg == "upgrade: the new process serves; handing over" {
                    let _ = up_tx.send(v["fields"]["pid"].as_u64().unwrap_or(0) as u32);
                } else if msg == "upgrade failed: this process serves on" {
                    let _ = up_tx.send(0);
                }
                if let Some(a) = v["fields"]["address"].as_str() {
                    if msg == "listening" || msg == "admin API listening" {
                        let _ = tx.send((msg == "listening", a.parse::<SocketAddr>().unwrap()));
                        announced += 1;
                    }
                }
                eprintln!("proxy: {line}");
                if !keep_log && announced == 2 {
                    return;
                }
            }
        });
        let (addr, admin) = tokio::task::spawn_blocking(move || {
            let (mut addr, mut admin) = (None, None);
            while addr.is_none() || admin.is_none() {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok((true, a)) => addr = Some(a),
                    Ok((false, a)) => admin = Some(a),
                    Err(_) => panic!("the proxy did not announce its listener and admin API"),
                }
            }
            (addr.unwrap(), admin.unwrap())
        })
        .await
        .unwrap();
        ProxyProcess {
            child: Some(child),
            addr,
            admin,
            upgrades: std::sync::Mutex::new(up_rx),
            successors: Vec::new(),
        }
    }

    /// The process serving now: the last upgrade's, or the one started.
    pub fn serving_pid(&self) -> u32 {
        self.successors
            .last()
            .copied()
            .unwrap_or_else(|| self.pid())
    }

    /// Sends SIGUSR2 to the serving process and waits (bounded) for the
    /// next upgrade's end in the log: `Some((new pid, signal → serving))`,
    /// or `None` when the old process reports that it failed.
    pub async fn upgrade(&mut self) -> Option<(u32, Duration)> {
        let old = self.serving_pid();
        let began = std::time::Instant::now();
        let status = Command::new("kill")
            .args(["-USR2", &old.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let pid = self.next_upgrade().await?;
        Some((pid, began.elapsed()))
    }

    /// The next upgrade the log reports (see [`ProxyProcess::upgrade`]).
    pub async fn next_upgrade(&mut self) -> Option<u32> {
        let pid = tokio::task::block_in_place(|| {
            self.upgrades
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60))
                .expect("the log reports the upgrade's end")
        });
        if pid == 0 {
            return None;
        }
        self.successors.push(pid);
        Some(pid)
    }

    /// Whether process `pid` is still there (a zombie counts as gone).
    pub fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the exit; returns whether it exited cleanly.
    pub async fn terminate(mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut child = self.child.take().unwrap();
        let mut code = None;
        eventually(Duration::from_secs(30), || {
            code = child.try_wait().unwrap();
            code.is_some()
        })
        .await;
        code.is_some_and(|c| c.success())
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A GET on the admin API (with the token): status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        // The write token reads too.
        let resp = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }

    /// A PUT with the token: status and JSON body.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .put(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }

    /// The value of an unlabelled metric family on `/metrics`.
    pub async fn metric(&self, family: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(family)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {family} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// `(soft, hard)` of a process's open-files limit, from /proc.
pub fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A config for [`ProxyProcess`] serving one passthrough route `ok` for
/// `ok.example.test` to `backend`, from a routes file beside it.
/// A `[limits]` table for a test that opens thousands of connections from
/// one client to one route: `max_connections` in all, no per-client or
/// per-route cap or rate.
pub fn one_client_limits(max_connections: usize) -> String {
    format!(
        "[limits]\nmax_connections = {max_connections}\n\
         max_unrouted_per_client = 0\nmax_connections_per_client = 0\n\
         client_new_connections_per_second = 0\nroute_new_connections_per_second = 0\n"
    )
}

/// A proxy process (config `extra` beside the route) whose one route,
/// `ok.example.test`, passes through to a stand-in enclave answering
/// "hello from ok" with a certificate from the returned CA. The directory
/// holds the config and state: keep it as long as the proxy.
pub async fn proxy_to_enclave(
    extra: &str,
) -> (
    super::Ca,
    mse_proxy::standin::Enclave,
    tempfile::TempDir,
    ProxyProcess,
) {
    let ca = super::Ca::new("test CA").unwrap();
    let (e, _) = super::enclave(&ca, &["ok.example.test"], "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), e.addr, extra);
    let proxy = ProxyProcess::start(&cfg).await;
    (ca, e, dir, proxy)
}

pub fn write_config_with_route(dir: &Path, backend: SocketAddr, extra: &str) -> PathBuf {
    super::write_routes(
        &dir.join("routes.toml"),
        &[super::spec(
            "ok",
            &["ok.example.test"],
            &[backend.to_string()],
        )],
    );
    write_config(dir, &format!("routes_file = \"routes.toml\"\n{extra}"))
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.successors {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// `mse-proxy upgrade --config cfg [--binary bin]`: exit code and stdout.
pub fn upgrade_cmd(cfg: &Path, binary: Option<&Path>) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mse-proxy"));
    cmd.arg("upgrade").arg("--config").arg(cfg);
    if let Some(b) = binary {
        cmd.arg("--binary").arg(b);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Makes a file immutable (`chattr +i`) until dropped: even root cannot
/// write it then, where a chmod would not stop root.
pub struct Immutable(std::path::PathBuf);

impl Immutable {
    pub fn set(path: &std::path::Path) -> Immutable {
        let out = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("chattr (e2fsprogs) is needed");
        assert!(
            out.status.success(),
            "chattr +i failed (the test needs a file system with the immutable flag): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// `mse-proxy state <args> --config cfg`: exit code and stderr.
pub fn state_cmd(cfg: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .arg("state")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
