//! One namespace, one database: a deployment is bound to its Redis
//! namespace on its first start, other pairings are refused, and moving is
//! an explicit step. Secrets given as files are read again on SIGHUP.

use std::{process::Command, time::Duration};

use slotgate::{
    booking::BookingError,
    gate::GateError,
    pb::{self, reservations_client::ReservationsClient},
};
use tonic::{Code, Request};

use crate::{
    fault_kit::{PrivateRedis, SlotgateProcess},
    helpers::{
        Patience, TestApp, TestDb, connect, delete_namespace, eventually, reason_of, reserve, seats, slot_at,
        spawn_app, spawn_app_by_hand, spawn_app_with, start_refused, unique_name,
    },
    pki::Pki,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_namespace_is_not_the_databases_is_refused_at_start() {
    let app = spawn_app().await;
    let url = app.config.database.database_url.clone();
    let refused = start_refused(|c| c.database.database_url = url).await;
    assert!(
        refused.contains(&format!("with the Redis namespace {:?}", app.namespace))
            && refused.contains("move-namespace"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_that_holds_another_deployments_keys_is_refused_at_start() {
    let app = spawn_app().await;
    let namespace = app.namespace.clone();
    // Another database, pointed at the first one's namespace.
    let refused = start_refused(|c| c.redis_namespace = namespace).await;
    assert!(refused.contains("holds the keys of deployment") && refused.contains(&app.namespace), "{refused}");
    // The first deployment still owns it, and still serves.
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 8)]).await;
    app.create(reserve("r-1", "u-1", &slot, 2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_gate_whose_namespace_another_deployment_claimed_turns_off_until_it_is_its_own_again() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("19:30");
    app.open(&[(slot.clone(), 8)]).await;
    let marker = format!("{}:deployment", app.namespace);
    let mut redis = app.redis().await;
    let ours: String = redis::cmd("GET").arg(&marker).query_async(&mut redis).await.unwrap();
    // Redis lost the marker and another deployment claimed the namespace.
    redis::cmd("SET").arg(&marker).arg("another-deployment").query_async::<()>(&mut redis).await.unwrap();
    let refused = app.booking.reconcile(None).await.unwrap_err();
    assert!(
        matches!(refused, BookingError::Gate(GateError::Foreign(_))),
        "the pass finds the namespace is not its own: {refused:?}"
    );
    let status = app.create(reserve("r-1", "u-1", &slot, 2)).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::Unavailable, "REDIS_UNAVAILABLE".into()));
    // After a flush the marker is gone: the next pass claims it again.
    redis::cmd("DEL").arg(&marker).query_async::<()>(&mut redis).await.unwrap();
    app.booking.reconcile(None).await.unwrap();
    let found: String = redis::cmd("GET").arg(&marker).query_async(&mut redis).await.unwrap();
    assert_eq!(found, ours);
    app.create(reserve("r-1", "u-1", &slot, 2)).await.unwrap();
}

/// `slotgate move-namespace` against the app's database.
fn move_namespace(app: &TestApp, from: &str, to: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(["move-namespace", "--from", from, "--to", to])
        .env("DATABASE_URL", &app.config.database.database_url)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_a_deployment_to_a_new_namespace_is_an_explicit_step() {
    let app = spawn_app().await;
    let slot = slot_at("20:00");
    app.open(&[(slot.clone(), 10)]).await;
    app.create(reserve("r-1", "u-1", &slot, 4)).await.unwrap();
    let moved_to = format!("{}-moved", app.namespace);

    // The guard: the database's namespace must be named.
    let (ok, said) = move_namespace(&app, "not-this-one", &moved_to);
    assert!(!ok && said.contains("nothing was moved"), "{said}");

    let (ok, said) = move_namespace(&app, &app.namespace, &moved_to);
    assert!(ok, "{said}");
    // The old namespace is refused now, the new one serves, its counter
    // loaded from the database.
    let url = app.config.database.database_url.clone();
    let old = app.namespace.clone();
    let refused = start_refused(|c| {
        c.database.database_url = url;
        c.redis_namespace = old;
    })
    .await;
    assert!(refused.contains(&format!("{moved_to:?}")), "{refused}");
    let mut env = app.env_by_hand();
    env.retain(|(k, _)| k != "SLOTGATE_REDIS_NAMESPACE");
    env.push(("SLOTGATE_REDIS_NAMESPACE".into(), moved_to.clone()));
    let server = SlotgateProcess::start(env).await;
    let mut client = ReservationsClient::new(connect(server.addr).await);
    let remaining = client.get_remaining(pb::GetRemainingRequest { slot: Some(slot.clone()) }).await.unwrap();
    assert_eq!(seats(&remaining.into_inner()), (6, 10));
    let booked = client.create_reservation(reserve("r-2", "u-2", &slot, 6)).await.unwrap().into_inner();
    assert_eq!(booked.party_size, 6);
    drop(server);
    delete_namespace(&app.redis_url, &moved_to).await.unwrap();
}

fn with_token<T>(message: T, scheme: &str, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("{scheme} {token}").parse().unwrap());
    request
}

/// Whether a token gets a business call through (any answer but
/// UNAUTHENTICATED).
async fn lets_in(client: &mut ReservationsClient<tonic::transport::Channel>, scheme: &str, token: &str) -> bool {
    let call = with_token(pb::GetRemainingRequest { slot: Some(slot_at("21:00")) }, scheme, token);
    match client.get_remaining(call).await {
        Ok(_) => true,
        Err(status) => status.code() != Code::Unauthenticated,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_the_redis_password_rotated_in_their_files_apply_on_sighup_without_a_restart() {
    let files = Pki::new("secrets");
    let old_token = "old-token-0123456789abcdef";
    let new_token = "new-token-0123456789abcdef";
    let tokens = files.write("tokens", &format!("web:caller:{old_token}\n"));
    // A Redis of the test's own whose only user logs in with a password.
    let redis = PrivateRedis::start().await;
    let mut admin = redis.connection().await;
    redis::cmd("ACL")
        .arg(&["SETUSER", "slotgate", "on", ">first-password", "~*", "&*", "+@all"][..])
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let password = files.write("redis-password", "first-password\n");
    let db = TestDb::create().await;
    let namespace = unique_name("hup");
    let url = db.url.clone();
    let server = SlotgateProcess::start(vec![
        ("DATABASE_URL_FILE".into(), files.write("database-url", &format!("{url}\n")).display().to_string()),
        ("REDIS_URL".into(), format!("redis://slotgate@127.0.0.1:{}", redis.addr().port())),
        ("SLOTGATE_REDIS_PASSWORD_FILE".into(), password.display().to_string()),
        ("SLOTGATE_REDIS_NAMESPACE".into(), namespace),
        ("SLOTGATE_AUTH_TOKENS_FILE".into(), tokens.display().to_string()),
    ])
    .await;
    let mut client = ReservationsClient::new(connect(server.addr).await);
    assert!(lets_in(&mut client, "Bearer", old_token).await);
    assert!(lets_in(&mut client, "bearer", old_token).await, "the scheme's name is read in any case");
    assert!(!lets_in(&mut client, "Bearer", new_token).await);
    let remaining = client
        .get_remaining(with_token(pb::GetRemainingRequest { slot: Some(slot_at("21:00")) }, "Bearer", old_token))
        .await;
    assert_eq!(
        reason_of(&remaining.unwrap_err()),
        (Code::NotFound, "SLOT_NOT_FOUND".into()),
        "Redis and the database answer"
    );

    // Both secrets rotate: the token file is rewritten, and Redis takes a
    // new password and drops the connections logged in with the old one.
    std::fs::write(&tokens, format!("web:caller:{new_token}\n")).unwrap();
    std::fs::write(&password, "second-password\n").unwrap();
    redis::cmd("ACL")
        .arg(&["SETUSER", "slotgate", "resetpass", ">second-password"][..])
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    redis::cmd("CLIENT").arg(&["KILL", "USER", "slotgate"][..]).query_async::<i64>(&mut admin).await.unwrap();
    server.signal("HUP");
    let rotated = eventually(
        Patience::up_to(Duration::from_secs(10)),
        async || lets_in(&mut client, "Bearer", new_token).await && !lets_in(&mut client, "Bearer", old_token).await,
        |rotated| *rotated,
    )
    .await;
    assert!(rotated, "the new token replaced the old one");
    // New Redis connections log in with the new password.
    let answered = eventually(
        Patience::up_to(Duration::from_secs(10)),
        async || {
            let call = with_token(pb::GetRemainingRequest { slot: Some(slot_at("21:00")) }, "Bearer", new_token);
            client.get_remaining(call).await.err().map(|s| reason_of(&s).1)
        },
        |reason| reason.as_deref() == Some("SLOT_NOT_FOUND"),
    )
    .await;
    assert_eq!(answered.as_deref(), Some("SLOT_NOT_FOUND"), "Redis answers again");
    drop(server);
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_database_url_is_used_by_new_connections_after_sighup_but_never_moves_to_another_database() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("17:00");
    app.open(&[(slot.clone(), 6)]).await;
    let files = Pki::new("db-rotation");
    let url_file = files.write("database-url", &format!("{}\n", app.config.database.database_url));
    let log = files.write("slotgate.log", "");
    let mut env = app.env_by_hand();
    env.retain(|(k, _)| k != "DATABASE_URL");
    env.push(("DATABASE_URL_FILE".into(), url_file.display().to_string()));
    let server = SlotgateProcess::start_logging_to(env, Some(log.clone())).await;
    let mut client = ReservationsClient::new(connect(server.addr).await);
    let remaining = async |client: &mut ReservationsClient<tonic::transport::Channel>| {
        client.get_remaining(pb::GetRemainingRequest { slot: Some(slot.clone()) }).await.map(|r| seats(&r.into_inner()))
    };
    assert_eq!(remaining(&mut client).await.unwrap(), (6, 6));

    // Another database: refused, the link kept.
    let other = TestDb::create().await;
    std::fs::write(&url_file, format!("{}\n", other.url)).unwrap();
    server.signal("HUP");
    let said = eventually(
        Patience::up_to(Duration::from_secs(10)),
        async || std::fs::read_to_string(&log).unwrap_or_default(),
        |log| log.contains("a reload cannot move to another database"),
    )
    .await;
    assert!(said.contains("database link kept"), "{said}");

    // The same database with other connection settings (as a rotated
    // password would be): connections opened after the signal use them.
    let rotated = format!("{}&application_name=rotated-link", app.config.database.database_url);
    std::fs::write(&url_file, format!("{rotated}\n")).unwrap();
    server.signal("HUP");
    let said = eventually(
        Patience::up_to(Duration::from_secs(10)),
        async || std::fs::read_to_string(&log).unwrap_or_default(),
        |log| log.contains("database URL and certificates read again"),
    )
    .await;
    assert!(said.contains("database URL and certificates read again"), "{said}");
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut db = app.database().await;
    // The server's pooled connections end; the next call opens new ones.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ),
        &mut db,
    )
    .await
    .unwrap();
    let served = eventually(
        Patience::up_to(Duration::from_secs(10)),
        async || client.create_reservation(reserve("r-1", "u-1", &slot, 2)).await.is_ok(),
        |ok| *ok,
    )
    .await;
    assert!(served);
    let rotated_connections: Count = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'rotated-link'",
        ),
        &mut db,
    )
    .await
    .unwrap();
    assert!(rotated_connections.n > 0, "new connections use the rotated URL");
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_url_given_as_a_file_is_used() {
    let files = Pki::new("db-url");
    let app = spawn_app_with(|c| {
        let file = files.write("database-url", &format!("{}\n", c.database.database_url));
        c.database.database_url = "postgres://nobody@127.0.0.1:1/unused?sslmode=disable".into();
        c.database.database_url_file = Some(file);
    })
    .await;
    let slot = slot_at("18:00");
    app.open(&[(slot.clone(), 4)]).await;
    app.create(reserve("r-1", "u-1", &slot, 4)).await.unwrap();
}
