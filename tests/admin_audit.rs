//! The audit trail of the real binary: one JSON line per admin write on
//! stderr, target `mse_proxy::audit`, naming who (never the token), what and
//! the outcome; and SIGHUP re-reading the token files with the watch off.

mod common;

use std::io::BufRead;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The proxy binary with its stderr read line by line as JSON.
struct Proc {
    child: std::process::Child,
    lines: Receiver<Value>,
    /// Every line seen so far, for the final checks.
    seen: Vec<Value>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(config: &std::path::Path) -> Proc {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line matching `f`, within 10 s.
    fn wait_for(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {what}; saw {:#?}", self.seen));
            self.seen.push(v.clone());
            if f(&v) {
                return v;
            }
        }
    }

    fn audit(&mut self, method: &str, path: &str) -> Value {
        self.wait_for(&format!("auditing {method} {path}"), |v| {
            v["target"] == "mse_proxy::audit"
                && v["fields"]["method"] == method
                && v["fields"]["path"] == path
        })["fields"]
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_leaves_one_audit_line_naming_who_what_and_the_outcome() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("token"), &format!("deployer:{TOKEN}\n"));
    write_secret(&dir.path().join("read-token"), &format!("{READ_TOKEN}\n"));
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         [reload]\nwatch = false\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"token\"\nread_token_file = \"read-token\"\n",
    )
    .unwrap();
    let mut p = Proc::start(&config);
    let listening = p.wait_for("`admin API listening`", |v| {
        v["fields"]["message"] == "admin API listening"
    });
    let admin = listening["fields"]["address"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{admin}{path}");
    let route = spec("shop", &["shop.example.test"], &["127.0.0.1:1".into()]);

    let r = http
        .put(url("/routes/shop"))
        .bearer_auth(TOKEN)
        .json(&route)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a = p.audit("PUT", "/routes/shop");
    assert_eq!(a["who"], "token:deployer");
    assert_eq!(a["target"], "route shop");
    assert_eq!(a["status"], 200);
    assert_eq!(a["outcome"], "ok");

    let r = http
        .delete(url("/apps/p/web"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let a = p.audit("DELETE", "/apps/p/web");
    assert_eq!(a["who"], "token:read-token#1");
    assert_eq!(a["target"], "app p/web");
    assert_eq!(a["status"], 403);
    assert_eq!(a["outcome"], "forbidden");

    let r = http.post(url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let a = p.audit("POST", "/reload");
    assert_eq!(a["who"], "-");
    assert_eq!(a["outcome"], "unauthenticated");

    let r = http
        .delete(url("/routes/shop"))
        .bearer_auth("not-a-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let a = p.audit("DELETE", "/routes/shop");
    assert_eq!(a["who"], "token:?");

    // Reads are counted, not audited: the next audit line is the next write.
    let r = http
        .get(url("/routes"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(url("/routes/shop"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a = p.audit("DELETE", "/routes/shop");
    assert_eq!(a["status"], 200);
    let audited: Vec<&Value> = p
        .seen
        .iter()
        .filter(|v| v["target"] == "mse_proxy::audit")
        .collect();
    assert_eq!(audited.len(), 5, "{audited:#?}");

    // SIGHUP re-reads the token files (the watch is off here).
    let rotated = "rotated-token-0123456789";
    write_secret(&dir.path().join("token"), &format!("deployer2:{rotated}\n"));
    let pid = p.child.id().to_string();
    let (ok, out) = run_tool("kill", &["-HUP".into(), pid], true).await;
    assert!(ok, "{out}");
    p.wait_for("`admin tokens re-read`", |v| {
        v["fields"]["message"] == "admin tokens re-read"
    });
    let put = |token: &'static str| {
        let (http, url, route) = (http.clone(), url("/routes/shop"), route.clone());
        async move {
            http.put(url)
                .bearer_auth(token)
                .json(&route)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put(rotated).await, 200);
    assert_eq!(p.audit("PUT", "/routes/shop")["who"], "token:deployer2");
    assert_eq!(put(TOKEN).await, 401);
    assert_eq!(p.audit("PUT", "/routes/shop")["outcome"], "unauthenticated");

    // No token ever reaches the log.
    for v in &p.seen {
        let text = v.to_string();
        for secret in [TOKEN, READ_TOKEN, rotated] {
            assert!(!text.contains(secret), "a token in the log: {text}");
        }
    }
}
