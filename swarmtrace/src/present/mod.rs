//! What people and other programs read: a handshake as a record (`records`), text and NDJSON
//! lines (`output`), the summary and verdicts as text and markdown (`summary`), Prometheus
//! metrics (`metrics`) and the live view (`tui`).

pub mod metrics;
pub mod output;
pub mod records;
pub mod summary;
pub mod tui;
