//! TLS, mutual TLS and bearer tokens, with certificates made on the spot.

use rcgen::ExtendedKeyUsagePurpose;
use slotgate::pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    fault_kit::PrivatePostgres,
    helpers::{connect, free_port, reason_of, reserve, slot_at, spawn_app_with},
    pki::Pki,
};

/// Whether a client with this TLS setup gets an answer: the handshake may
/// fail at connect or, under TLS 1.3, on the first call.
async fn answers(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> bool {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://localhost:{}", addr.port())).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let Ok(channel) = endpoint.connect().await else { return false };
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest { service: String::new() }).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_mutual_tls_only_clients_with_a_certificate_from_the_client_ca_get_in() {
    let pki = Pki::new("ours");
    let (server_cert, server_key) = pki.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = pki.leaf("booking-svc", ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = Pki::new("stranger");
    let (stranger_cert, stranger_key) = stranger.leaf("intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let (cert, key, ca) = (
        pki.write("server.pem", &server_cert),
        pki.write("server.key", &server_key),
        pki.write("ca.pem", &pki.ca_pem()),
    );
    let health_addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let app = spawn_app_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.tls_client_ca = Some(ca);
        c.health_listen = Some(health_addr);
    })
    .await;

    let base = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem())).domain_name("localhost");
    assert!(answers(app.addr, Some(base().identity(Identity::from_pem(&client_cert, &client_key)))).await);
    assert!(!answers(app.addr, Some(base())).await, "no client certificate");
    assert!(
        !answers(app.addr, Some(base().identity(Identity::from_pem(&stranger_cert, &stranger_key)))).await,
        "a certificate from another CA"
    );
    assert!(!answers(app.addr, None).await, "plaintext");

    // Probes that cannot speak TLS get health, and only health, in plaintext
    // on a port of their own.
    assert!(answers(health_addr, None).await, "plaintext health on the probe port");
    let channel = connect(health_addr).await;
    let status = ReservationsClient::new(channel)
        .get_remaining(pb::GetRemainingRequest { slot: Some(slot_at("20:00")) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "the probe port serves nothing else");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tls_a_client_that_trusts_the_server_ca_is_served() {
    let pki = Pki::new("tls");
    let (server_cert, server_key) = pki.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (cert, key) = (pki.write("server.pem", &server_cert), pki.write("server.key", &server_key));
    let app = spawn_app_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem())).domain_name("localhost");
    assert!(answers(app.addr, Some(tls)).await);
    let untrusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(Pki::new("other").ca_pem()))
        .domain_name("localhost");
    assert!(!answers(app.addr, Some(untrusted)).await, "a client must not trust a server its CA did not sign");
}

const CALLER: &str = "caller-token-0123456789";
const OTHER_CALLER: &str = "other-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_need_a_valid_token_and_slot_admin_needs_an_admin() {
    let app = spawn_app_with(|c| {
        c.auth_tokens = format!("booking-svc:caller:{CALLER},partner-svc:caller:{OTHER_CALLER},ops:admin:{ADMIN}");
    })
    .await;
    let channel = connect(app.addr).await;
    let (mut reservations, mut admin) =
        (ReservationsClient::new(channel.clone()), SlotAdminClient::new(channel.clone()));
    let slot = slot_at("20:00");
    let open = pb::OpenSlotsRequest {
        slots: vec![pb::SlotCapacity { slot: Some(slot.clone()), capacity: 40, ..Default::default() }],
    };

    for token in [None, Some("not-a-token-at-all-000"), Some(&ADMIN[1..])] {
        let status =
            reservations.create_reservation(with_token(reserve("r-1", "alice", &slot, 4), token)).await.unwrap_err();
        assert_eq!(reason_of(&status), (Code::Unauthenticated, "UNAUTHENTICATED".into()), "{token:?}");
    }
    let status = admin.open_slots(with_token(open.clone(), Some(CALLER))).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::PermissionDenied, "ADMIN_REQUIRED".into()));
    admin.open_slots(with_token(open, Some(ADMIN))).await.unwrap();

    // Each calling service has request ids of its own: the same id from two
    // services makes two reservations.
    let a = reservations.create_reservation(with_token(reserve("r-1", "alice", &slot, 4), Some(CALLER))).await.unwrap();
    let b =
        reservations.create_reservation(with_token(reserve("r-1", "bob", &slot, 4), Some(OTHER_CALLER))).await.unwrap();
    assert_ne!(a.into_inner().id, b.into_inner().id);
    // Admins may book too.
    reservations.create_reservation(with_token(reserve("r-2", "carol", &slot, 4), Some(ADMIN))).await.unwrap();
    // The scheme's name is case-insensitive (RFC 7235).
    let mut lower = tonic::Request::new(reserve("r-3", "dave", &slot, 4));
    lower.metadata_mut().insert("authorization", format!("bearer {CALLER}").parse().unwrap());
    reservations.create_reservation(lower).await.unwrap();

    // Probes need no credentials.
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_reported_without_internals() {
    let pg = PrivatePostgres::start().await;
    let app = spawn_app_with(|c| c.database.database_url = pg.url.clone()).await;
    pg.stop();
    let status = app
        .reservations
        .clone()
        .get_remaining(pb::GetRemainingRequest { slot: Some(slot_at("20:00")) })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&status), (Code::Unavailable, "DATABASE_UNAVAILABLE".into()));
    let port = pg.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    for secret in [port.as_str(), "127.0.0.1", "postgres", "refused", "SELECT", "slots"] {
        assert!(!status.message().contains(secret), "{secret:?} leaked in {:?}", status.message());
    }
}
