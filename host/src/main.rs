//! The `host` binary: parses the command line, sets up logging and
//! dispatches.

use clap::Parser;
use stagehost::cli::{Cli, LogFormat, dispatch};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc for the host's own allocations: glibc's malloc (with its
/// `malloc_consolidate`) took about a fifth of a stage thread's time on the
/// message path (BENCHMARKS.md §9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (in `mi_option_e` of its mimalloc.h),
/// which its Rust bindings leave unnamed.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system after 10 ms (mimalloc 2's default)
/// instead of mimalloc 3's full second: with the Python handler, whose
/// instances allocate and free much while they start, the peak RSS was
/// 261 MiB with a second's delay, 180 MiB with 100 ms and 146 MiB with
/// 10 ms, at the same rate within the noise.
fn purge_freed_memory_soon() {
    // SAFETY: called first thing in `main`, before any other thread runs,
    // as mimalloc asks of option changes.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 10) };
}

fn main() -> ExitCode {
    purge_freed_memory_soon();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("STAGEHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in a redirected log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // Only `purge_delay` defaults to 1000 (ms) among mimalloc's
        // options: a renumbering in a later mimalloc fails here.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
        }
        purge_freed_memory_soon();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 10);
    }
}
