//! Durable state without `[etcd]` (issue 16): what the admin API accepted
//! survives a restart, a SIGKILL in the middle of writes, keeps its expiry
//! instants, and a write the disk cannot take is refused with 503. The
//! proxy runs as the real binary (tests/common/process.rs), its state in
//! the test's own directory.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{state_cmd, write_config, Immutable, ProxyProcess};
use common::*;
use serde_json::{json, Value};

/// The platform's app domain in these tests.
const APPS: &str = "[apps]\nplatform_domains = [\"apps.example.test\"]\n";

fn route_json(name: &str, backend: std::net::SocketAddr) -> Value {
    serde_json::to_value(spec(
        name,
        &[&format!("{name}.example.test")],
        &[backend.to_string()],
    ))
    .unwrap()
}

/// The names of the live routes put through the API.
async fn api_routes(p: &ProxyProcess) -> Vec<Value> {
    let (st, body) = p.get("/routes").await;
    assert_eq!(st, 200);
    body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "api")
        .cloned()
        .collect()
}

async fn refused(addr: std::net::SocketAddr, host: &str, ca: &Ca) -> bool {
    match get(addr, host, ca).await {
        Err(e) => e.to_string().contains("UnrecognisedName"),
        Ok(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_apps_survive_sigterm_with_their_instants_and_route() {
    let ca = Ca::new("enclave CA").unwrap();
    let (api_host, app_host) = ("kept.example.test", "shop.apps.example.test");
    let (e, _) = enclave(&ca, &[api_host, app_host], "e").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), APPS);

    let p = ProxyProcess::start(&cfg).await;
    let (st, body) = p.put("/routes/kept", &route_json("kept", e.addr)).await;
    assert_eq!(st, 200, "{body}");
    let record = app_record(1, app_host, None, e.addr, "running");
    let (st, body) = p.put("/apps/p1/shop", &record).await;
    assert_eq!(st, 200, "{body}");
    let (_, app_before) = p.get("/apps/p1/shop").await;
    let (_, route_before) = p.get("/routes/kept").await;
    assert!(app_before["record"]["deployed_at"].is_string());
    assert_eq!(get(p.addr, api_host, &ca).await.unwrap().0, "hello from e");
    assert!(p.terminate().await, "SIGTERM ends the proxy cleanly");
    assert!(
        dir.path().join("state/state.redb").is_file(),
        "the state lives in state/ beside the config"
    );

    // No polling: the state is applied before the admin API answers.
    let p = ProxyProcess::start(&cfg).await;
    assert_eq!(p.get("/readyz").await.0, 200);
    assert_eq!(p.get("/routes/kept").await.1, route_before);
    let (st, app_after) = p.get("/apps/p1/shop").await;
    assert_eq!(st, 200);
    assert_eq!(
        app_after, app_before,
        "same record, deployed_at and expires_at"
    );
    assert_eq!(get(p.addr, api_host, &ca).await.unwrap().0, "hello from e");
    assert_eq!(get(p.addr, app_host, &ca).await.unwrap().0, "hello from e");

    // The platform re-sends the same record: its clock keeps running.
    let (st, body) = p.put("/apps/p1/shop", &record).await;
    assert_eq!(st, 200, "{body}");
    let (_, resent) = p.get("/apps/p1/shop").await;
    assert_eq!(
        resent["record"]["deployed_at"],
        app_before["record"]["deployed_at"]
    );
    assert_eq!(resent["expires_at"], app_before["expires_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_burst_of_puts_keeps_every_acknowledged_one_whole() {
    const PUTS: usize = 300;
    const KILL_AFTER: usize = 40;
    let backend = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let p = ProxyProcess::start(&cfg).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    // 8 writers at once, each sending its share in turn.
    for w in 0..8 {
        let (acked, http, base) = (Arc::clone(&acked), http.clone(), p.url("/routes/"));
        tasks.push(tokio::spawn(async move {
            for i in (w..PUTS).step_by(8) {
                let name = format!("r{i}");
                let sent = http
                    .put(format!("{base}{name}"))
                    .bearer_auth(TOKEN)
                    .json(&route_json(&name, backend))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push(name),
                    Ok(r) => panic!("{name}: {} before the kill", r.status()),
                    // The proxy is gone: the rest cannot be sent.
                    Err(_) => return,
                }
            }
        }));
    }
    let enough = eventually(Duration::from_secs(60), || {
        acked.lock().unwrap().len() >= KILL_AFTER
    })
    .await;
    assert!(enough, "the burst did not get going");
    p.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < PUTS,
        "the kill came after the burst; it proves nothing"
    );

    let p = ProxyProcess::start(&cfg).await;
    let stored = api_routes(&p).await;
    let names: Vec<&str> = stored.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for name in &acked {
        assert!(
            names.contains(&name.as_str()),
            "{name} got 2xx and was lost"
        );
    }
    for r in &stored {
        let name = r["name"].as_str().unwrap();
        let want = route_json(name, backend);
        assert_eq!(r["hosts"], want["hosts"], "{name} came back torn: {r}");
        assert_eq!(
            r["backends"], want["backends"],
            "{name} came back torn: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_expires_while_the_proxy_is_down_is_not_served() {
    let ca = Ca::new("enclave CA").unwrap();
    let host = "brief.apps.example.test";
    let (e, _) = enclave(&ca, &[host], "e").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), APPS);
    let state_file = dir.path().join("state/state.redb");
    let stored_apps = |path: &std::path::Path| {
        let store = mse_proxy::state::RedbStore::open(path).unwrap();
        let loaded = mse_proxy::state::StateStore::load(&store).unwrap();
        loaded
            .apps
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
    };

    // The rules take any expiry in the future: a few seconds is honest.
    let expires = chrono::Utc::now() + chrono::TimeDelta::seconds(6);
    let mut record = app_record(1, host, None, e.addr, "running");
    record["expires_at"] = json!(expires.to_rfc3339());
    let p = ProxyProcess::start(&cfg).await;
    let (st, body) = p.put("/apps/p1/brief", &record).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(get(p.addr, host, &ca).await.unwrap().0, "hello from e");
    assert!(p.terminate().await);
    assert_eq!(
        stored_apps(&state_file),
        vec!["brief".to_string()],
        "stored, and not yet expired when the proxy stopped"
    );

    let passed = eventually(Duration::from_secs(30), || chrono::Utc::now() > expires).await;
    assert!(passed);
    let p = ProxyProcess::start(&cfg).await;
    assert_eq!(p.get("/apps/p1/brief").await.0, 404);
    assert!(refused(p.addr, host, &ca).await, "an expired app is served");
    assert!(p.terminate().await);
    assert!(
        stored_apps(&state_file).is_empty(),
        "the expired app is deleted from the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_disk_refuses_is_a_503_and_nothing_acknowledged_is_lost() {
    let backend = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let p = ProxyProcess::start(&cfg).await;
    assert_eq!(p.put("/routes/a", &route_json("a", backend)).await.0, 200);
    assert_eq!(p.metric("mse_proxy_state_write_errors_total").await, 0.0);

    let guard = Immutable::set(&dir.path().join("state/state.redb"));
    let (st, body) = p.put("/routes/b", &route_json("b", backend)).await;
    assert_eq!(st, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("not applied") && error.contains("state.redb"),
        "{body}"
    );
    assert_eq!(
        p.get("/routes/b").await.0,
        404,
        "a refused write is not served"
    );
    assert_eq!(p.metric("mse_proxy_state_write_errors_total").await, 1.0);

    // Writable again: the next write goes through, no restart needed.
    drop(guard);
    assert_eq!(p.put("/routes/c", &route_json("c", backend)).await.0, 200);
    assert!(p.terminate().await);

    let p = ProxyProcess::start(&cfg).await;
    let names: Vec<String> = api_routes(&p)
        .await
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a", "c"]);
}

#[test]
fn check_names_a_state_dir_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let cfg = write_config(dir.path(), "state_dir = \"a-file/state\"");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let want = format!(
        "{}: state_dir: state store {}: cannot create the directory",
        cfg.display(),
        dir.path().join("a-file/state").display()
    );
    assert!(err.contains(&want), "{err}");
}

/// What `/routes` and `/apps` show: the whole bodies.
async fn visible(p: &ProxyProcess) -> (Value, Value) {
    let (st, routes) = p.get("/routes").await;
    assert_eq!(st, 200);
    let (st, apps) = p.get("/apps").await;
    assert_eq!(st, 200);
    (routes, apps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_instance_gives_the_same_routes_and_apps() {
    let ca = Ca::new("enclave CA").unwrap();
    let app_host = "shop.apps.example.test";
    let (e, _) = enclave(&ca, &["one.example.test", app_host], "e").await;
    let a = tempfile::tempdir().unwrap();
    let cfg_a = write_config(a.path(), APPS);
    let p = ProxyProcess::start(&cfg_a).await;
    for name in ["one", "two"] {
        let (st, body) = p
            .put(&format!("/routes/{name}"), &route_json(name, e.addr))
            .await;
        assert_eq!(st, 200, "{body}");
    }
    let record = app_record(1, app_host, None, e.addr, "running");
    let (st, body) = p.put("/apps/p1/shop", &record).await;
    assert_eq!(st, 200, "{body}");
    let before = visible(&p).await;
    assert_eq!(
        before.1["apps"].as_array().map(Vec::len),
        Some(1),
        "{}",
        before.1
    );

    // A running proxy holds the store: export says so, and what to do.
    let backup = a.path().join("backup.json");
    let out = backup.to_str().unwrap();
    let (code, err) = state_cmd(&cfg_a, &["export", "--output", out]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stop the proxy"), "{err}");
    assert!(!backup.exists());
    assert!(p.terminate().await);
    let (code, err) = state_cmd(&cfg_a, &["export", "--output", out]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("exported 2 route(s) and 1 app(s)"), "{err}");

    let b = tempfile::tempdir().unwrap();
    let cfg_b = write_config(b.path(), APPS);
    let (code, err) = state_cmd(&cfg_b, &["import", "--input", out]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("imported 2 route(s) and 1 app(s)"), "{err}");
    let p = ProxyProcess::start(&cfg_b).await;
    assert_eq!(
        visible(&p).await,
        before,
        "same routes and apps, deployed_at and expires_at"
    );
    assert_eq!(get(p.addr, app_host, &ca).await.unwrap().0, "hello from e");

    // Importing into a running instance is refused, and changes nothing.
    let (code, err) = state_cmd(&cfg_b, &["import", "--input", out]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("stop the proxy") && err.contains("nothing was imported"),
        "{err}"
    );
    assert!(p.terminate().await);

    // A bad import changes nothing, and names the first bad entry.
    let mut bad: Value = serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
    bad["routes"][0]["name"] = json!("one-renamed");
    bad["routes"][1]["backends"] = json!(["no port"]);
    let bad_file = b.path().join("bad.json");
    std::fs::write(&bad_file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (code, err) = state_cmd(
        &cfg_b,
        &["import", "--replace", "--input", bad_file.to_str().unwrap()],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("routes[1].backends[0]"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    // An app that takes a host a route holds: refused as a whole too.
    let mut clash: Value = serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
    clash["apps"][0]["record"]["domain_name"] = json!("one.example.test");
    clash["routes"] = json!([]);
    std::fs::write(&bad_file, serde_json::to_vec(&clash).unwrap()).unwrap();
    let (code, err) = state_cmd(&cfg_b, &["import", "--input", bad_file.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("one.example.test"), "{err}");
    let p = ProxyProcess::start(&cfg_b).await;
    assert_eq!(
        visible(&p).await,
        before,
        "the refused imports changed nothing"
    );
    assert!(p.terminate().await);

    // --replace: the import is the whole state; merge keeps the rest.
    let only_two = json!({"schema": 1, "routes": [route_json("two", e.addr)]});
    std::fs::write(&bad_file, serde_json::to_vec(&only_two).unwrap()).unwrap();
    let (code, err) = state_cmd(&cfg_b, &["import", "--input", bad_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let p = ProxyProcess::start(&cfg_b).await;
    assert_eq!(
        visible(&p).await,
        before,
        "a merge of what is there changes nothing"
    );
    assert!(p.terminate().await);
    let (code, err) = state_cmd(
        &cfg_b,
        &["import", "--replace", "--input", bad_file.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");
    let p = ProxyProcess::start(&cfg_b).await;
    let names: Vec<String> = api_routes(&p)
        .await
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["two"]);
    assert_eq!(p.get("/apps/p1/shop").await.0, 404, "replaced away");
}

/// A state exported by schema version 1 (committed, not generated by this
/// binary) imports and is served with its own instants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_export_loads() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/state/export-v1.json"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), APPS);
    let (code, err) = state_cmd(&cfg, &["import", "--input", fixture]);
    assert_eq!(code, Some(0), "{err}");
    let p = ProxyProcess::start(&cfg).await;
    let (st, route) = p.get("/routes/kept").await;
    assert_eq!(st, 200, "{route}");
    assert_eq!(route["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(
        route["hosts"],
        json!(["kept.example.test", "*.kept.example.test"])
    );
    let (st, app) = p.get("/apps/p1/shop").await;
    assert_eq!(st, 200, "{app}");
    assert_eq!(app["record"]["deployed_at"], "2026-11-30T12:00:00Z");
    assert_eq!(app["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(app["routes"].as_array().map(Vec::len), Some(2), "{app}");
    assert!(p.terminate().await);
    // And it exports back to the same entries.
    let (code, err) = state_cmd(
        &cfg,
        &[
            "export",
            "--output",
            dir.path().join("again.json").to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let again: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("again.json")).unwrap()).unwrap();
    let want: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    assert_eq!(again["schema"], want["schema"]);
    assert_eq!(
        again["apps"][0]["record"]["deployed_at"],
        want["apps"][0]["record"]["deployed_at"]
    );
    assert_eq!(again["routes"][0]["name"], want["routes"][0]["name"]);
}

#[test]
fn an_import_leaves_out_what_expired_and_refuses_a_name_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), APPS);
    let file = dir.path().join("in.json");
    let route = |name: &str, expires: &str| {
        json!({"name": name, "hosts": [format!("{name}.example.test")],
               "backends": ["127.0.0.1:1"], "expires_at": expires})
    };
    let twice = json!({"schema": 1, "routes": [
        route("a", "2099-01-01T00:00:00Z"), route("a", "2099-01-01T00:00:00Z")]});
    std::fs::write(&file, serde_json::to_vec(&twice).unwrap()).unwrap();
    let (code, err) = state_cmd(&cfg, &["import", "--input", file.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("routes[1].name: `a` is in the import twice"),
        "{err}"
    );

    let old = json!({"schema": 1, "routes": [
        route("old", "2020-01-01T00:00:00Z"), route("new", "2099-01-01T00:00:00Z")]});
    std::fs::write(&file, serde_json::to_vec(&old).unwrap()).unwrap();
    let (code, err) = state_cmd(&cfg, &["import", "--input", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("left out, its expiry has passed: routes[0] `old`"),
        "{err}"
    );
    assert!(err.contains("imported 1 route(s)"), "{err}");
    let out = dir.path().join("out.json");
    let (code, err) = state_cmd(&cfg, &["export", "--output", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let back: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let names: Vec<&str> = back["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new"], "only the first import's survivor, once");

    // Not an export at all: refused by what it lacks.
    std::fs::write(&file, b"[[route]]\nname = \"x\"\n").unwrap();
    let (code, err) = state_cmd(&cfg, &["import", "--input", file.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("not JSON of an export"), "{err}");
}
