//! The container's configuration: `config/docker.toml` is valid, listens on
//! 443 and serves the admin API where the Dockerfile's EXPOSE and
//! HEALTHCHECK expect it, and passes `mse-proxy check` with a routes file
//! beside it. (No Docker engine is needed: the image itself is not built.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mse_proxy::config::{Config, TokenSource};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the image expects the config (the Dockerfile's CMD).
const MOUNTED: &str = "/etc/mse-proxy/proxy.toml";
/// The image's state volume (config/docker.toml's `state_dir`).
const STATE: &str = "/var/lib/mse-proxy";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// config/docker.toml as the container sees it.
fn docker_config() -> Config {
    Config::from_toml(Path::new(MOUNTED), &read("config/docker.toml"))
        .unwrap_or_else(|e| panic!("config/docker.toml is invalid:\n{e}"))
}

/// The Dockerfile's instructions, continuation lines joined and comments
/// dropped: (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

fn instruction(all: &[(String, String)], word: &str) -> Vec<String> {
    all.iter()
        .filter(|(w, _)| w == word)
        .map(|(_, a)| a.clone())
        .collect()
}

#[test]
fn docker_config_is_valid_and_listens_on_443() {
    let c = docker_config();
    let v4: SocketAddr = "0.0.0.0:443".parse().unwrap();
    let v6: SocketAddr = "[::]:443".parse().unwrap();
    let addrs: Vec<SocketAddr> = c.listeners.iter().map(|l| l.address).collect();
    assert_eq!(addrs, [v4, v6]);
    assert!(c.listeners.iter().all(|l| l.address.port() == 443));

    let admin = c.admin.as_ref().expect("the container runs the admin API");
    assert_eq!(admin.address, "0.0.0.0:9090".parse::<SocketAddr>().unwrap());
    assert_eq!(
        admin.token,
        TokenSource::File(PathBuf::from("/run/secrets/mse-proxy-admin-token"))
    );
    // Published on 0.0.0.0: TLS, not plain HTTP.
    let tls = admin
        .tls
        .as_ref()
        .expect("the published admin API speaks TLS");
    assert_eq!(tls.cert, Path::new("/etc/mse-proxy/admin.crt"));
    assert_eq!(tls.key, Path::new("/etc/mse-proxy/admin.key"));
    assert!(!admin.allow_plaintext);
    assert_eq!(
        c.routes_file.as_deref(),
        Some(Path::new("/etc/mse-proxy/routes.toml"))
    );
    assert!(c.metrics_per_route);
    // The state lives on the image's writable volume, not in the read-only
    // config directory.
    assert_eq!(c.state_dir.as_deref(), Some(Path::new(STATE)));
    // Graceful stop fits in the --stop-timeout the README's `docker run` gives.
    assert!(c.timeouts.shutdown_grace.as_secs() < 35);
    assert!(read("README.md").contains("--stop-timeout 35"));
}

