//! Files the control plane reads (a route's `ca_file`, the routes file) are
//! read as regular files of bounded size only, and a route's `ca_file` off
//! the reconciler: a FIFO (which would block its reader until a writer
//! came) or `/dev/zero` (which never ends) is refused with the file named,
//! at once, and expiry goes on meanwhile.

mod common;

use std::time::Duration;

use common::*;
use mse_proxy::config::terminate::UpstreamSpec;
use serde_json::Value;

fn with_ca_file(name: &str, path: &std::path::Path) -> mse_proxy::config::routes::RouteSpec {
    terminate_spec(
        name,
        &[&format!("{name}.example.test")],
        &["127.0.0.1:1".parse().unwrap()],
        UpstreamSpec {
            ca_file: Some(path.display().to_string()),
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_dev_zero_as_ca_file_is_refused_and_expiry_stays_on_time() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["exp.example.test"], "exp").await;
    let mut exp = spec("exp", &["exp.example.test"], &[e.addr.to_string()]);
    let start = tokio::time::Instant::now();
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    exp.expires_at = Some(expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let live = Live::start(&[exp], "");
    let mut conn = EchoConn::open(live.addr(), "exp.example.test", &ca).await;

    let fifo = live.dir.path().join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let zero = std::path::PathBuf::from("/dev/zero");
    for (name, path, kind) in [("f", &fifo, "a FIFO"), ("z", &zero, "a device")] {
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            live.put_route(name, &with_ca_file(name, path)),
        )
        .await
        .unwrap_or_else(|_| panic!("a PUT with {} as ca_file hung", path.display()));
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["details"][0],
            format!(
                "admin API: route `{name}`.upstream.ca_file: `{}`: not a regular file ({kind}); refusing to read it",
                path.display()
            ),
            "{body}"
        );
    }
    // The reconciler was never held: the expiring route closes on time.
    assert!(conn.ping("before expiry").await);
    let bound = Duration::from_millis(2500).saturating_sub(start.elapsed());
    assert!(
        conn.closed_within(bound).await,
        "connection still open 0.5 s after its route expired"
    );
    assert!(
        chrono::Utc::now() >= expires,
        "closed before the route expired"
    );
    assert!(live.server.control.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_routes_file_is_refused_by_check_and_by_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("routes.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        "routes_file = \"routes.toml\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let args = [
        "check".to_string(),
        "--config".into(),
        cfg.display().to_string(),
    ];
    let (ok, text) = run_tool(env!("CARGO_BIN_EXE_mse-proxy"), &args, true).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "{}: not a regular file (a FIFO); refusing to read it",
            fifo.display()
        )),
        "{text}"
    );

    // A running proxy whose routes file becomes a FIFO keeps its routes.
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["a.example.test"], "a").await;
    let live = Live::start(&[spec("a", &["a.example.test"], &[e.addr.to_string()])], "");
    std::fs::remove_file(&live.routes_path).unwrap();
    nix::unistd::mkfifo(&live.routes_path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), live.server.control.reload_file())
        .await
        .expect("a reload of a FIFO does not hang");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("not a regular file (a FIFO)"), "{e}");
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from a"
    );
    assert!(live.server.control.ping().await.is_ok());
}

/// A routes file of `n` passthrough routes, written as TOML text directly
/// (serialising that many specs in a debug build is itself slow).
fn big_routes_file(n: usize) -> String {
    let mut text = String::with_capacity(n * 90);
    for i in 0..n {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\nhosts = [\"h{i}.big.example.test\"]\nbackends = [\"127.0.0.1:1\"]\n\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_big_routes_file_is_read_pings_are_answered_and_expiry_is_on_time() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["exp.example.test"], "exp").await;
    let live = Live::start(&[], "");
    let mut exp = spec("exp", &["exp.example.test"], &[e.addr.to_string()]);
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(2500);
    exp.expires_at = Some(expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    assert_eq!(live.put_route("exp", &exp).await.status(), 200);
    let mut conn = EchoConn::open(live.addr(), "exp.example.test", &ca).await;

    // 300,000 routes: seconds to read and validate in a test build.
    let path = live.routes_path.clone();
    tokio::task::spawn_blocking(move || {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, big_routes_file(300_000)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    })
    .await
    .unwrap();
    let control = live.server.control.clone();
    let reload = tokio::spawn(async move { control.reload_file().await });

    // The watchdog's pings are answered all along.
    while chrono::Utc::now() < expires {
        let ping = tokio::time::timeout(Duration::from_secs(1), live.server.control.ping()).await;
        assert!(
            matches!(ping, Ok(Ok(()))),
            "a ping went unanswered during the read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = (expires + chrono::Duration::milliseconds(500)) - chrono::Utc::now();
    assert!(
        conn.closed_within(left.to_std().unwrap_or_default()).await,
        "the expired route's connection stayed open during the read"
    );
    assert!(
        !reload.is_finished(),
        "the read ended before the expiry: this test needs a bigger file here"
    );
    tokio::time::timeout(Duration::from_secs(120), reload)
        .await
        .expect("the reload ends")
        .unwrap()
        .unwrap();
    // (The file watch may have applied the file first: count the table.)
    assert_eq!(live.server.shared.router.load().len(), 300_000);
}
