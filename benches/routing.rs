//! Route lookup and table swaps at platform scale (100,000 routes).
//!
//! Decisions this informs: whether the two-probe lookup (exact, then the
//! one-label wildcard) stays flat as the table grows, so that no ranking or
//! scan is needed per connection; and whether rebuilding the whole snapshot
//! on every change (instead of patching it in place) is cheap enough to do on
//! every deploy, and leaves lookups unharmed while it runs.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mse_proxy::config::routes::{validate_all, RouteSpec};
use mse_proxy::config::ControlLimits;
use mse_proxy::routing::reload::{apply, ApplyOptions};
use mse_proxy::routing::{Route, Router, Snapshot, Source};

const ROUTES: usize = 100_000;

/// Half exact app hosts, half tenant wildcards, as a platform would have.
fn routes(backend_port: u16) -> Vec<(Route, Source)> {
    let specs: Vec<RouteSpec> = (0..ROUTES)
        .map(|i| {
            let host = if i % 2 == 0 {
                format!("{i:012x}.apps.example.com")
            } else {
                format!("*.tenant{i}.example.com")
            };
            RouteSpec::passthrough(
                &format!("r{i}"),
                &[host.as_str()],
                &[format!("10.0.{}.{}:{backend_port}", i / 250 % 250, i % 250)],
            )
        })
        .collect();
    validate_all(
        Path::new("bench"),
        &specs,
        "route",
        &ControlLimits::default(),
    )
    .unwrap()
    .into_iter()
    .map(|r| (r, Source::File))
    .collect()
}

fn table(sizes: usize) -> Router {
    let router = Router::new(Snapshot::default());
    let mut rs = routes(443);
    rs.truncate(sizes);
    apply(&router, rs, ApplyOptions::new(None)).unwrap();
    router
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for size in [100, ROUTES] {
        let router = table(size);
        let snap = router.load_full();
        let exact = format!("{:012x}.apps.example.com", size - 2);
        let wild = format!("app.tenant{}.example.com", size - 1);
        g.bench_function(format!("exact_hit/{size}"), |b| {
            b.iter(|| black_box(snap.lookup(black_box(&exact))).is_some())
        });
        g.bench_function(format!("wildcard_hit/{size}"), |b| {
            b.iter(|| black_box(snap.lookup(black_box(&wild))).is_some())
        });
        g.bench_function(format!("miss/{size}"), |b| {
            b.iter(|| black_box(snap.lookup(black_box("nope.other.example.org"))).is_none())
        });
        g.bench_function(format!("deep_miss/{size}"), |b| {
            b.iter(|| black_box(snap.lookup(black_box("a.b.c.d.apps.example.com"))).is_none())
        });
        // What a connection actually pays: load the current snapshot, then look up.
        g.bench_function(format!("load_and_exact_hit/{size}"), |b| {
            b.iter(|| router.load().lookup(black_box(&exact)).is_some())
        });
    }
    g.finish();
}

fn swaps(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply_100k");
    g.sample_size(10);
    let same = routes(443);
    let moved = routes(8443);
    let router = table(ROUTES);
    // Every route unchanged: entries carried over, one build, one swap.
    g.bench_function("unchanged", |b| {
        b.iter_batched(
            || same.clone(),
            |rs| apply(&router, rs, ApplyOptions::new(None)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    // Every route's backend changed (a mass redeploy): all entries new.
    let mut flip = false;
    g.bench_function("all_changed", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                if flip {
                    moved.clone()
                } else {
                    same.clone()
                }
            },
            |rs| apply(&router, rs, ApplyOptions::new(None)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Lookups while another thread keeps rebuilding and swapping the table.
    let router = Arc::new(table(ROUTES));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (router, stop) = (Arc::clone(&router), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u32;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let rs = if n.is_multiple_of(2) {
                    moved.clone()
                } else {
                    same.clone()
                };
                apply(&router, rs, ApplyOptions::new(None)).unwrap();
                n += 1;
            }
            (n, started.elapsed())
        })
    };
    let exact = format!("{:012x}.apps.example.com", ROUTES - 2);
    c.bench_function("lookup_during_swaps/exact_hit/100000", |b| {
        b.iter(|| router.load().lookup(black_box(&exact)).is_some())
    });
    stop.store(true, Ordering::Relaxed);
    let (n, took) = swapper.join().unwrap();
    println!("swapper applied {n} full 100k-route tables in {took:?} meanwhile");
}

criterion_group!(benches, lookups, swaps);
criterion_main!(benches);
