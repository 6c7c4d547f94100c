//! The link to Redis: one Redis or a Redis Cluster, plaintext (`redis://`)
//! or over TLS (`rediss://`), with an ACL user and password.
//!
//! - TLS: a `rediss://` URL. The server's certificate must chain to the CA
//!   of `--redis-tls-ca` (or, without it, to the system's trusted roots) and
//!   name the host of the URL. A URL's `#insecure`, which turns those
//!   checks off, is refused.
//! - A client certificate (`--redis-tls-cert`, `--redis-tls-key`) for a
//!   Redis started with `tls-auth-clients yes`.
//! - The ACL user and password come from the URL
//!   (`rediss://user:password@host:6380`); `--redis-password-file` replaces
//!   the URL's password, so the URL itself can sit in a ConfigMap.
//!
//! The URL, the password and the certificate files are read when the link
//! is built and again on reload: connections opened after a reload use the
//! new ones. No error or log line carries the URL or the password.

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ErrorKind, IntoConnectionInfo, RedisError, RedisFuture,
    TlsCertificates, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};

use super::{LinkError, Secret, tls};

const URL: &str = "REDIS_URL";
const PASSWORD: &str = "--redis-password-file";
const CERTS: &str = "--redis-tls-ca/--redis-tls-cert/--redis-tls-key";

/// Tries a Redis Cluster call gets after its first (see [`RedisLink`]).
const CLUSTER_RETRIES: u32 = 3;

/// How slotgate reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The URL; with `cluster`, URLs of some nodes, comma-separated.
    pub url: Secret,
    /// Replaces the URL's password.
    pub password: Option<Secret>,
    pub cluster: bool,
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Longest wait to open a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a reply to one command.
    pub command_timeout: Duration,
}

impl RedisSettings {
    /// One Redis at `url`, with no TLS files or password file and
    /// one-second connect and reply timeouts (tools and tests).
    pub fn url(url: &str) -> Self {
        Self {
            url: Secret::Value(url.to_owned()),
            password: None,
            cluster: false,
            ca: None,
            identity: None,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
        }
    }
}

/// A connection to a single Redis or to a Redis Cluster. Every script
/// touches keys of one hash slot only, so both serve the gate alike.
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// One reading of the settings: the client connections are opened from.
enum Target {
    Single { client: Client, config: AsyncConnectionConfig },
    Cluster(ClusterClient),
}

impl Target {
    fn build(settings: &RedisSettings) -> Result<(Self, bool), LinkError> {
        let url = settings.url.read(URL)?;
        let password = settings.password.as_ref().map(|p| p.read(PASSWORD)).transpose()?;
        let urls: Vec<&str> = if settings.cluster {
            url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
        } else {
            vec![url.trim()]
        };
        let tls = urls.iter().any(|u| u.starts_with("rediss://") || u.starts_with("valkeys://"));
        if tls && urls.iter().any(|u| !(u.starts_with("rediss://") || u.starts_with("valkeys://"))) {
            return Err(LinkError::Setting(URL, "either every node's URL is rediss:// or none is".into()));
        }
        if urls.iter().any(|u| u.contains("#insecure")) {
            return Err(LinkError::Setting(
                URL,
                "#insecure would turn the server's certificate checks off; give the CA with --redis-tls-ca instead"
                    .into(),
            ));
        }
        let certificates = if tls {
            Some(certificates(settings)?)
        } else if settings.ca.is_some() || settings.identity.is_some() {
            return Err(LinkError::Setting(CERTS, "TLS settings need a rediss:// URL".into()));
        } else {
            None
        };
        let invalid = |e: RedisError| {
            // The parser's errors do not repeat the URL, but its kind says
            // enough; the URL may carry a password.
            LinkError::Setting(URL, format!("not a Redis URL ({:?})", e.kind()))
        };
        let target = if settings.cluster {
            // The cluster client sends a call again after a redirection
            // (MOVED, ASK, a slot migrating) or a dropped connection. Every
            // gate script is idempotent for its attempt, so that is safe; it
            // is bounded to a few tries (the default is 16, each up to the
            // reply timeout) so a failing call answers UNAVAILABLE well
            // within a caller's deadline rather than retrying for seconds.
            let mut builder = ClusterClientBuilder::new(urls)
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.command_timeout)
                .retries(CLUSTER_RETRIES);
            if let Some(password) = password {
                builder = builder.password(password);
            }
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            Self::Cluster(builder.build().map_err(invalid)?)
        } else {
            let mut info = urls[0].into_connection_info().map_err(invalid)?;
            if let Some(password) = password {
                let redis = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(redis);
            }
            let client = match certificates {
                Some(certificates) => Client::build_with_tls(info, certificates).map_err(invalid)?,
                None => Client::open(info).map_err(invalid)?,
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.command_timeout));
            Self::Single { client, config }
        };
        Ok((target, tls))
    }
}

