//! Cost of `tls::client_hello::parse` on real captured hellos.
//!
//! Decisions this informs:
//! * whether the in-place single-record fast path is worth its extra code, versus always
//!   reassembling the handshake message into a `Vec` (compare `single-record/chromium156-pq`
//!   with `reassembled/chromium156-pq-4-records`, the same hello split in four records);
//! * whether ClientHello parsing is negligible next to the TLS handshake the backend (or the
//!   ingress itself) performs anyway: `reference/rustls-server-first-flight` feeds the same
//!   Chromium post-quantum hello to a rustls 0.23 server (aws-lc-rs, ECDSA P-256 cert) and
//!   produces its first flight (X25519MLKEM768 encapsulation, certificate, signature);
//! * what a hostile client splitting its hello into 1-byte records costs us
//!   (`reassembled/chromium156-pq-1-byte-records`, ~11.7 KB of input).
//!
//! Run: `cargo bench --bench client_hello` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mse_proxy::tls::client_hello::{parse, Parse};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

const MAX_LEN: usize = 64 * 1024;

const CAPTURES: &[(&str, &[u8])] = &[
    (
        "chromium156-pq",
        include_bytes!("../tests/data/clienthello-chromium156-pq.bin"),
    ),
    (
        "curl-openssl",
        include_bytes!("../tests/data/clienthello-curl-openssl.bin"),
    ),
    (
        "openssl-s_client",
        include_bytes!("../tests/data/clienthello-openssl-s_client.bin"),
    ),
    (
        "python-ssl",
        include_bytes!("../tests/data/clienthello-python-ssl.bin"),
    ),
    (
        "rustls-pq",
        include_bytes!("../tests/data/clienthello-rustls-pq.bin"),
    ),
    (
        "rustls-nopq",
        include_bytes!("../tests/data/clienthello-rustls-nopq.bin"),
    ),
];

/// Re-frames a single-record hello into records carrying at most `frag` message bytes each.
fn reframe(single_record: &[u8], frag: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in single_record[5..].chunks(frag) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn assert_complete(name: &str, input: &[u8]) {
    match parse(input, MAX_LEN) {
        Parse::Complete(h) if h.sni.as_deref() == Some("app.example.test") => {}
        other => panic!("{name}: {other:?}"),
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("single-record");
    for &(name, bytes) in CAPTURES {
        assert_complete(name, bytes);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(black_box(bytes), MAX_LEN)));
    }
    group.finish();

    let chromium = CAPTURES[0].1;
    let mut group = c.benchmark_group("reassembled");
    let msg_len = chromium.len() - 5;
    for (name, input) in [
        (
            "chromium156-pq-4-records",
            reframe(chromium, msg_len.div_ceil(4)),
        ),
        ("chromium156-pq-1-byte-records", reframe(chromium, 1)),
    ] {
        assert_complete(name, &input);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(black_box(&input), MAX_LEN)));
    }
    group.finish();
}

fn bench_reference_handshake(c: &mut Criterion) {
    let key = rcgen::generate_simple_self_signed(vec!["app.example.test".to_owned()]).unwrap();
    let config = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
            )
            .unwrap(),
    );
    let hello = CAPTURES[0].1;
    let mut out = Vec::with_capacity(16 * 1024);
    let mut group = c.benchmark_group("reference");
    group.bench_function("rustls-server-first-flight/chromium156-pq", |b| {
        b.iter(|| {
            let mut conn = ServerConnection::new(config.clone()).unwrap();
            conn.read_tls(&mut black_box(hello)).unwrap();
            conn.process_new_packets().unwrap();
            out.clear();
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
            assert!(out.len() > 1000, "server first flight: {} bytes", out.len());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_reference_handshake);
criterion_main!(benches);
