//! The lab: network namespaces on one machine that stand in for hosts, used by the tests,
//! `swarmtrace demo` and the benchmarks. Everything it creates is removed when dropped.
//!
//! - [`netns`]: namespaces, veths, addresses, running code inside a namespace.
//! - [`traffic`]: bounded connection attempts, requests and a service thread.
//! - [`mesh`]: the Docker Swarm routing mesh ([`MeshLab`]) and its fault [`Scenario`]s.
//! - [`craft`]: hand-made SYNs (chosen ISN and TSval) from a raw socket.
//! - [`observe`]: counters, sockets, conntrack and neighbours as a namespace sees them.
//! - [`dropwatch`]: the kernel's drop reasons through a private tracefs instance.

pub mod craft;
pub mod dropwatch;
pub mod mesh;
pub mod netns;
pub mod observe;
pub mod traffic;

pub use mesh::{Attempt, Drive, MeshLab, Scenario, PUBLISHED_PORT, TASK_PORT};
pub use netns::{addr, ip, sh, veth, Netns};