fn certificates(settings: &RedisSettings) -> Result<TlsCertificates, LinkError> {
    let root_cert = settings.ca.as_deref().map(|ca| tls::pem(CERTS, ca)).transpose()?;
    let client_tls = match &settings.identity {
        Some((cert, key)) => {
            Some(ClientTlsConfig { client_cert: tls::pem(CERTS, cert)?, client_key: tls::pem(CERTS, key)? })
        }
        None => None,
    };
    // Parsed here too, so a bad file fails now with its name, not later as
    // an error of the client's.
    if let Some(ca) = &settings.ca {
        tls::certificates(CERTS, &ca.display().to_string())?;
    }
    if let Some((cert, key)) = &settings.identity {
        tls::certificates(CERTS, &cert.display().to_string())?;
        tls::private_key(CERTS, &key.display().to_string())?;
    }
    Ok(TlsCertificates { client_tls, root_cert })
}

/// The link: the settings read now, and again on reload.
pub struct RedisLink {
    settings: RedisSettings,
    target: RwLock<Arc<Target>>,
    tls: bool,
    /// Counts the reloads: long-lived connections opened before the last
    /// one are renewed.
    generation: AtomicU64,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisLink(cluster={}, tls={})", self.settings.cluster, self.tls)
    }
}

impl RedisLink {
    pub fn new(settings: RedisSettings) -> Result<Self, LinkError> {
        let (target, tls) = Target::build(&settings)?;
        Ok(Self { settings, target: RwLock::new(Arc::new(target)), tls, generation: AtomicU64::new(0) })
    }

    /// Whether the link is encrypted.
    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Reads the URL, the password and the certificate files again;
    /// connections opened from now on use them. On an error the link keeps
    /// what it had.
    pub fn reload(&self) -> Result<(), LinkError> {
        let (target, tls) = Target::build(&self.settings)?;
        if tls != self.tls {
            return Err(LinkError::Setting(URL, "a reload cannot switch TLS on or off; restart for that".into()));
        }
        *self.target.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(target);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many times the link was read again: a connection opened at an
    /// older generation may use settings since replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let target = Arc::clone(&self.target.read().unwrap_or_else(|e| e.into_inner()));
        Ok(match &*target {
            Target::Single { client, config } => {
                RedisConnection::Single(client.get_multiplexed_async_connection_with_config(config).await?)
            }
            Target::Cluster(client) => RedisConnection::Cluster(client.get_async_connection().await?),
        })
    }

    /// What a failed connect means: a setting to fix (a certificate that
    /// does not verify, a refused login) or Redis not being there.
    pub fn explain(&self, error: &RedisError) -> LinkError {
        let ca = match &self.settings.ca {
            Some(ca) => format!("--redis-tls-ca {}", ca.display()),
            None => "the system's trusted roots".into(),
        };
        if let Some(failure) = tls::tls_failure(error) {
            return LinkError::Refused(format!(
                "redis (TLS, checked against {ca}): {}",
                tls::explain(failure, "in the URL")
            ));
        }
        match error.kind() {
            ErrorKind::AuthenticationFailed => LinkError::Refused(format!(
                "redis: the login was refused (check the user and password: {URL}, {PASSWORD}): {error}"
            )),
            ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                LinkError::Refused(format!("redis: the ACL user may not run slotgate's commands: {error}"))
            }
            _ if error.to_string().contains("NOAUTH") => {
                LinkError::Refused(format!("redis: the server needs a password ({URL}, {PASSWORD}): {error}"))
            }
            _ => LinkError::Unreachable(format!("redis: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> RedisSettings {
        RedisSettings::url(url)
    }

    #[test]
    fn tls_settings_need_a_rediss_url_and_insecure_is_refused() {
        let err = |s: RedisSettings| RedisLink::new(s).err().map(|e| e.to_string()).unwrap_or_default();
        let mut plain_with_ca = settings("redis://127.0.0.1:6379");
        plain_with_ca.ca = Some("/ca.pem".into());
        assert!(err(plain_with_ca).contains("TLS settings need a rediss:// URL"));
        assert!(err(settings("rediss://127.0.0.1:6380/#insecure")).contains("#insecure"));
        let mut mixed = settings("rediss://a:1,redis://b:2");
        mixed.cluster = true;
        assert!(err(mixed).contains("every node's URL"));
        assert!(RedisLink::new(settings("redis://127.0.0.1:6379")).is_ok_and(|l| !l.tls()));
        let bad = err(settings("redis://:hunter2@[bad"));
        assert!(bad.starts_with("REDIS_URL: not a Redis URL") && !bad.contains("hunter2"), "{bad}");
    }
}
