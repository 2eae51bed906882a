//! The engine: the kernel programs loaded and attached (`tracer`, `programs`, `clsact`, `attach`), their
//! events decoded (`event`), handshakes followed (`tracker`), drops named (`drops`, `hops`),
//! the loop that ties them together for every command that traces (`session`), and what it
//! hands out to whoever observes it (`observe`). Below `verdict`, `present` and the command
//! line: the commands build its options and turn its results into verdicts.

pub mod attach;
pub mod clsact;
pub mod drops;
pub mod event;
pub mod hops;
pub mod observe;
pub mod programs;
pub mod session;
pub mod summary;
pub mod tracer;
pub mod tracker;
