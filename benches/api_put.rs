//! One admin `PUT /routes/{name}` end to end, as an operator sees it: the
//! real binary with a routes file of 100 or 100,000 routes and its durable
//! state in a directory (redb, fsynced on commit), a small route put
//! through the HTTP API, timed until the 200 that says it is committed to
//! disk and live. Both table sizes in the same run, so the ratio says
//! whether a change still costs what the table holds (issue 15 measured
//! 428 ms median at 50,000 routes before changes were applied as deltas).
//!
//! `cargo bench --bench api_put` (a minute or two; `-- --quick` shorter).
//! What it includes: HTTP on loopback, the token check, validation off the
//! reconciler, the delta check, the redb commit with its fsync, the swap.
//! On these shared machines the fsync dominates and varies with the disk;
//! compare the sizes within one run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use mse_proxy::config::routes::RouteSpec;

use common::process::{write_config, ProxyProcess};
use common::{write_routes, TOKEN};

/// File route `i`: one exact host, an IP backend (no DNS).
fn file_route(i: usize) -> RouteSpec {
    RouteSpec::passthrough(
        &format!("f{i}"),
        &[format!("{i:08x}.apps.example.com").as_str()],
        &[format!("10.1.{}.{}:443", i / 250 % 250, i % 250)],
    )
}

fn api_put(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("api_put");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    for n in [100usize, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let specs: Vec<RouteSpec> = (0..n).map(file_route).collect();
        write_routes(&dir.path().join("routes.toml"), &specs);
        let config = write_config(
            dir.path(),
            "routes_file = \"routes.toml\"\nstate_dir = \"state\"",
        );
        let proxy = rt.block_on(ProxyProcess::start(&config));
        let client = reqwest::Client::new();
        let url = format!("http://{}/routes/api-bench", proxy.admin);
        let mut port = 8000u16;
        group.bench_function(format!("{n}_file_routes"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        // A real change each time: the backend's port moves.
                        port = if port == 8000 { 8001 } else { 8000 };
                        let spec = RouteSpec::passthrough(
                            "api-bench",
                            &["api-bench.example.com"],
                            &[format!("10.2.0.1:{port}")],
                        );
                        let start = Instant::now();
                        let r = client
                            .put(&url)
                            .bearer_auth(TOKEN)
                            .json(&spec)
                            .send()
                            .await
                            .unwrap();
                        took += start.elapsed();
                        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                    }
                    took
                })
            })
        });
        drop(proxy);
    }
    group.finish();
}

criterion_group!(benches, api_put);
criterion_main!(benches);
