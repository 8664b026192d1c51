//! One route change against a big table: today's full rebuild
//! (`reload::apply` of the whole set, one route different) against the
//! delta (`delta::patch` of that one route), both ending with the new
//! table live (swapped into the `ArcSwap`), in the same run; lookups at
//! 100 to 1,000,000 routes, alone and while deltas are applied; and the
//! resident memory one passthrough route costs.
//!
//! Decisions this informs: whether a change can cost what it changes
//! (issue 15: ≤ 1 ms at 100,000 routes, ≤ 2 ms at 1,000,000) with the
//! lookup still two hash probes and flat in the table's size (≤ 100 ns),
//! and whether a million routes fit in memory (≤ 1.5 KiB a route, with
//! per-route metric series created only on traffic).
//!
//! `cargo bench --bench control` (a few minutes; `-- --quick` shorter).

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mse_proxy::config::routes::{validate_all, RouteSpec};
use mse_proxy::config::ControlLimits;
use mse_proxy::routing::delta::{patch, Delta};
use mse_proxy::routing::reload::{apply, ApplyOptions};
use mse_proxy::routing::{Route, Router, Snapshot, Source};

const SIZES: [usize; 3] = [100, 100_000, 1_000_000];

/// Route `i`: even ones an exact app host, odd ones a tenant wildcard.
fn spec(i: usize, port: u16) -> RouteSpec {
    let host = if i.is_multiple_of(2) {
        format!("{i:012x}.apps.example.com")
    } else {
        format!("*.tenant{i}.example.com")
    };
    RouteSpec::passthrough(
        &format!("r{i}"),
        &[host.as_str()],
        &[format!("10.0.{}.{}:{port}", i / 250 % 250, i % 250)],
    )
}

fn routes(n: usize) -> Vec<(Route, Source)> {
    let specs: Vec<RouteSpec> = (0..n).map(|i| spec(i, 443)).collect();
    let limits = ControlLimits {
        routes: n.max(1),
        ..ControlLimits::default()
    };
    validate_all(Path::new("bench"), &specs, "route", &limits)
        .unwrap()
        .into_iter()
        .map(|r| (r, Source::File))
        .collect()
}

/// Route `i` redeployed to another port (alternately, so each change is
/// one).
fn moved(i: usize, flip: bool) -> Route {
    let s = spec(i, if flip { 8443 } else { 443 });
    validate_all(Path::new("bench"), &[s], "route", &ControlLimits::default())
        .unwrap()
        .remove(0)
}

fn table(n: usize) -> (Router, Vec<(Route, Source)>) {
    let router = Router::new(Snapshot::default());
    let rs = routes(n);
    apply(&router, rs.clone(), ApplyOptions::new(None)).unwrap();
    (router, rs)
}

/// Resident set size, from /proc/self/status (0 elsewhere).
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Memory per live passthrough route: the growth of RSS while a table
/// of 200,000 routes is built, 1,000 routes per delta, so the temporaries
/// of validation stay small and are reused (a growth is an upper bound:
/// the allocator keeps some of what was freed). Run first, in a fresh
/// process. No metric series exist: they are made on a route's first
/// connection.
fn memory_per_route() {
    const N: usize = 200_000;
    const CHUNK: usize = 1_000;
    let before = rss_bytes();
    let router = Router::new(Snapshot::default());
    let limits = ControlLimits::default();
    for start in (0..N).step_by(CHUNK) {
        let specs: Vec<RouteSpec> = (start..start + CHUNK).map(|i| spec(i, 443)).collect();
        let put = validate_all(Path::new("bench"), &specs, "route", &limits)
            .unwrap()
            .into_iter()
            .map(|r| (r, Source::File))
            .collect();
        let d = Delta {
            put,
            remove: vec![],
        };
        patch(&router, d, ApplyOptions::new(None)).unwrap();
    }
    let after = rss_bytes();
    assert_eq!(router.load().len(), N);
    println!(
        "memory: {N} passthrough routes live: RSS +{:.1} MiB, {:.0} B per route",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / N as f64
    );
}

