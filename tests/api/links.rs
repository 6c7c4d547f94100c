//! Encrypted links to PostgreSQL and Redis, against servers of the tests'
//! own that speak only TLS: verified connections carry bursts exactly, and
//! anything that cannot be verified stops the start with the setting that
//! asked for it.

use std::path::Path;

use diesel::{QueryableByName, sql_query, sql_types::Bool};
use diesel_async::RunQueryDsl;
use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};

use crate::{
    bursts::{burst_exactly, scenario},
    fault_kit::{ClusterTls, PrivatePostgres, PrivateRedisCluster},
    helpers::{TestApp, by_hand, generous_timeouts, slot_at, spawn_app_with, start_refused, unique_name},
    pki::Pki,
    tls_kit::{TlsRedis, tls_postgres},
};

/// A URL of a private PostgreSQL's `postgres` database.
fn pg_url(pg: &PrivatePostgres, host: &str, query: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?{query}", pg.addr().port())
}

fn verified(mode: &str, ca: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", ca.display())
}

/// Whether every connection to the app's database is encrypted (asked over
/// a connection of the test's own, opened the app's way).
async fn all_encrypted(app: &TestApp) -> bool {
    #[derive(QueryableByName)]
    struct Encrypted {
        #[diesel(sql_type = Bool)]
        encrypted: bool,
    }
    let found: Encrypted = sql_query(
        "SELECT bool_and(s.ssl) AS encrypted FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend'",
    )
    .get_result(&mut app.database().await)
    .await
    .unwrap();
    found.encrypted
}

