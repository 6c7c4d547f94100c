//! The link to PostgreSQL: `DATABASE_URL` with libpq's TLS settings, read
//! the way libpq reads them, over rustls.
//!
//! | `sslmode` | encrypted | server checked |
//! |---|---|---|
//! | `disable` | no | no |
//! | `prefer` (when absent, as in libpq) | if the server offers TLS | no |
//! | `require` | yes, or no connection | only with `sslrootcert` (then as `verify-ca`, as in libpq) |
//! | `verify-ca` | yes, or no connection | signed by the CA in `sslrootcert` |
//! | `verify-full` | yes, or no connection | that, and naming the host connected to |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! system's trusted roots; `sslcert` and `sslkey` are a client certificate
//! and its key, for servers that ask for one (`clientcert=verify-full`, the
//! `cert` method). A mode that requires TLS never falls back to plaintext,
//! and a server that cannot be verified is refused with what failed and the
//! setting that asked for it. libpq's `allow` is not supported.

use std::sync::{Arc, RwLock};

use diesel_async::AsyncPgConnection;
use tokio_postgres_rustls_improved::MakeRustlsConnect;

use super::{
    LinkError, Secret,
    tls::{self, Roots, Verify},
};

const SETTING: &str = "DATABASE_URL";

/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, LinkError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(LinkError::Setting(
                    SETTING,
                    format!("sslmode={other} is not supported: disable, prefer, require, verify-ca or verify-full"),
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings taken out of a URL.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslParams {
    mode: Option<String>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// A URL (or `key=value` string) without its TLS settings, which
/// tokio-postgres does not read, and the settings.
fn split_ssl(url: &str) -> (String, SslParams) {
    let mut params = SslParams::default();
    let mut take = |key: &str, value: String| -> bool {
        let slot = match key {
            "sslmode" => &mut params.mode,
            "sslrootcert" => &mut params.rootcert,
            "sslcert" => &mut params.cert,
            "sslkey" => &mut params.key,
            _ => return false,
        };
        *slot = Some(value);
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), params) };
        let rest: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some((key, value)) => !take(key, percent_decode(value)),
                None => true,
            })
            .collect();
        let rest = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        (rest, params)
    } else {
        let rest: Vec<&str> = url
            .split_whitespace()
            .filter(|token| match token.split_once('=') {
                Some((key, value)) => !take(key, value.trim_matches('\'').to_owned()),
                None => true,
            })
            .collect();
        (rest.join(" "), params)
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One reading of `DATABASE_URL`.
struct Target {
    config: tokio_postgres::Config,
    mode: SslMode,
    verify: Verify,
    rootcert: Option<String>,
    tls: MakeRustlsConnect,
}

impl Target {
    fn parse(url: &str) -> Result<Self, LinkError> {
        let (rest, ssl) = split_ssl(url);
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e: tokio_postgres::Error| LinkError::Setting(SETTING, e.to_string()))?;
        // An sslmode written in a form only tokio-postgres reads (spaces
        // around `=`, an encoded key) is taken as it read it: never weaker.
        let mode = match ssl.mode.as_deref() {
            Some(mode) => SslMode::parse(mode)?,
            None => match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
                _ => SslMode::Require,
            },
        };
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let verify = match (mode, &ssl.rootcert) {
            (SslMode::VerifyFull, _) => Verify::ChainAndHost,
            (SslMode::VerifyCa, _) | (SslMode::Require, Some(_)) => Verify::Chain,
            _ => Verify::Nothing,
        };
        if verify != Verify::Nothing && ssl.rootcert.is_none() {
            return Err(LinkError::Setting(
                SETTING,
                format!(
                    "sslmode={} needs sslrootcert: a PEM file of the CA that signs the server's certificate, or \
                     `system` for the system's trusted roots",
                    mode.name()
                ),
            ));
        }
        let roots = ssl.rootcert.as_deref().map(|r| if r == "system" { Roots::System } else { Roots::File(r.into()) });
        let identity = match (&ssl.cert, &ssl.key) {
            (Some(cert), Some(key)) => Some((cert.as_str(), key.as_str())),
            (None, None) => None,
            _ => return Err(LinkError::Setting(SETTING, "sslcert and sslkey go together".into())),
        };
        let client = tls::client_config(SETTING, verify, roots.as_ref(), identity)?;
        Ok(Self { config, mode, verify, rootcert: ssl.rootcert, tls: MakeRustlsConnect::new(client) })
    }

    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        }
    }

    /// What a failed connect says, with the setting to look at.
    fn explain(&self, error: &tokio_postgres::Error) -> LinkError {
        let settings = match &self.rootcert {
            Some(root) => format!("sslmode={}, sslrootcert={root}", self.mode.name()),
            None => format!("sslmode={}", self.mode.name()),
        };
        if let Some(failure) = tls::tls_failure(error) {
            let hint = if self.verify == Verify::ChainAndHost && tls::explain(failure, "").contains("does not name") {
                " (verify-full checks the host name; the certificate must name the host in DATABASE_URL)"
            } else {
                ""
            };
            return LinkError::Refused(format!("database ({settings}): {}{hint}", tls::explain(failure, &self.host())));
        }
        // tokio-postgres keeps the cause out of its own message.
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(e) = cause {
            message = format!("{message}: {e}");
            cause = e.source();
        }
        if message.contains("server does not support TLS") {
            return LinkError::Refused(format!(
                "database ({settings}): the server does not offer TLS, and sslmode={} does not allow plaintext",
                self.mode.name()
            ));
        }
        match error.as_db_error() {
            // Refused by pg_hba.conf or a wrong password: a setting to fix.
            Some(db) if db.code().code().starts_with("28") => {
                LinkError::Refused(format!("database ({settings}): {}", db.message()))
            }
            _ => LinkError::Unreachable(format!("database ({settings}): {message}")),
        }
    }
}

