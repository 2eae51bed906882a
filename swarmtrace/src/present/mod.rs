//! What people and other programs read, from the engine's typed records: a handshake's text
//! line (`records`), text and NDJSON lines (`output`), the summary and verdicts as text and
//! markdown (`summary`), Prometheus metrics (`metrics`) and the live view (`tui`).

pub mod metrics;
pub mod output;
pub mod records;
pub mod summary;
pub mod tui;
