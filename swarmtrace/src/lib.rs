//! swarmtrace: what happened to each TCP handshake on this host, and why.

pub mod app;
pub mod bundle;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod clsact;
pub mod demo;
pub mod docker;
pub mod doctor;
pub mod drops;
pub mod escape;
pub mod event;
pub mod kernel;
pub mod lab;
pub mod metrics;
pub mod net;
pub mod output;
pub mod pcapng;
pub mod privileges;
pub mod report;
pub mod run;
pub mod safe_fs;
pub mod tracer;
pub mod tracker;
pub mod tui;
pub mod verdict;