#[tokio::test(flavor = "multi_thread")]
async fn both_links_on_tls_with_client_certificates_and_an_acl_user_carry_the_duplicate_burst_exactly() {
    let pki = Pki::new("links");
    let ca = pki.ca_file();
    // PostgreSQL: TLS only, and a client certificate naming the user.
    let pg = tls_postgres(&pki, &["localhost"], "hostssl all all 127.0.0.1/32 trust clientcert=verify-full").await;
    let (pg_cert, pg_key) = pki.issue("pg-client", &["postgres"], &[ClientAuth]);
    let identity = format!("&sslcert={}&sslkey={}", pg_cert.display(), pg_key.display());
    // Redis: TLS only, client certificates required, and an ACL user; the
    // default user is off, so nothing gets in without the user's password.
    let redis = TlsRedis::start(&pki, true).await;
    let mut admin = redis.admin().await;
    redis::cmd("ACL")
        .arg(&["SETUSER", "slotgate", "on", ">s3cret-pw", "~*", "&*", "+@all"][..])
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    redis::cmd("ACL").arg(&["SETUSER", "default", "off"][..]).query_async::<()>(&mut admin).await.unwrap();
    let password = pki.write("redis-password", "s3cret-pw\n");
    // One namespace for both starts: the first records it in the database.
    let namespace = unique_name("tls");
    let tweak = |c: &mut slotgate::config::Config, password: &Path| {
        c.redis_namespace = namespace.clone();
        c.database.database_url = pg_url(&pg, "localhost", &(verified("verify-full", &ca) + &identity));
        c.redis_url = format!("rediss://slotgate@localhost:{}", redis.port);
        c.redis_password_file = Some(password.to_owned());
        c.redis_tls_ca = Some(ca.clone());
        c.redis_tls_cert = Some(redis.client_files.0.clone());
        c.redis_tls_key = Some(redis.client_files.1.clone());
        generous_timeouts(c);
        by_hand(c);
    };

    // A wrong password is a refused login: the start stops, and says so
    // without the password.
    let wrong = pki.write("wrong-password", "not-the-password");
    let refused = start_refused(|c| tweak(c, &wrong)).await;
    assert!(refused.contains("login was refused") && !refused.contains("not-the-password"), "{refused}");

    let app = spawn_app_with(|c| tweak(c, &password)).await;
    let duplicate = scenario("duplicate-2000");
    burst_exactly(&app, &[slot_at("11:00")], duplicate.users, duplicate.clicks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_without_client_certificates_carries_the_duplicate_burst_exactly() {
    let pki = Pki::new("redis");
    let redis = TlsRedis::start(&pki, false).await;
    let app = spawn_app_with(|c| {
        c.redis_url = format!("rediss://127.0.0.1:{}", redis.port);
        c.redis_tls_ca = Some(pki.ca_file());
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    let duplicate = scenario("duplicate-2000");
    burst_exactly(&app, &[slot_at("12:00")], duplicate.users, duplicate.clicks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_certificate_from_another_ca_is_refused_at_start() {
    let pki = Pki::new("redis-real");
    let other = Pki::new("redis-other");
    let redis = TlsRedis::start(&pki, false).await;
    let refused = start_refused(|c| {
        c.redis_url = format!("rediss://127.0.0.1:{}", redis.port);
        c.redis_tls_ca = Some(other.ca_file());
    })
    .await;
    assert!(refused.contains("not signed by a trusted CA") && refused.contains("--redis-tls-ca"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_cluster_over_tls_books_exactly() {
    let pki = Pki::new("cluster");
    let (cert, key) = pki.issue("node", &["127.0.0.1"], &[ServerAuth, ClientAuth]);
    let (client_cert, client_key) = pki.issue("cli", &["redis-cli"], &[ClientAuth]);
    let tls = ClusterTls { cert, key, ca: pki.ca_file(), client_cert, client_key };
    let cluster = PrivateRedisCluster::start_with(3, Some(&tls)).await;
    let app = spawn_app_with(|c| {
        c.redis_url = cluster.urls();
        c.redis_cluster = true;
        c.redis_tls_ca = Some(tls.ca.clone());
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    let slots: Vec<_> = (0..6).map(|i| slot_at(&format!("{:02}:30", 12 + i))).collect();
    burst_exactly(&app, &slots, 40, 3).await;
    assert!(cluster.keys_per_master().iter().filter(|&&keys| keys > 0).count() > 1, "the slots spread over masters");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_cannot_be_verified_or_offers_no_tls_is_refused_at_start() {
    let pki = Pki::new("pg");
    let other = Pki::new("pg-other");
    let ca = pki.ca_file();
    // The server's certificate names localhost only.
    let pg = tls_postgres(&pki, &["localhost"], "hostssl all all 127.0.0.1/32 trust").await;
    let refused_with = async |url: String| start_refused(move |c| c.database.database_url = url).await;

    let refused = refused_with(pg_url(&pg, "localhost", &verified("verify-full", &other.ca_file()))).await;
    assert!(refused.contains("not signed by a trusted CA") && refused.contains("sslrootcert="), "{refused}");

    let refused = refused_with(pg_url(&pg, "127.0.0.1", &verified("verify-full", &ca))).await;
    assert!(refused.contains("does not name the host 127.0.0.1") && refused.contains("verify-full"), "{refused}");

    // Plaintext is not let in (hostssl only), and asking for it says so.
    let refused = refused_with(pg_url(&pg, "localhost", "sslmode=disable")).await;
    assert!(refused.contains("no encryption"), "{refused}");

    // A server that offers no TLS at all, when TLS is required.
    let plain = PrivatePostgres::start().await;
    let refused = refused_with(pg_url(&plain, "127.0.0.1", "sslmode=require")).await;
    assert!(refused.contains("does not offer TLS") && refused.contains("sslmode=require"), "{refused}");

    // verify-ca checks the chain, not the name: a certificate from another
    // CA is refused, one from the right CA is accepted whatever host it
    // names, and so is verify-full by the name the certificate has. This
    // server lets plaintext in too, so the links being encrypted is the
    // client's doing.
    let either =
        tls_postgres(&pki, &["localhost"], "hostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust").await;
    let refused = refused_with(pg_url(&either, "127.0.0.1", &verified("verify-ca", &other.ca_file()))).await;
    assert!(refused.contains("not signed by a trusted CA") && refused.contains("verify-ca"), "{refused}");
    let namespace = unique_name("tls");
    for url in [
        pg_url(&either, "127.0.0.1", &verified("verify-ca", &ca)),
        pg_url(&either, "localhost", &verified("verify-full", &ca)),
        pg_url(&either, "127.0.0.1", "sslmode=require"),
    ] {
        let app = spawn_app_with(|c| {
            c.database.database_url = url;
            c.redis_namespace = namespace.clone();
        })
        .await;
        assert!(all_encrypted(&app).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_requires_a_client_certificate_refuses_a_link_without_one() {
    let pki = Pki::new("pg-client");
    let pg = tls_postgres(&pki, &["localhost"], "hostssl all all 127.0.0.1/32 trust clientcert=verify-full").await;
    let url = pg_url(&pg, "localhost", &verified("verify-full", &pki.ca_file()));
    let refused = start_refused(move |c| c.database.database_url = url).await;
    assert!(refused.contains("requires a valid client certificate"), "{refused}");
}
