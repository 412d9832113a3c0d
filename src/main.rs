//! The `castari-gateway` binary: argument parsing only; the work is in the
//! library (`castari_gateway`) and in `cli/`.

mod cli;

use clap::Parser;

/// mimalloc instead of the system allocator: a cache hit allocates a few
/// dozen small blocks and frees them on another poll; glibc's malloc spent
/// about an eighth of a hit's CPU time on them (perf, bench/cache.sh).
/// Built with `no_thp`: with transparent huge pages its arenas took the
/// idle RSS from 12.4 to 20.9 MiB (`bench/run.sh`; issue 3 wants under
/// 20); without, 13.0 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
    std::process::exit(cli::run(args));
}