/// Every figure, one table per size (built once: a million routes take
/// a while).
fn control(c: &mut Criterion) {
    memory_per_route();
    for n in SIZES {
        let (router, all) = table(n);
        lookups(c, &router, n);
        if n >= 100_000 {
            change_one(c, &router, all, n);
        }
        if n == 1_000_000 {
            during_deltas(c, router);
        }
    }
}

fn exact_host(n: usize) -> String {
    format!("{:012x}.apps.example.com", n - 2)
}

fn lookups(c: &mut Criterion, router: &Router, n: usize) {
    let mut g = c.benchmark_group(format!("lookup/{n}"));
    g.measurement_time(Duration::from_secs(2));
    let exact = exact_host(n);
    let wild = format!("app.tenant{}.example.com", n - 1);
    // What a connection pays: load the live snapshot, then look up.
    g.bench_function("exact_hit", |b| {
        b.iter(|| router.load().lookup(black_box(&exact)).is_some())
    });
    g.bench_function("wildcard_hit", |b| {
        b.iter(|| router.load().lookup(black_box(&wild)).is_some())
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            router
                .load()
                .lookup(black_box("nope.other.example.org"))
                .is_none()
        })
    });
    g.finish();
}

fn change_one(c: &mut Criterion, router: &Router, mut all: Vec<(Route, Source)>, n: usize) {
    let i = n / 2;
    let mut flip = false;
    let mut g = c.benchmark_group(format!("change_one/{n}"));
    // Today's path: the whole set again, one route different; one build
    // of the table, one swap. At a million routes a few timed runs say
    // enough (criterion would take minutes).
    if n <= 100_000 {
        g.sample_size(10).measurement_time(Duration::from_secs(10));
        g.bench_function("full_rebuild", |b| {
            b.iter_batched(
                || {
                    flip = !flip;
                    all[i].0 = moved(i, flip);
                    all.clone()
                },
                |rs| apply(router, rs, ApplyOptions::new(None)).unwrap(),
                BatchSize::PerIteration,
            )
        });
    } else {
        let mut took = Vec::new();
        for _ in 0..3 {
            flip = !flip;
            all[i].0 = moved(i, flip);
            let rs = all.clone();
            let t = Instant::now();
            apply(router, rs, ApplyOptions::new(None)).unwrap();
            took.push(t.elapsed());
        }
        took.sort();
        println!(
            "change_one/{n}/full_rebuild: median {:?} of 3 {took:?}",
            took[1]
        );
    }
    drop(all);
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    g.bench_function("delta", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                Delta {
                    put: vec![(moved(i, flip), Source::Api)],
                    remove: vec![],
                }
            },
            |d| patch(router, d, ApplyOptions::new(None)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Lookups while another thread applies one-route deltas back to back.
fn during_deltas(c: &mut Criterion, router: Router) {
    let router = Arc::new(router);
    let stop = Arc::new(AtomicBool::new(false));
    let n = router.load().len();
    let changer = {
        let (router, stop) = (Arc::clone(&router), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut count, started, mut flip) = (0u32, Instant::now(), false);
            while !stop.load(Ordering::Relaxed) {
                flip = !flip;
                let i = count as usize % n;
                let d = Delta {
                    put: vec![(moved(i, flip), Source::Api)],
                    remove: vec![],
                };
                patch(&router, d, ApplyOptions::new(None)).unwrap();
                count += 1;
            }
            (count, started.elapsed())
        })
    };
    let exact = exact_host(n);
    c.bench_function(&format!("lookup/{n}/exact_hit_during_deltas"), |b| {
        b.iter(|| router.load().lookup(black_box(&exact)).is_some())
    });
    stop.store(true, Ordering::Relaxed);
    let (count, took) = changer.join().unwrap();
    println!("meanwhile {count} one-route deltas applied in {took:?}");
}

criterion_group!(benches, control);
criterion_main!(benches);
