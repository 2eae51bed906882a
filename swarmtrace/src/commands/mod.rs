//! One module per subcommand that does more than dispatch: thin, on top of the engine
//! (`trace`), the evidence and the presentation.

pub mod capture;
pub mod conclude;
pub mod demo;
pub mod join;
pub mod report;
pub mod run;
