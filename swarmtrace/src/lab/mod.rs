//! The lab: network namespaces on one machine that stand in for hosts, used by the tests,
//! `swarmtrace demo` and the benchmarks. Everything it creates is removed when dropped.

pub mod netns;
pub mod traffic;

pub use netns::{addr, ip, sh, veth, Netns};
