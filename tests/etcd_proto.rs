//! The etcd gRPC stubs in `src/etcd/proto/` are generated from etcd's own
//! `.proto` files in `proto/` and committed, so that building the proxy
//! needs no `protoc` (a fresh machine with only the Rust toolchain builds
//! it). This test generates them again, in pure Rust (protox as the
//! compiler), and fails if the committed ones differ.
//!
//! After changing `proto/` or upgrading tonic/prost:
//! `MSE_PROXY_REGENERATE=1 cargo test --test etcd_proto` rewrites them.

use std::path::Path;

/// The files of etcd's API the client speaks; their imports come along.
const PROTOS: &[&str] = &[
    "etcd/api/etcdserverpb/rpc.proto",
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/authpb/auth.proto",
];

/// The generated modules the client uses. The gRPC-gateway and OpenAPI
/// annotation packages hold only options and are left out.
const MODULES: &[&str] = &["etcdserverpb.rs", "mvccpb.rs", "authpb.rs"];

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(PROTOS, [root.join("proto")]).expect("etcd .proto files compile");
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(fds)
        .expect("stubs generated");
}

#[test]
fn the_committed_etcd_stubs_are_what_the_protos_generate() {
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/etcd/proto");
    let regenerate = std::env::var_os("MSE_PROXY_REGENERATE").is_some();
    let mut stale = Vec::new();
    for m in MODULES {
        let want = std::fs::read_to_string(fresh.path().join(m))
            .unwrap_or_else(|e| panic!("{m} not generated: {e}"));
        let path = committed.join(m);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if regenerate {
                std::fs::create_dir_all(&committed).unwrap();
                std::fs::write(&path, want).unwrap();
            } else {
                stale.push(*m);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "src/etcd/proto/{{{}}} differ from what proto/ generates; \
         run `MSE_PROXY_REGENERATE=1 cargo test --test etcd_proto`",
        stale.join(",")
    );
}
