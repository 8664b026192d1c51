//! The one harness every integration test goes through: stand-in enclaves
//! with certificates from a test CA, a proxy started in-process on port 0,
//! and real TLS clients (rustls here; curl and openssl as processes).
#![allow(dead_code)]

pub mod browser;
pub mod etcd;
pub mod process;
pub mod promql;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mse_proxy::config::routes::{validate_all, RouteSpec};
use mse_proxy::config::{Config, ControlLimits};
use mse_proxy::proxy::ProxyHandle;
use mse_proxy::routing::Route;
pub use mse_proxy::standin::{Ca, Enclave};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The SNI of every captured hello in tests/data.
pub const CAPTURED_SNI: &str = "app.example.test";

pub fn captured_hello() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/clienthello-curl-openssl.bin"
    ))
    .expect("captured hello")
}

/// Asserts an admin answer is `status` with an `error` naming `part`.
pub async fn assert_refused(r: reqwest::Response, status: u16, part: &str) {
    assert_eq!(r.status(), status);
    let body: serde_json::Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(part), "{body}");
}

/// Logs to the test's output when `RUST_LOG` is set; installs the crypto
/// provider reqwest needs.
pub fn init_logs() {
    // reqwest's clients need a process-wide crypto provider.
    mse_proxy::tls::install_default_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn spec(name: &str, hosts: &[&str], backends: &[String]) -> RouteSpec {
    RouteSpec::passthrough(name, hosts, backends)
}

pub fn routes(specs: &[RouteSpec]) -> Vec<Route> {
    validate_all(
        Path::new("test-routes"),
        specs,
        "route",
        &ControlLimits::default(),
    )
    .expect("valid test routes")
}

/// A config listening on an ephemeral loopback port; `extra` is more TOML
/// (top-level keys first, then tables such as `[timeouts]`). Its state is
/// kept in memory (no `state_dir`): in-process proxies must not share one
/// store through `state/` in the working directory. tests/state.rs runs
/// the binary with a state directory of its own.
pub fn config(extra: &str) -> Config {
    let text = format!("{extra}\n[[listener]]\naddress = \"127.0.0.1:0\"\n");
    let mut c = Config::from_toml(Path::new("test.toml"), &text).expect("valid test config");
    c.state_dir = None;
    c
}

/// Starts a proxy with `config` and `specs`.
pub fn proxy(mut config: Config, specs: &[RouteSpec]) -> mse_proxy::server::Server {
    // In memory, as for `config()`: a config built elsewhere may name a
    // state directory relative to the working directory (the repository).
    config.state_dir = None;
    init_logs();
    mse_proxy::server::start(config, routes(specs)).expect("proxy starts")
}

pub fn addr(p: &ProxyHandle) -> SocketAddr {
    p.local_addrs[0]
}

/// A stand-in enclave on 127.0.0.1:0 serving a CA-issued cert for `hosts`.
pub async fn enclave(ca: &Ca, hosts: &[&str], name: &str) -> (Enclave, mse_proxy::standin::Leaf) {
    let leaf = ca.issue(hosts).unwrap();
    let e = Enclave::spawn(
        listen_deep(),
        name,
        leaf.server_config(&[b"http/1.1"]).unwrap(),
    )
    .unwrap();
    (e, leaf)
}

/// A listener on 127.0.0.1:0 with a deep accept queue, as a real server
/// has: the proxy's workers connect on threads of their own, faster than a
/// stand-in on the test's runtime may accept, and a short queue would drop
/// SYNs (a second's retransmit, then the connect timeout) when the machine
/// is busy.
pub fn listen_deep() -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(4096).unwrap();
    s.set_nonblocking(true).unwrap();
    TcpListener::from_std(s.into()).unwrap()
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca: &Ca,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// A TCP connection to `to` from the loopback address `from` (another
/// client, as the per-client limits see it).
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    s.connect(to).await.unwrap()
}

