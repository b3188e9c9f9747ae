//! `local-agent`: see `local-agent --help`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain: the outer context says what stopped, the
            // inner ones why and what to do.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
