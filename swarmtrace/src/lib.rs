//! swarmtrace: what happened to each TCP handshake on this host, and why.
//!
//! Read top-down: `app` dispatches the command line (`cli`) to `commands`, which drive the
//! engine (`trace`) and hand its typed results to `verdict`, `present` and `evidence`. Below
//! them are the facts: `kernel` (everything read from the running kernel), `docker` (its
//! API), and leaves with no crate imports (`net`, `name`, `escape`, `safe_fs`, `clock`,
//! `privileges`). `doctor` is the static checks; `lab` the namespace lab of the demo and tests.

pub mod app;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod docker;
pub mod doctor;
pub mod escape;
pub mod evidence;
pub mod kernel;
pub mod lab;
pub mod name;
pub mod net;
pub mod present;
pub mod privileges;
pub mod safe_fs;
pub mod trace;
pub mod verdict;
