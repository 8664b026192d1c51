//! A small etcd v3 client: the few calls the shared route store makes
//! (ranges, puts, deletes, transactions, leases, one watch), over tonic.
//!
//! Why not a client crate: the maintained one generates its gRPC stubs in a
//! build script that needs a system `protoc` and the protobuf include
//! files, so the proxy did not build on a machine with only the Rust
//! toolchain (nor in the Docker build stage). Here the stubs are generated
//! once from etcd's own `.proto` files (`proto/` at the repository root) and
//! committed in [`proto`]; `tests/etcd_proto.rs` regenerates them in pure
//! Rust and fails if they drift. What is left by hand is this thin layer:
//! connecting (endpoints, TLS, keep-alive), password authentication with
//! token renewal, and the watch stream.
//!
//! This module imports nothing else of the crate: the route store
//! (`routing::sources::etcd`) builds on it, and the tests use it to write
//! into a real etcd.

mod client;
mod watch;

pub mod proto;

pub use client::{Client, ConnectOptions, Error, Tls};
pub use proto::etcdserverpb::{
    compare, request_op, Compare, RangeRequest, RangeResponse, RequestOp, WatchCreateRequest,
    WatchResponse,
};
pub use proto::mvccpb::{event::EventType, KeyValue};
pub use watch::Watcher;

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's convention: the prefix with its last byte incremented).
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

/// A transaction guard: `key`'s mod revision equals `rev` (0: the key is
/// absent).
pub fn mod_revision_is(key: impl Into<Vec<u8>>, rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        ..Compare::default()
    }
}

/// A transaction guard: `key`'s create revision equals `rev` (0: absent).
pub fn create_revision_is(key: impl Into<Vec<u8>>, rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.into(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        ..Compare::default()
    }
}

/// A put inside a transaction, under `lease` if not 0.
pub fn put_op(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(
            proto::etcdserverpb::PutRequest {
                key: key.into(),
                value: value.into(),
                lease,
                ..Default::default()
            },
        )),
    }
}

/// A delete of one key inside a transaction.
pub fn delete_op(key: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            proto::etcdserverpb::DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_increments_the_last_byte_that_can_be() {
        assert_eq!(range_end(b"/mse-proxy/"), b"/mse-proxy0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff\xff"), [0]);
        assert_eq!(range_end(b""), [0]);
    }

    #[test]
    fn guards_name_their_target() {
        let c = mod_revision_is("k", 7);
        assert_eq!(c.target(), compare::CompareTarget::Mod);
        assert_eq!(c.target_union, Some(compare::TargetUnion::ModRevision(7)));
        let c = create_revision_is("k", 0);
        assert_eq!(c.target(), compare::CompareTarget::Create);
        assert_eq!(c.result(), compare::CompareResult::Equal);
    }
}
