//! The engine: the kernel programs loaded and attached (`tracer`, `clsact`, `attach`), their
//! events decoded (`event`), handshakes followed (`tracker`), drops named (`drops`, `hops`),
//! and the loop that ties them together for every command that traces (`session`).

pub mod attach;
pub mod clsact;
pub mod drops;
pub mod event;
pub mod hops;
pub mod session;
pub mod tracer;
pub mod tracker;
