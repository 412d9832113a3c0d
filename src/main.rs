//! The `castari-gateway` binary: argument parsing only; the work is in the
//! library (`castari_gateway`) and in `cli/`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    std::process::exit(cli::run(args));
}