/// [`tls_connect`] from the loopback address `from`.
pub async fn tls_connect_from(
    from: [u8; 4],
    addr: SocketAddr,
    sni: &str,
    ca: &Ca,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = connect_from(from, addr).await;
    let connector = TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// One GET through TLS; returns the body and the leaf certificate seen.
pub async fn get(addr: SocketAddr, sni: &str, ca: &Ca) -> std::io::Result<(String, Vec<u8>)> {
    let mut tls = tls_connect(addr, sni, ca).await?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    // `connection: close`: keep-alive backends (hyper) end the answer too.
    tls.write_all(format!("GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok((body, cert))
}

/// Reads until EOF or error, with a generous bound so a bug fails the test
/// instead of hanging it. Returns what was read and whether it ended in EOF.
pub async fn read_to_close(s: &mut TcpStream, bound: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let r = tokio::time::timeout(bound, s.read_to_end(&mut out)).await;
    match r {
        Ok(Ok(_)) => (out, true),
        Ok(Err(_)) => (out, true),
        Err(_) => (out, false),
    }
}

/// Writes the CA's certificate to a temp file, for external clients.
pub fn ca_file(ca: &Ca) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), ca.cert_pem()).unwrap();
    f
}

/// Runs an external command with a time bound, returning (status ok, stdout+stderr).
pub async fn run_tool(cmd: &str, args: &[String], stdin_null: bool) -> (bool, String) {
    let mut c = tokio::process::Command::new(cmd);
    c.args(args).kill_on_drop(true);
    if stdin_null {
        c.stdin(std::process::Stdio::null());
    }
    let out = tokio::time::timeout(Duration::from_secs(20), c.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd} hung"))
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed?): {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `mse-proxy check --config CONFIG` with the real binary: success and
/// its output.
pub async fn check_binary(config: &Path) -> (bool, String) {
    run_tool(
        env!("CARGO_BIN_EXE_mse-proxy"),
        &[
            "check".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        true,
    )
    .await
}

/// The status of one request (any client, any scheme).
pub async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

/// Polls `f` until true or `bound` passes (for state changes in other tasks).
pub async fn eventually(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

pub type Shared = Arc<mse_proxy::proxy::Shared>;

/// Runs `mse-proxy check` on a config file written into `dir` from
/// `text` (its `routes_file` relative to `dir`); returns the exit code and
/// stderr.
pub fn run_check(dir: &Path, text: &str) -> (Option<i32>, String) {
    let cfg_path = dir.join("proxy.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .args(["check", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a routes file atomically (write a sibling, rename over), as deploy
/// tools do.
pub fn write_routes(path: &Path, specs: &[RouteSpec]) {
    let text = toml::to_string(&mse_proxy::config::routes::RoutesFile {
        route: specs.to_vec(),
    })
    .unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes a routes file in place (truncate, then write), as some editors do.
pub fn write_routes_in_place(path: &Path, specs: &[RouteSpec]) {
    let text = toml::to_string(&mse_proxy::config::routes::RoutesFile {
        route: specs.to_vec(),
    })
    .unwrap();
    std::fs::write(path, text).unwrap();
}

/// A proxy whose routes come from a file in a temp dir, with an admin API on
/// an ephemeral port, the write token `TOKEN` (file `token`) and the read
/// token `READ_TOKEN` (file `read-token`), both mode 0600.
pub struct Live {
    pub dir: tempfile::TempDir,
    pub routes_path: std::path::PathBuf,
    pub server: mse_proxy::server::Server,
}

pub const TOKEN: &str = "test-token-0123456789";
pub const READ_TOKEN: &str = "read-token-0123456789";

/// Writes a token file as the proxy accepts it: the owner's only.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Live {
    pub fn start(specs: &[RouteSpec], extra: &str) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let routes_path = dir.path().join("routes.toml");
        write_routes(&routes_path, specs);
        let token_path = dir.path().join("token");
        write_secret(&token_path, &format!("{TOKEN}\n"));
        let read_path = dir.path().join("read-token");
        write_secret(&read_path, &format!("reader:{READ_TOKEN}\n"));
        let cfg = config(&format!(
            "routes_file = {:?}\n[reload]\ndebounce = \"20ms\"\n[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\nread_token_file = {:?}\n{extra}",
            routes_path, token_path, read_path
        ));
        init_logs();
        let routes =
            mse_proxy::config::routes::load_file(&routes_path, &cfg.control_limits).unwrap();
        let server = mse_proxy::server::start(cfg, routes).expect("proxy starts");
        Live {
            dir,
            routes_path,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addrs[0]
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.admin_addr.unwrap())
    }

    /// `GET` on the admin API with the read token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.admin(path))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// `PUT /routes/{name}` with the write token.
    pub async fn put_route(&self, name: &str, spec: &RouteSpec) -> reqwest::Response {
        reqwest::Client::new()
            .put(self.admin(&format!("/routes/{name}")))
            .bearer_auth(TOKEN)
            .json(spec)
            .send()
            .await
            .unwrap()
    }

    /// The text of `GET /metrics`.
    pub async fn scrape(&self) -> String {
        reqwest::get(self.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn applied(&self) -> u64 {
        self.server
            .control
            .stats
            .applied
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// An established TLS echo connection; `ping` checks it still relays.
pub struct EchoConn(pub TlsStream<TcpStream>);

impl EchoConn {
    pub async fn open(addr: SocketAddr, sni: &str, ca: &Ca) -> EchoConn {
        let mut c = EchoConn(tls_connect(addr, sni, ca).await.unwrap());
        assert!(c.ping("hello").await, "fresh echo connection must work");
        c
    }

    /// One echo round trip; false if the connection is gone.
    pub async fn ping(&mut self, msg: &str) -> bool {
        let fut = async {
            self.0.write_all(msg.as_bytes()).await?;
            let mut back = vec![0u8; msg.len()];
            self.0.read_exact(&mut back).await?;
            Ok::<_, std::io::Error>(back == msg.as_bytes())
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(10), fut).await,
            Ok(Ok(true))
        )
    }

    /// Waits until the proxy closes the connection; returns false if it
    /// stays open past `bound`.
    pub async fn closed_within(&mut self, bound: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(bound, self.0.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

// ---- Termination: platform certificates, HTTP backends, curl ----

use mse_proxy::config::terminate::UpstreamSpec;
use mse_proxy::standin::Leaf;

/// A terminate route reaching `backends` as `upstream` says.
pub fn terminate_spec(
    name: &str,
    hosts: &[&str],
    backends: &[SocketAddr],
    upstream: UpstreamSpec,
) -> RouteSpec {
    RouteSpec::terminate(name, hosts, backends, upstream)
}

/// Upstream settings pinning `leaf` by the SHA-256 of its DER.
pub fn pinned(leaf: &Leaf) -> UpstreamSpec {
    UpstreamSpec {
        pin_sha256: Some(mse_proxy::apps::derive::sha256_hex(leaf.cert_der.as_ref())),
        ..Default::default()
    }
}

/// The platform's certificate and key as PEM files in their own temp dir,
/// named by a `[[certificate]]` table, and replaceable on disk.
pub struct PlatformCert {
    pub dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl PlatformCert {
    pub fn new(leaf: &Leaf) -> PlatformCert {
        let c = PlatformCert::named("platform.crt", "platform.key");
        c.replace(leaf);
        c
    }

    /// Paths in a fresh temp dir, with nothing written yet.
    fn named(cert: &str, key: &str) -> PlatformCert {
        let dir = tempfile::tempdir().unwrap();
        PlatformCert {
            cert: dir.path().join(cert),
            key: dir.path().join(key),
            dir,
        }
    }

    /// Writes `leaf` over the files, each by rename, as deploy tools do.
    pub fn replace(&self, leaf: &Leaf) {
        for (path, text) in [(&self.cert, &leaf.cert_pem), (&self.key, &leaf.key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    /// Writes `leaf` over the files in place (truncate, then write), the
    /// certificate first, as tools that keep the inode do.
    pub fn replace_in_place(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&self.key, &leaf.key_pem).unwrap();
    }

    /// Laid out as a Kubernetes secret volume: `tls.crt` and `tls.key` are
    /// symlinks into `..data`, itself a symlink to a directory holding one
    /// version of the files; [`PlatformCert::swap_version`] renews.
    pub fn symlinked(leaf: &Leaf) -> PlatformCert {
        let c = PlatformCert::named("tls.crt", "tls.key");
        c.swap_version(leaf);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), c.dir.path().join(name)).unwrap();
        }
        c
    }

    /// Writes `leaf` into a new version directory and points `..data` at
    /// it by renaming a new symlink over the old one: the files named in
    /// the config are never written.
    pub fn swap_version(&self, leaf: &Leaf) {
        let root = self.dir.path();
        let n = std::fs::read_dir(root).unwrap().count();
        let version = format!("..v{n}");
        std::fs::create_dir(root.join(&version)).unwrap();
        std::fs::write(root.join(&version).join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(root.join(&version).join("tls.key"), &leaf.key_pem).unwrap();
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }

    /// The DER of the end-entity certificate now on disk.
    pub fn leaf_der(&self) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(&self.cert)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The `[[certificate]]` table naming these files.
    pub fn toml(&self) -> String {
        format!(
            "[[certificate]]\ncert = {:?}\nkey = {:?}\n",
            self.cert, self.key
        )
    }

    /// The same, with a `name` for its metrics.
    pub fn toml_named(&self, name: &str) -> String {
        format!("{}name = {name:?}\n", self.toml())
    }
}

/// An HTTP backend (hyper, HTTP/1.1 and HTTP/2 by ALPN or preface, or
/// only one of them: [`Speaks`]) that answers every request with `hello
/// from NAME over VERSION` and records each request's host; over TLS when
/// given a server config, plain TCP otherwise.
pub struct HttpBackend {
    pub addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The HTTP versions an [`HttpBackend`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    Both,
    Http1Only,
    Http2Only,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpBackend {
    pub async fn spawn(tls: Option<Arc<rustls::ServerConfig>>, name: &str) -> HttpBackend {
        Self::spawn_speaking(tls, name, Speaks::Both).await
    }

    pub async fn spawn_speaking(
        tls: Option<Arc<rustls::ServerConfig>>,
        name: &str,
        speaks: Speaks,
    ) -> HttpBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let name: Arc<str> = name.into();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    continue;
                };
                let (name, acceptor, log) = (Arc::clone(&name), acceptor.clone(), Arc::clone(&log));
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve_http(tls, name, speaks, log).await;
                            }
                        }
                        None => serve_http(tcp, name, speaks, log).await,
                    }
                });
            }
        });
        HttpBackend { addr, seen, task }
    }

    /// A TLS backend with a certificate from `ca` for `enclave.internal`,
    /// offering h2 and http/1.1; returns the leaf, to pin it.
    pub async fn tls(ca: &Ca, name: &str) -> (HttpBackend, Leaf) {
        let leaf = ca.issue(&["enclave.internal"]).unwrap();
        let cfg = leaf.server_config(&[b"h2", b"http/1.1"]).unwrap();
        (HttpBackend::spawn(Some(cfg), name).await, leaf)
    }

    /// A TLS backend as [`HttpBackend::tls`] serving only `speaks`, with
    /// the ALPN such a server has: none for an HTTP/1.1-only one (as many
    /// enclave servers are), `h2` alone for an HTTP/2-only one.
    pub async fn tls_speaking(ca: &Ca, name: &str, speaks: Speaks) -> (HttpBackend, Leaf) {
        let leaf = ca.issue(&["enclave.internal"]).unwrap();
        let alpn: &[&[u8]] = match speaks {
            Speaks::Both => &[b"h2", b"http/1.1"],
            Speaks::Http1Only => &[],
            Speaks::Http2Only => &[b"h2"],
        };
        let cfg = leaf.server_config(alpn).unwrap();
        (
            HttpBackend::spawn_speaking(Some(cfg), name, speaks).await,
            leaf,
        )
    }

    /// The host (HTTP/1.1 `host`, HTTP/2 `:authority`) of every request
    /// served so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_http<S>(
    io: S,
    name: Arc<str>,
    speaks: Speaks,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        seen.lock().unwrap().push(host);
        let body = format!("hello from {name} over {:?}\n", req.version());
        async move {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                hyper::body::Bytes::from(body),
            )))
        }
    });
    let mut b = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    b = match speaks {
        Speaks::Both => b,
        Speaks::Http1Only => b.http1_only(),
        Speaks::Http2Only => b.http2_only(),
    };
    let _ = b
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// `curl https://HOST/` through the proxy at `addr`, trusting `ca_pem`, with
/// `proto` (`--http1.1` or `--http2`). Returns success and the body followed
/// by one line with the HTTP version curl used.
pub async fn curl(addr: SocketAddr, host: &str, ca_pem: &Path, proto: &str) -> (bool, String) {
    let port = addr.port();
    run_tool(
        "curl",
        &[
            "-sS".into(),
            proto.into(),
            "--cacert".into(),
            ca_pem.display().to_string(),
            "--resolve".into(),
            format!("{host}:{port}:{}", addr.ip()),
            "-w".into(),
            "%{http_version}".into(),
            format!("https://{host}:{port}/"),
        ],
        true,
    )
    .await
}

