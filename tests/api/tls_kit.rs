//! Dependencies that speak only TLS, with certificates of a test's own: a
//! private PostgreSQL with `ssl = on` and `hostssl` lines only, and a
//! private Redis on a TLS port only (`--port 0`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rcgen::ExtendedKeyUsagePurpose;
use redis::{ClientTlsConfig, TlsCertificates};

use crate::{
    fault_kit::{Helper, PrivatePostgres, Stdout},
    helpers::{Patience, free_port},
    pki::Pki,
};

/// A PostgreSQL whose certificate, signed by `pki`, names `names`; clients
/// are let in by the `hba` lines alone (`hostssl ...`: nothing in
/// plaintext). It trusts `pki`'s CA for client certificates.
pub async fn tls_postgres(pki: &Pki, names: &[&str], hba: &str) -> PrivatePostgres {
    let (cert, key) = pki.issue("pg-server", names, &[ExtendedKeyUsagePurpose::ServerAuth]);
    let ca = pki.ca_file();
    PrivatePostgres::start_configured(|data: &Path| {
        for (from, to) in [(&cert, "server.crt"), (&key, "server.key"), (&ca, "root.crt")] {
            std::fs::copy(from, data.join(to)).unwrap();
        }
        // PostgreSQL refuses a key others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
        );
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(data.join("pg_hba.conf"), format!("local all all trust\n{hba}\n")).unwrap();
    })
    .await
}

/// A redis-server on a TLS port only, its certificate signed by `pki`
/// naming localhost and 127.0.0.1; killed when dropped.
pub struct TlsRedis {
    pub port: u16,
    /// What a client needs: the CA, and a client certificate `pki` signed.
    pub client: TlsCertificates,
    pub client_files: (PathBuf, PathBuf),
    _server: Helper,
    log: PathBuf,
}

impl TlsRedis {
    /// `auth_clients`: whether clients must show a certificate
    /// (`tls-auth-clients yes`).
    pub async fn start(pki: &Pki, auth_clients: bool) -> Self {
        let port = free_port();
        let (cert, key) =
            pki.issue(&format!("redis-{port}"), &["localhost", "127.0.0.1"], &[ExtendedKeyUsagePurpose::ServerAuth]);
        let (client_cert, client_key) =
            pki.issue(&format!("redis-client-{port}"), &["slotgate"], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let ca = pki.ca_file();
        let log = std::env::temp_dir().join(format!("slotgate-tls-redis-{}-{port}.log", std::process::id()));
        let mut command = Command::new("redis-server");
        command
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", if auth_clients { "yes" } else { "no" }])
            .args(["--save", "", "--appendonly", "no"]);
        let mut server = Helper::spawn(&format!("TLS redis-server on port {port}"), command, &log, Stdout::Log);
        let read = |p: &PathBuf| std::fs::read(p).unwrap();
        let client = TlsCertificates {
            client_tls: Some(ClientTlsConfig { client_cert: read(&client_cert), client_key: read(&client_key) }),
            root_cert: Some(read(&ca)),
        };
        let probe = client.clone();
        server
            .wait_ready(Patience::up_to(Duration::from_secs(3)), async || {
                let Ok(client) = redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), probe.clone())
                else {
                    return false;
                };
                client.get_multiplexed_async_connection().await.is_ok()
            })
            .await;
        Self { port, client, client_files: (client_cert, client_key), _server: server, log }
    }

    /// A connection as the default user (while it may log in).
    pub async fn admin(&self) -> redis::aio::MultiplexedConnection {
        let url = format!("rediss://127.0.0.1:{}", self.port);
        let client = redis::Client::build_with_tls(url, self.client.clone()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}
