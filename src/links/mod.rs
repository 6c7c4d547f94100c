//! How slotgate reaches its dependencies: PostgreSQL and Redis over TLS
//! (rustls, no OpenSSL), with the settings that may carry secrets given as
//! values or as files, read again on reload (SIGHUP).
//!
//! - [`postgres`]: `DATABASE_URL` with libpq's `sslmode`, `sslrootcert`,
//!   `sslcert` and `sslkey`.
//! - [`redis`]: `redis://` and `rediss://`, one Redis or a Cluster, a CA, a
//!   client certificate, an ACL user and password.
//! - [`secret`]: a secret setting's value, or the file that holds it.
//! - `tls`: the rustls settings both links are built from.
//!
//! A link that cannot be built (a bad URL, a missing file) or a server that
//! cannot be verified is a setting to fix: the server does not start, and
//! the error names the setting. A server that is not there is an outage:
//! the server starts and answers UNAVAILABLE until it is back.

pub mod postgres;
pub mod redis;
pub mod secret;
mod tls;

pub use self::{
    postgres::{PgLink, SslMode},
    redis::{RedisConnection, RedisLink, RedisSettings},
    secret::Secret,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// A setting is wrong or a file it names cannot be used.
    #[error("{0}: {1}")]
    Setting(&'static str, String),
    /// The server was reached but refused, or could not be verified: a
    /// certificate, a host name, plaintext where TLS is required, a login.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached; trying again may work.
    #[error("{0}")]
    Unreachable(String),
}
