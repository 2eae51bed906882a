//! The engine: the kernel programs loaded and attached (`tracer`, `programs`, `clsact`,
//! `attach`), their events decoded (`event`), handshakes followed (`handshake`, `tracker`; the
//! ones it forgets under a flood folded by `forgotten`), drops named and counted in tables
//! bounded whatever the flood (`drops`, `hops`, `topk`),
//! the loop that ties them together for every command that traces (`session`), and what it
//! hands out to whoever observes it (`observe`). Below `verdict`, `present` and the command
//! line: the commands build its options and turn its results into verdicts.

pub mod attach;
pub mod clsact;
pub mod drops;
pub mod event;
pub mod forgotten;
pub mod handshake;
pub mod hops;
pub mod observe;
pub mod programs;
pub mod session;
pub mod summary;
pub mod topk;
pub mod tracer;
pub mod tracker;