/// Connections on `route` that ended with `outcome`, from the metrics.
pub fn outcomes(p: &ProxyHandle, route: &str, mode: &str, outcome: &str) -> u64 {
    p.shared
        .metrics
        .connections
        .with_label_values(&[route, mode, outcome])
        .get()
}

/// A real DNS server on loopback for tests that need DNS: dnsmasq (Debian
/// package `dnsmasq-base`) with no upstream, answering only what `args`
/// configure (`--host-record=...`, `--cname=...`, `--address=/name/` for
/// NXDOMAIN). Killed on drop.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Dnsmasq {
    pub async fn start(args: &[&str]) -> Dnsmasq {
        // dnsmasq binds the port for UDP and TCP; a port free for one may be
        // a live connection's ephemeral port for the other (other tests open
        // thousands), and then dnsmasq exits. Take a port free for both, and
        // try another if dnsmasq still fails to bind it.
        let mut why = String::new();
        for _ in 0..5 {
            match Self::try_start_on(free_udp_and_tcp_port(), args).await {
                Ok(d) => return d,
                Err(e) => why = e,
            }
        }
        panic!("dnsmasq did not start: {why}");
    }

    /// Stops this one and starts another on the same port with `args`: the
    /// DNS answers change under a running proxy.
    pub async fn restart(self, args: &[&str]) -> Dnsmasq {
        let port = self.addr.port();
        drop(self);
        Self::start_on(port, args).await
    }

    pub async fn start_on(port: u16, args: &[&str]) -> Dnsmasq {
        let mut why = String::new();
        for _ in 0..5 {
            match Self::try_start_on(port, args).await {
                Ok(d) => return d,
                Err(e) => why = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("dnsmasq did not start on port {port}: {why}");
    }

    async fn try_start_on(port: u16, args: &[&str]) -> Result<Dnsmasq, String> {
        let child = std::process::Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
                &format!("--port={port}"),
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq must be installed (Debian package dnsmasq-base; .ci/run installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut d = Dnsmasq { addr, child };
        // dnsmasq serves TCP too: ready once it accepts; gone if it exited.
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < end {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!("dnsmasq on port {port} exited: {status}"));
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(d);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("dnsmasq on port {port} did not accept within 10 s"))
    }
}

/// A loopback port nothing uses for UDP or TCP right now.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Metrics: scraping and checking the exposition ----

/// The value of the first sample line starting with `series` (name and
/// labels exactly as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Fails the test unless `promtool check metrics` accepts `text`.
pub async fn promtool_accepts(text: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls an async condition until true or `bound` passes.
pub async fn eventually_async<F, Fut>(bound: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f().await
}

/// Open sockets of this process. Pipes are left out on purpose: the splice
/// relay keeps a bounded per-thread pool of empty pipes, which grows by one
/// pipe the first time a worker thread relays, and that is not a leak.
pub fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| t.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

// ---- Apps: records through the admin API ----

/// An app record as the platform sends it (`self` trust, so no pin or
/// owner certificate); adjust fields with `rec["key"] = ...`.
pub fn app_record(
    id: u128,
    domain: &str,
    config: Option<&str>,
    node: SocketAddr,
    status: &str,
) -> serde_json::Value {
    let mut r = serde_json::json!({
        "id": uuid_of(id),
        "domain_name": domain,
        "ssl_certificate_origin": "self",
        "hardware": "2g-eu-001",
        "node": node.to_string(),
        "status": status,
    });
    if let Some(c) = config {
        r["config_domain_name"] = c.into();
    }
    r
}

/// A fixed UUID per number, for readable tests.
pub fn uuid_of(n: u128) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// `PUT /apps/{project}/{name}` with the token; status and JSON body.
pub async fn put_app(
    live: &Live,
    project: &str,
    name: &str,
    rec: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(live.admin(&format!("/apps/{project}/{name}")))
        .bearer_auth(TOKEN)
        .json(rec)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// `DELETE /apps/{project}/{name}` with the token; the status.
pub async fn delete_app(live: &Live, project: &str, name: &str) -> u16 {
    reqwest::Client::new()
        .delete(live.admin(&format!("/apps/{project}/{name}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A GET on the admin API with the read token; status and JSON body.
pub async fn admin_get(live: &Live, path: &str) -> (u16, serde_json::Value) {
    let resp = live.get(path).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// The fields of a 400 answer's violations, in order.
pub fn violation_fields(body: &serde_json::Value) -> Vec<String> {
    body["violations"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|x| x["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}
