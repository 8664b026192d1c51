//! The admin API over TLS, with real clients on both sides (rustls through
//! reqwest, curl): client certificates mapped to roles, tokens still
//! working over TLS, plain HTTP refused on a non-loopback address by
//! `check`, and `app plan --apply` speaking https.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use mse_proxy::standin::Leaf;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// The name the admin certificate is issued for; clients resolve it to
/// the admin listener's loopback address.
const ADMIN_HOST: &str = "admin.test";

/// The admin listener's certificate and the operators' client CA, as files.
struct AdminPki {
    server_ca: Ca,
    client_ca: Ca,
    dir: tempfile::TempDir,
}

impl AdminPki {
    fn new() -> AdminPki {
        let server_ca = Ca::new("admin server CA").unwrap();
        let client_ca = Ca::new("operators CA").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let leaf = server_ca.issue(&[ADMIN_HOST, "127.0.0.1"]).unwrap();
        std::fs::write(dir.path().join("admin.crt"), &leaf.cert_pem).unwrap();
        write_secret(&dir.path().join("admin.key"), &leaf.key_pem);
        std::fs::write(dir.path().join("clients.pem"), client_ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server-ca.pem"), server_ca.cert_pem()).unwrap();
        AdminPki {
            server_ca,
            client_ca,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[admin.tls]` tables, for `Live::start`'s extra admin TOML.
    fn toml(&self) -> String {
        format!(
            "[admin.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\
             [admin.tls.client_roles]\norchestrator = \"write\"\nprometheus = \"metrics\"\n",
            self.path("admin.crt"),
            self.path("admin.key"),
            self.path("clients.pem")
        )
    }

    /// A client certificate with this subject CN, from `ca`.
    fn client(ca: &Ca, cn: &str) -> Leaf {
        ca.issue(&[cn]).unwrap()
    }

    /// reqwest over rustls trusting the admin CA, with `cert` if given.
    fn http(&self, admin: SocketAddr, cert: Option<&Leaf>) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.cert_der().clone()).unwrap();
        let b = rustls::ClientConfig::builder().with_root_certificates(roots);
        let cfg = match cert {
            Some(l) => b
                .with_client_auth_cert(
                    vec![l.cert_der.clone()],
                    PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .resolve(ADMIN_HOST, admin)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

fn url(admin: SocketAddr, path: &str) -> String {
    format!("https://{ADMIN_HOST}:{}{path}", admin.port())
}

fn route(name: &str) -> mse_proxy::config::routes::RouteSpec {
    spec(
        name,
        &[&format!("{name}.example.test")],
        &["127.0.0.1:1".into()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_given_their_role_over_tls() {
    let pki = AdminPki::new();
    let live = Live::start(&[], &pki.toml());
    let admin = live.server.admin_addr.unwrap();
    let orchestrator = AdminPki::client(&pki.client_ca, "orchestrator");
    let prometheus = AdminPki::client(&pki.client_ca, "prometheus");
    let stranger = AdminPki::client(&pki.client_ca, "stranger");

    // The orchestrator's certificate writes, with no token.
    let http = pki.http(admin, Some(&orchestrator));
    let r = http
        .put(url(admin, "/routes/a"))
        .json(&route("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(status(http.get(url(admin, "/routes/a"))).await, 200);

    // A metrics certificate scrapes but does not read routes.
    let http = pki.http(admin, Some(&prometheus));
    assert_eq!(status(http.get(url(admin, "/metrics"))).await, 200);
    assert_eq!(status(http.get(url(admin, "/routes"))).await, 403);

    // A valid certificate with no role authenticates nobody; a token does.
    let http = pki.http(admin, Some(&stranger));
    assert_eq!(status(http.get(url(admin, "/routes"))).await, 401);
    assert_eq!(
        status(http.get(url(admin, "/routes")).bearer_auth(READ_TOKEN)).await,
        200
    );

    // No certificate: tokens and the open probes still work over TLS.
    let http = pki.http(admin, None);
    assert_eq!(status(http.get(url(admin, "/healthz"))).await, 200);
    assert_eq!(status(http.get(url(admin, "/routes"))).await, 401);
    let r = http
        .put(url(admin, "/routes/b"))
        .bearer_auth(TOKEN)
        .json(&route("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A certificate from another CA fails the handshake.
    let other = Ca::new("someone else").unwrap();
    let forged = AdminPki::client(&other, "orchestrator");
    let r = pki
        .http(admin, Some(&forged))
        .put(url(admin, "/routes/c"))
        .json(&route("c"))
        .send()
        .await;
    assert!(
        r.is_err(),
        "a foreign client certificate was accepted: {r:?}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{admin}/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_a_client_certificate() {
    let pki = AdminPki::new();
    let live = Live::start(&[], &pki.toml());
    let admin = live.server.admin_addr.unwrap();
    let leaf = AdminPki::client(&pki.client_ca, "orchestrator");
    std::fs::write(pki.path("client.crt"), &leaf.cert_pem).unwrap();
    write_secret(&pki.path("client.key"), &leaf.key_pem);
    let curl = |extra: Vec<String>| {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--cacert".into(),
            pki.path("server-ca.pem").display().to_string(),
            "--resolve".into(),
            format!("{ADMIN_HOST}:{}:127.0.0.1", admin.port()),
        ];
        args.extend(extra);
        args.push(url(admin, "/routes"));
        async move { run_tool("curl", &args, true).await }
    };
    let (ok, out) = curl(vec![
        "--cert".into(),
        pki.path("client.crt").display().to_string(),
        "--key".into(),
        pki.path("client.key").display().to_string(),
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "200");
    let (ok, out) = curl(vec![]).await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "401");
    let (ok, out) = curl(vec![
        "-H".into(),
        format!("Authorization: bearer {READ_TOKEN}"),
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "200");
}

/// `mse-proxy check` on an admin section `admin` (with a valid token file).
async fn check(admin: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("token"), &format!("{TOKEN}\n"));
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[admin]\ntoken_file = \"token\"\n{admin}"
        ),
    )
    .unwrap();
    check_binary(&config).await
}

#[tokio::test]
async fn check_refuses_plaintext_on_a_non_loopback_address() {
    for address in ["0.0.0.0:9090", "[::]:9090", "10.1.2.3:9090"] {
        let (ok, out) = check(&format!("address = {address:?}\n")).await;
        assert!(!ok, "{address}: {out}");
        assert!(
            out.contains(&format!(
                "admin.address: {address} is not a loopback address"
            )) || out.contains(&format!(
                "admin.address: {} is not a loopback address",
                address.parse::<SocketAddr>().unwrap()
            )),
            "{out}"
        );
        assert!(out.contains("allow_plaintext"), "{out}");
    }
    let (ok, out) = check("address = \"0.0.0.0:9090\"\nallow_plaintext = true\n").await;
    assert!(ok, "{out}");
    let (ok, out) = check("address = \"127.0.0.1:9090\"\n").await;
    assert!(ok, "{out}");
    let pki = AdminPki::new();
    let (ok, out) = check(&format!("address = \"0.0.0.0:9090\"\n{}", pki.toml())).await;
    assert!(ok, "{out}");
    // TLS files that do not load are named.
    let (ok, out) = check(
        "address = \"0.0.0.0:9090\"\n[admin.tls]\ncert = \"missing.crt\"\nkey = \"missing.key\"\n",
    )
    .await;
    assert!(!ok);
    assert!(
        out.contains("admin.tls.cert: `") && out.contains("missing.crt`: cannot read"),
        "{out}"
    );
    assert!(out.contains("admin.tls.key: `"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_plan_apply_speaks_https_with_the_ca_given() {
    let pki = AdminPki::new();
    let live = Live::start(
        &[],
        &format!(
            "{}\n[apps]\nplatform_domains = [\"apps.example.test\"]\n",
            pki.toml()
        ),
    );
    let admin = live.server.admin_addr.unwrap();
    let app_config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/apps/example/mse.toml"
    );
    let token = live.dir.path().join("token");
    // Authenticated by the token file, or by `auth` instead (other flags).
    let run_as = |base: String, ca: Option<PathBuf>, auth: Vec<String>| {
        let token = token.clone();
        async move {
            let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"));
            c.args(["app", "plan", "--app-config", app_config])
                .args(["--node", "127.0.0.1:1", "--app-domain", "apps.example.test"])
                .args(["--apply", &base])
                .args(["--timeout", "10s"]);
            if auth.is_empty() {
                c.arg("--token-file").arg(&token);
            }
            c.args(&auth);
            if let Some(ca) = ca {
                c.arg("--ca").arg(ca);
            }
            let out = c.output().await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let run = |base: String, ca: Option<PathBuf>| run_as(base, ca, Vec::new());
    let base = format!("https://127.0.0.1:{}", admin.port());
    let (ok, err) = run(base.clone(), None).await;
    assert!(!ok);
    assert!(err.contains("give --ca FILE"), "{err}");
    // Trusting another CA: the handshake fails, nothing is registered.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other.path(), Ca::new("other").unwrap().cert_pem()).unwrap();
    let (ok, err) = run(base.clone(), Some(other.path().to_path_buf())).await;
    assert!(!ok, "a certificate from an untrusted CA was accepted");
    assert!(err.contains("GET https://127.0.0.1"), "{err}");
    let registered = || async {
        pki.http(admin, None)
            .get(url(admin, "/apps/my_project/test"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(registered().await, 404);
    // With the admin CA: registered over https.
    let (ok, err) = run(base.clone(), Some(pki.path("server-ca.pem"))).await;
    assert!(ok, "{err}");
    assert!(err.contains("applied: PUT https://127.0.0.1"), "{err}");
    assert_eq!(registered().await, 200);

    // The orchestrator's client certificate instead of a token; a metrics
    // one may not write.
    for (cn, want_ok) in [("orchestrator", true), ("prometheus", false)] {
        let leaf = AdminPki::client(&pki.client_ca, cn);
        std::fs::write(pki.path("client.crt"), &leaf.cert_pem).unwrap();
        write_secret(&pki.path("client.key"), &leaf.key_pem);
        let auth = vec![
            "--cert".to_string(),
            pki.path("client.crt").display().to_string(),
            "--key".to_string(),
            pki.path("client.key").display().to_string(),
        ];
        let (ok, err) = run_as(base.clone(), Some(pki.path("server-ca.pem")), auth).await;
        assert_eq!(ok, want_ok, "{cn}: {err}");
        if !want_ok {
            assert!(err.contains("403"), "{err}");
        }
    }
}

/// The leaf certificate the admin listener shows now.
async fn served_cert(pki: &AdminPki, admin: SocketAddr) -> Vec<u8> {
    let tls = tls_connect(admin, ADMIN_HOST, &pki.server_ca)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_admin_certificate_is_served_after_sighup_and_a_broken_one_is_not() {
    let pki = AdminPki::new();
    let live = Live::start(&[], &pki.toml());
    let admin = live.server.admin_addr.unwrap();
    let first = served_cert(&pki, admin).await;

    let renewed = pki.server_ca.issue(&[ADMIN_HOST, "127.0.0.1"]).unwrap();
    std::fs::write(pki.path("admin.crt"), &renewed.cert_pem).unwrap();
    write_secret(&pki.path("admin.key"), &renewed.key_pem);
    assert_eq!(served_cert(&pki, admin).await, first, "read before SIGHUP");
    live.server.reload_admin().await;
    assert_eq!(served_cert(&pki, admin).await, renewed.cert_der.as_ref());

    // A certificate beside a key it does not go with: the renewed pair stays.
    let other = pki.server_ca.issue(&[ADMIN_HOST]).unwrap();
    std::fs::write(pki.path("admin.crt"), &other.cert_pem).unwrap();
    live.server.reload_admin().await;
    assert_eq!(served_cert(&pki, admin).await, renewed.cert_der.as_ref());
    assert_eq!(
        status(
            pki.http(admin, None)
                .get(url(admin, "/routes"))
                .bearer_auth(READ_TOKEN)
        )
        .await,
        200
    );
}
