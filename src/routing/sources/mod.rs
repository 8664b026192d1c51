//! Route sources that feed the reconciler. The admin API is the other one
//! (see [`crate::admin`]).

pub mod etcd;
pub mod file;
