use clap::Parser;

fn main() -> std::process::ExitCode {
    swarmtrace::app::main(swarmtrace::cli::Cli::parse())
}
