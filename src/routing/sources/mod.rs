//! Route sources that feed the reconciler, and the certificate watch. The admin API is the other one
//! (see [`crate::admin`]).

pub mod certificates;
pub mod cname;
pub mod etcd;
pub mod file;