/// The link: `DATABASE_URL` (or its file) read now, and again on reload.
pub struct PgLink {
    url: Secret,
    target: RwLock<Arc<Target>>,
}

impl std::fmt::Debug for PgLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgLink(sslmode={})", self.mode().name())
    }
}

impl PgLink {
    pub fn new(url: Secret) -> Result<Self, LinkError> {
        let target = Target::parse(&url.read(SETTING)?)?;
        Ok(Self { url, target: RwLock::new(Arc::new(target)) })
    }

    /// A link from a URL given as is (tools and tests).
    pub fn from_url(url: &str) -> Result<Self, LinkError> {
        Self::new(Secret::Value(url.to_owned()))
    }

    fn target(&self) -> Arc<Target> {
        Arc::clone(&self.target.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the URL and its TLS files again; connections opened from now
    /// on use them. A reload changes credentials and certificates, not the
    /// database nor the `sslmode`: the database is bound to this
    /// deployment's Redis namespace at start, and a mode is not weakened
    /// behind the operator's back. Those take a restart. On an error the
    /// link keeps what it had.
    pub fn reload(&self) -> Result<(), LinkError> {
        let target = Target::parse(&self.url.read(SETTING)?)?;
        let current = self.target();
        let place = |t: &Target| {
            (t.config.get_hosts().to_vec(), t.config.get_ports().to_vec(), t.config.get_dbname().map(str::to_owned))
        };
        if place(&target) != place(&current) {
            return Err(LinkError::Setting(
                SETTING,
                "a reload cannot move to another database; restart for that".into(),
            ));
        }
        if target.mode != current.mode {
            return Err(LinkError::Setting(SETTING, "a reload cannot change sslmode; restart for that".into()));
        }
        *self.target.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(target);
        Ok(())
    }

    pub fn mode(&self) -> SslMode {
        self.target().mode
    }

    /// Opens a connection the way the URL says.
    pub async fn connect(&self) -> Result<AsyncPgConnection, LinkError> {
        let target = self.target();
        let (client, connection) = target.config.connect(target.tls.clone()).await.map_err(|e| target.explain(&e))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(|e| LinkError::Unreachable(format!("database: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url_and_the_rest_left_as_it_was() {
        let (rest, ssl) = split_ssl(
            "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&sslcert=c&sslkey=k",
        );
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.rootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!((ssl.cert.as_deref(), ssl.key.as_deref()), (Some("c"), Some("k")));
        let (rest, ssl) = split_ssl("postgres://db/x?sslmode=disable");
        assert_eq!((rest.as_str(), ssl.mode.as_deref()), ("postgres://db/x", Some("disable")));
        let (rest, ssl) = split_ssl("host=db user=u sslmode=require dbname=x");
        assert_eq!((rest.as_str(), ssl.mode.as_deref()), ("host=db user=u dbname=x", Some("require")));
    }

    #[test]
    fn modes_that_verify_need_a_ca_and_unknown_modes_are_refused() {
        let err = |url: &str| Target::parse(url).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("postgres://db/x?sslmode=verify-full").contains("sslmode=verify-full needs sslrootcert"));
        assert!(err("postgres://db/x?sslmode=allow").contains("sslmode=allow is not supported"));
        assert!(err("postgres://db/x?sslmode=require&sslcert=c").contains("sslcert and sslkey go together"));
        assert!(err("postgres://db/x?sslmode=verify-ca&sslrootcert=/nonexistent").contains("/nonexistent"));
        let plain = Target::parse("postgres://db/x").unwrap();
        assert_eq!((plain.mode, plain.verify), (SslMode::Prefer, Verify::Nothing), "libpq's default");
        let bare = Target::parse("postgres://db/x?sslmode=require").unwrap();
        assert_eq!(bare.verify, Verify::Nothing);
        let ca = std::env::temp_dir().join(format!("slotgate-pg-ca-{}.pem", std::process::id()));
        let issuer = rcgen::CertifiedIssuer::self_signed(
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap(),
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        std::fs::write(&ca, issuer.pem()).unwrap();
        let with_ca = Target::parse(&format!("postgres://db/x?sslmode=require&sslrootcert={}", ca.display()));
        std::fs::remove_file(&ca).unwrap();
        assert_eq!(with_ca.unwrap().verify, Verify::Chain, "require with a CA is verify-ca");
        let spaced = Target::parse("host=db dbname=x sslmode = require").unwrap();
        assert_eq!(spaced.mode, SslMode::Require, "a mode only tokio-postgres reads is never weakened");
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let err = Target::parse("postgres://u:hunter2@db/x?nonsense=1").err().unwrap().to_string();
        assert!(err.starts_with("DATABASE_URL:") && !err.contains("hunter2"), "{err}");
    }
}
