//! From a parsed command line to an exit status: logging, the runtime, dispatch, and how
//! errors are shown.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// A failure already explained on stdout (doctor's serious findings): exit 1, say no more.
#[derive(Debug, thiserror::Error)]
#[error("serious findings")]
pub struct AlreadyReported;

pub fn main(cli: Cli) -> ExitCode {
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        // env_logger's own layout (`[WARN  target] message`, the level colored on a
        // terminal), the message escaped: log records carry names of interfaces, namespaces
        // and containers, and stderr is a terminal too.
        .format(|buf, record| {
            use std::io::Write as _;
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "[{style}{:<5}{style:#} {}] {}",
                record.level(),
                record.target(),
                crate::escape::terminal(&record.args().to_string())
            )
        })
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarmtrace: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(dispatch(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<AlreadyReported>() => ExitCode::FAILURE,
        // `swarmtrace man | head`: the reader left; nothing to report.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("swarmtrace: error: {}", crate::escape::terminal(&e));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => crate::commands::run::run(args).await,
        Command::Demo(args) => crate::commands::demo::demo(args).await,
        Command::Capture(args) => crate::commands::capture::capture(args).await,
        Command::Report(args) => crate::commands::report::report(args),
        Command::Join(args) => crate::commands::join::join(args),
        Command::Doctor(args) => match crate::doctor::doctor(args)? {
            true => Ok(()),
            false => Err(AlreadyReported.into()),
        },
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "swarmtrace", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => Ok(
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())?,
        ),
    }
}