#[test]
fn docker_config_passes_check_with_the_example_routes_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    // The state volume moved into the temp dir: check creates and writes
    // the directory, and must not touch this machine's /var/lib.
    let state = dir.path().join("state-volume");
    // `check` reads the admin token file as the proxy would: mounted where
    // the README's `docker run ... check` mounts it, owner-only.
    let token = dir.path().join("mse-proxy-admin-token");
    std::fs::write(&token, "ops:0123456789abcdef0123456789abcdef\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o400)).unwrap();
    // The admin listener's certificate and key beside the config.
    let ca = mse_proxy::standin::Ca::new("admin CA").unwrap();
    let leaf = ca.issue(&["mse-proxy-admin"]).unwrap();
    std::fs::write(dir.path().join("admin.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("admin.key"), &leaf.key_pem).unwrap();
    let text = read("config/docker.toml");
    assert!(text.contains("/run/secrets/mse-proxy-admin-token"));
    let moved = text
        .replace(&format!("{STATE:?}"), &format!("{state:?}"))
        .replace(
            "/run/secrets/mse-proxy-admin-token",
            &token.display().to_string(),
        );
    assert!(
        moved.contains(&format!("{state:?}")),
        "config/docker.toml names {STATE}"
    );
    std::fs::write(&config, moved).unwrap();
    std::fs::write(
        dir.path().join("routes.toml"),
        read("config/routes.example.toml"),
    )
    .unwrap();
    let (c, routes) = mse_proxy::server::check(&config)
        .unwrap_or_else(|e| panic!("mse-proxy check fails on config/docker.toml:\n{e}"));
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(routes.len(), 1);
    assert!(state.is_dir(), "check creates the state directory");
}

#[test]
fn dockerfile_matches_the_docker_config() {
    let c = docker_config();
    let df = dockerfile();
    let admin_port = c.admin.as_ref().unwrap().address.port();

    let exposed: Vec<u16> = instruction(&df, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    for port in c
        .listeners
        .iter()
        .map(|l| l.address.port())
        .chain([admin_port])
    {
        assert!(
            exposed.contains(&port),
            "EXPOSE {exposed:?} lacks port {port}"
        );
    }

    let health = instruction(&df, "HEALTHCHECK").join(" ");
    let scheme = if c.admin.as_ref().unwrap().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://127.0.0.1:{admin_port}/healthz");
    assert!(
        health.contains(&format!("\"{url}\"")),
        "HEALTHCHECK does not call {url}: {health}"
    );
    if scheme == "https" {
        // The certificate names the operators' address, not 127.0.0.1.
        assert!(health.contains("--insecure"), "{health}");
    }
    assert!(
        health.contains("--fail"),
        "HEALTHCHECK must fail on HTTP errors"
    );

    let cmd = instruction(&df, "CMD").join(" ");
    assert!(cmd.contains(MOUNTED), "CMD does not load {MOUNTED}: {cmd}");
    let volume = instruction(&df, "VOLUME").join(" ");
    assert!(volume.contains("/etc/mse-proxy"), "VOLUME: {volume}");
    assert!(volume.contains(STATE), "no VOLUME for the state: {volume}");
    let setup = instruction(&df, "RUN").join("\n");
    assert!(
        setup.contains(&format!("chown 10001:10001 {STATE}")),
        "the state volume must be writable by uid 10001"
    );
    let readme = read("README.md");
    assert!(
        readme
            .lines()
            .any(|l| l.contains(&format!(":{STATE}")) && !l.contains(":ro")),
        "the README's docker run does not mount a writable state volume"
    );

    let user = instruction(&df, "USER");
    assert_eq!(user.last().map(String::as_str), Some("10001:10001"));

    let froms = instruction(&df, "FROM");
    assert_eq!(froms.len(), 2, "build and runtime stages: {froms:?}");
    assert!(froms[0].starts_with("rust:1-bookworm"), "{froms:?}");
    let run = instruction(&df, "RUN").join("\n");
    assert!(run.contains("cargo build --release --locked --bin mse-proxy"));
    assert!(run.contains("setcap cap_net_bind_service=+ep /usr/local/bin/mse-proxy"));
    for apt in run.lines().filter(|l| l.contains("apt-get install")) {
        assert!(apt.contains("--no-install-recommends"), "{apt}");
    }

    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
    assert!(ignore.lines().any(|l| l.trim() == ".git/"));
}

/// The Debian packages in `scripts/build-deps`, comments dropped.
fn build_deps() -> Vec<String> {
    read("scripts/build-deps")
        .lines()
        .filter_map(|l| l.split('#').next())
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Crates that run `protoc` in their build (or bundle one).
const NEEDS_PROTOC: &[&str] = &[
    "prost-build",
    "tonic-build",
    "tonic-prost-build",
    "protobuf-src",
    "protoc-bin-vendored",
];

#[test]
fn the_build_stage_installs_what_the_dependency_graph_needs() {
    // What building the binary compiles: normal and build dependencies on
    // every target (dev-dependencies such as the stub generator are not
    // part of a build).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(ROOT)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal,build",
            "--target",
            "all",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree (it reads the graph offline: `cargo fetch --locked` first, as scripts/test does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(crates.contains("tonic"), "the graph was read: {crates:?}");
    for c in NEEDS_PROTOC {
        assert!(
            !crates.contains(*c),
            "`{c}` is in the build graph: the build would need protoc"
        );
    }
    let deps = build_deps();
    if crates.contains("cc") {
        for p in ["gcc", "libc6-dev"] {
            assert!(deps.iter().any(|d| d == p), "the cc crate needs {p}");
        }
    }
    if crates.contains("tikv-jemalloc-sys") {
        assert!(
            deps.iter().any(|d| d == "make"),
            "tikv-jemalloc-sys builds jemalloc with make"
        );
    }
    if crates.contains("bindgen") {
        assert!(
            deps.iter().any(|d| d == "libclang-dev"),
            "bindgen needs libclang"
        );
    }

    // The build stage installs exactly that list, and fails if a build
    // script still reaches for protoc.
    let df = dockerfile();
    let build_stage: Vec<&(String, String)> = df
        .iter()
        .take_while(|(w, a)| w != "FROM" || a.contains("AS build"))
        .collect();
    let stage = |word: &str| -> String {
        build_stage
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        stage("COPY").contains("scripts/build-deps /tmp/build-deps"),
        "the build stage does not copy scripts/build-deps"
    );
    let run = stage("RUN");
    assert!(
        run.lines()
            .any(|l| l.contains("/tmp/build-deps") && l.contains("apt-get install")),
        "the build stage does not install scripts/build-deps: {run}"
    );
    assert!(
        stage("ENV").contains("PROTOC=/bin/false"),
        "the build stage lets a build script use protoc"
    );
    let ci = read(".ci/run");
    assert!(
        ci.contains("scripts/build-deps") && ci.contains("PROTOC=/bin/false"),
        ".ci/run must install scripts/build-deps and build with PROTOC=/bin/false"
    );
}
