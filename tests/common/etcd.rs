//! A real etcd on loopback for the tests of the shared route store
//! (Debian package `etcd-server`; `.ci/run` installs it), in a temporary data
//! directory, and a link between a proxy and etcd that a test can cut.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mse_proxy::etcd::{Client, ConnectOptions, Tls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Etcd {
    pub client_addr: SocketAddr,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// With TLS: the server's flags, and a client set up to pass them.
    tls: Option<EtcdTls>,
    /// More server flags.
    extra: Vec<String>,
}

/// TLS for a test etcd: server certificate and key, and the CA it requires
/// client certificates from (`--client-cert-auth`).
pub struct EtcdTls {
    pub ca_pem: String,
    pub server: mse_proxy::standin::Leaf,
    pub client: mse_proxy::standin::Leaf,
}

impl Etcd {
    pub async fn start() -> Etcd {
        Self::start_with(None, None, &[]).await
    }

    /// On a chosen client port (a proxy may already be trying it).
    pub async fn start_on(port: u16) -> Etcd {
        Self::start_with(Some(port), None, &[]).await
    }

    /// Serving TLS only, and asking clients for a certificate.
    pub async fn start_tls(tls: EtcdTls) -> Etcd {
        Self::start_with(None, Some(tls), &[]).await
    }

    /// With more server flags (e.g. `--auth-token-ttl 1`).
    pub async fn start_args(extra: &[&str]) -> Etcd {
        Self::start_with(None, None, extra).await
    }

    /// Starts etcd, on fresh ports again when a try fails (most likely it
    /// could not bind: a port `free_port` handed out is free only until
    /// someone else takes it, and other threads and test binaries pick
    /// ports too).
    async fn start_with(port: Option<u16>, tls: Option<EtcdTls>, extra: &[&str]) -> Etcd {
        let mut e = Etcd {
            client_addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or_else(free_port))),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        let mut failures = Vec::new();
        for _ in 0..3 {
            match e.spawn().await {
                Ok(()) => return e,
                Err(why) => failures.push(why),
            }
            e.kill();
            // A data directory made on the old ports remembers them; the
            // log of this try is in `failures` already.
            let _ = std::fs::remove_dir_all(e.dir.path().join("data"));
            let _ = std::fs::remove_file(e.dir.path().join("etcd.log"));
            e.peer_port = free_port();
            if port.is_none() {
                e.client_addr.set_port(free_port());
            }
        }
        panic!("etcd did not start, three tries:\n{}", failures.join("\n"));
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr)
    }

    pub fn dir_path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A file in etcd's temporary directory.
    pub fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn connect_options(&self) -> ConnectOptions {
        let mut opts = ConnectOptions::new([self.endpoint()]);
        opts.tls = self.tls.as_ref().map(|t| Tls {
            ca_pem: Some(t.ca_pem.clone().into_bytes()),
            identity_pem: Some((
                t.client.cert_pem.clone().into_bytes(),
                t.client.key_pem.clone().into_bytes(),
            )),
            server_name: None,
        });
        opts
    }

    /// Spawns etcd and waits until it answers; an error, with the end of
    /// its log, if it exits first or does not answer in time.
    async fn spawn(&mut self) -> Result<(), String> {
        let mut tls_args = Vec::new();
        if let Some(t) = &self.tls {
            let (ca, cert, key) = (
                self.file("ca.pem", &t.ca_pem),
                self.file("server.pem", &t.server.cert_pem),
                self.file("server.key", &t.server.key_pem),
            );
            tls_args = vec![
                "--cert-file".to_string(),
                cert.display().to_string(),
                "--key-file".into(),
                key.display().to_string(),
                "--trusted-ca-file".into(),
                ca.display().to_string(),
                "--client-cert-auth".into(),
            ];
        }
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        // Appended to across restarts, so a failure shows what came before.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = std::process::Command::new("etcd")
            .args([
                "--name",
                "t",
                "--data-dir",
                self.dir.path().join("data").to_str().unwrap(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("t={peer}"),
                "--log-level",
                "warn",
            ])
            .args(&tls_args)
            .args(&self.extra)
            .env("ETCD_UNSUPPORTED_ARCH", "")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (Debian package etcd-server; .ci/run installs it)");
        self.child = Some(child);
        let opts = self.connect_options();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "{}: etcd exited ({status})\n{}",
                    self.client_addr,
                    self.log_tail()
                ));
            }
            let probe = async {
                let c = Client::connect(opts.clone()).await.ok()?;
                c.get("probe").await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{}: etcd did not answer in 30 s\n{}",
                    self.client_addr,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines etcd logged, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kills etcd (SIGKILL); its data stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a new, empty store on the same ports (disaster recovery from
    /// nothing): its revisions start again from 1.
    pub async fn replace_with_empty(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
        self.spawn().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await.unwrap_or_else(|e| panic!("{e}"));
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.connect_options()).await.unwrap()
    }

    /// Turns password authentication on, with `root` as its only user.
    pub async fn enable_auth(&self, password: &str) {
        use mse_proxy::etcd::proto::etcdserverpb as pb;
        let mut auth = self.client().await.auth();
        auth.user_add(pb::AuthUserAddRequest {
            name: "root".into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        // Some etcd versions have a root role from the start.
        let _ = auth
            .role_add(pb::AuthRoleAddRequest {
                name: "root".into(),
            })
            .await;
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .unwrap();
        auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay from a loopback port to `target`. `cut` closes every
/// connection through it and refuses new ones until `restore`: a proxy
/// behind it loses etcd while the other instances keep it.
pub struct Link {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn start(target: SocketAddr) -> Link {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let changed = Arc::new(Notify::new());
        let (c, n) = (Arc::clone(&cut), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut a, _)) = l.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let (c, n) = (Arc::clone(&c), Arc::clone(&n));
                tokio::spawn(async move {
                    let Ok(mut b) = TcpStream::connect(target).await else {
                        return;
                    };
                    let cut_now = async {
                        loop {
                            let woken = n.notified();
                            if c.load(Ordering::SeqCst) {
                                return;
                            }
                            woken.await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        () = cut_now => {}
                    }
                });
            }
        });
        Link {
            addr,
            cut,
            changed,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}
