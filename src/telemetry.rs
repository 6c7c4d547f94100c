//! The tracing subscriber. Set up once, by the binary: library code and
//! tests never install a global subscriber.

use tracing_subscriber::{EnvFilter, fmt};

/// Human-readable logs on stderr, filtered by `RUST_LOG` (default: `info`
/// for slotgate, `warn` for everything else).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,slotgate=info"));
    fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
