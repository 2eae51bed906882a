use clap::Parser;
use swarmtrace::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarmtrace: error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => swarmtrace::run::run(args).await,
            Command::Demo(args) => swarmtrace::demo::demo(args).await,
            Command::Capture(args) => swarmtrace::capture::capture(args).await,
            Command::Report(args) => swarmtrace::capture::report(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmtrace: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
