//! The etcd v3 gRPC messages and clients, generated from `proto/` and
//! committed (`tests/etcd_proto.rs` regenerates and compares them), so no
//! build needs `protoc`. A file of its own so the client and the watcher
//! depend on the generated code, not on the module that re-exports it.
//! Do not edit the included files.
#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

pub mod authpb {
    include!("proto/authpb.rs");
}
pub mod mvccpb {
    include!("proto/mvccpb.rs");
}
pub mod etcdserverpb {
    include!("proto/etcdserverpb.rs");
}
