//! Spawns the real slotgate (the same `Application` `main` runs) on port 0,
//! against the machine's PostgreSQL and Redis, each test in a database of its
//! own (cloned from a migrated template, dropped afterwards) and a Redis key
//! namespace of its own.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use diesel::{QueryableByName, sql_query, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use slotgate::{
    booking::Booking,
    clock::ManualClock,
    config::Config,
    links::PgLink,
    metrics::Metrics,
    pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient},
    server::Application,
};
use tokio::{
    sync::{OnceCell, oneshot, watch},
    task::JoinHandle,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// Maintenance database URL (any database the tests may connect to in
/// order to create and drop others).
fn admin_url() -> String {
    std::env::var("SLOTGATE_TEST_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A test database's URL: plaintext, as the machine's own PostgreSQL is
/// reached over loopback (the TLS tests run servers of their own).
fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}?sslmode=disable")
}

/// Names unique across the test processes running now (pid + counter + time).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A loopback port free right now, for a server of a test's own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `work` to the end on a thread with a runtime of its own: `Drop`
/// cannot await, and the test's runtime may be shutting down.
fn block_on_own_thread<F: Future<Output = ()>>(work: impl FnOnce() -> F + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(work());
    })
    .join();
}

/// The migrations' content decides the template's name, so editing a
/// migration makes a fresh template instead of reusing a stale one.
fn migrations_digest() -> u64 {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                // Relative names: every checkout of the same migrations
                // shares one template.
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in files.iter().flat_map(|(name, body)| name.bytes().chain(body.iter().copied())) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

async fn admin_connection() -> AsyncPgConnection {
    AsyncPgConnection::establish(&admin_url()).await.expect("connect to the maintenance database")
}

/// Creates the migrated template once per digest. Several test processes may
/// race here (nextest runs one per test): an advisory lock makes them take
/// turns, and the template is built under a temporary name and renamed when
/// complete, so no one ever clones a half-migrated template.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("slotgate_tmpl_{:016x}", migrations_digest());
            let mut conn = admin_connection().await;
            sql_query("SELECT pg_advisory_lock(7310)").execute(&mut conn).await.unwrap();
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let found: Count = sql_query(format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"))
                .get_result(&mut conn)
                .await
                .unwrap();
            if found.n == 0 {
                let building = format!("{name}_build");
                conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{building}\"")).await.unwrap();
                conn.batch_execute(&format!("CREATE DATABASE \"{building}\"")).await.unwrap();
                let link = slotgate::links::PgLink::from_url(&database_url(&building)).unwrap();
                slotgate::store::migrate(&link).await.expect("migrate the template");
                conn.batch_execute(&format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"")).await.unwrap();
                // Templates of older migrations are dead weight, but a run of
                // another checkout (other migrations) may be cloning from
                // one right now: only templates built more than a day ago go.
                let built = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                conn.batch_execute(&format!("COMMENT ON DATABASE \"{name}\" IS 'built {built}'")).await.unwrap();
                #[derive(QueryableByName)]
                struct Name {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    datname: String,
                }
                let stale: Vec<Name> = sql_query(format!(
                    "SELECT datname FROM pg_database d
                     WHERE datname LIKE 'slotgate\\_tmpl\\_%' AND datname <> '{name}'
                       AND COALESCE(substring(shobj_description(d.oid, 'pg_database') FROM '^built ([0-9]+)$')::bigint, 0)
                           < {built} - 86400"
                ))
                .load(&mut conn)
                .await
                .unwrap();
                for Name { datname } in stale {
                    let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{datname}\"")).await;
                }
            }
            sql_query("SELECT pg_advisory_unlock(7310)").execute(&mut conn).await.unwrap();
            name
        })
        .await
}

/// A database of one test's own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let template = template().await;
        let name = unique_name("sgt_");
        admin_connection()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""))
            .await
            .expect("clone the template database");
        Self { url: database_url(&name), name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_own_thread(|| async move {
            // FORCE ends the connections still open to it (a server's pool).
            let _ = admin_connection()
                .await
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        });
    }
}

/// One running slotgate and clients for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub reservations: ReservationsClient<Channel>,
    pub admin: SlotAdminClient<Channel>,
    pub metrics: Arc<Metrics>,
    /// The use cases behind the server, to run background work by hand.
    pub booking: Arc<Booking>,
    /// Deposit deadlines are read from this clock; it moves when told to.
    pub clock: Arc<ManualClock>,
    /// Held for its `Drop`, which drops the database after the server stops.
    _db: TestDb,
    pub namespace: String,
    pub redis_url: String,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
}

/// A second slotgate on the same database and Redis namespace as a
/// [`TestApp`], as another replica would be. Stops when dropped.
pub struct Replica {
    pub addr: SocketAddr,
    pub booking: Arc<Booking>,
    _shutdown: oneshot::Sender<()>,
}

/// Builds and serves an application; the server stops when the returned
/// sender is dropped or fired.
async fn serve(
    config: Config,
    clock: Arc<ManualClock>,
) -> (SocketAddr, Arc<Metrics>, Arc<Booking>, oneshot::Sender<()>) {
    let app = Application::build_with_clock(config, clock).await.expect("build the application");
    let (addr, metrics, booking) = (app.local_addr(), app.metrics(), app.booking());
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (addr, metrics, booking, shutdown)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app with its background work (reaper, expiry sweeper, reconciler)
/// off, for tests that run those passes by hand and count what they did.
pub async fn spawn_app_by_hand() -> TestApp {
    spawn_app_with(by_hand).await
}

/// Waits long enough that the tail of a burst is answered, not timed out.
/// Thousands of calls at one instant on a small, shared machine (client and
/// server in one debug-built process, tests running side by side) can keep
/// the tail waiting past the production fail-fast bounds, which would turn
/// machine noise into UNAVAILABLE or DEADLINE_EXCEEDED. For tests that
/// assert exact outcomes under load; speed is the load tool's to measure.
pub fn generous_timeouts(c: &mut Config) {
    c.pool_timeout = Duration::from_secs(60);
    // A connect that times out marks Redis down, and checkouts then fail
    // fast: opening the pool's connections mid-burst must not time out.
    c.redis_connect_timeout = Duration::from_secs(60);
    c.redis_command_timeout = Duration::from_secs(60);
    c.request_timeout = Duration::from_secs(120);
    shortest_lease(c);
}

/// Sets the hold lease to the shortest the configuration accepts (see
/// `Config::check`) for the timeouts set so far: fault tests heal sooner.
pub fn shortest_lease(c: &mut Config) {
    c.hold_lease = 2 * (c.redis_command_timeout + c.pool_timeout + c.db_transaction_timeout);
}

/// Turns the background loops off.
pub fn by_hand(c: &mut Config) {
    c.reap_interval = Duration::ZERO;
    c.expiry_sweep_interval = Duration::ZERO;
    c.reconcile_interval = Duration::ZERO;
}

/// A test's settings: its own database and Redis namespace, any port.
fn test_config(db: &TestDb) -> Config {
    let mut config = Config::from_env();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database.database_url = db.url.clone();
    config.redis_url = redis_url();
    config.redis_namespace = unique_name("t");
    config
}

/// Why slotgate refuses to start with the test's settings adjusted by
/// `tweak` (it must refuse).
pub async fn start_refused(tweak: impl FnOnce(&mut Config)) -> String {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    tweak(&mut config);
    let (redis_url, namespace) = (config.redis_url.clone(), config.redis_namespace.clone());
    let refused = match Application::build(config).await {
        Ok(_) => panic!("slotgate started"),
        Err(e) => e.to_string(),
    };
    let _ = delete_namespace(&redis_url, &namespace).await;
    refused
}

/// Spawns slotgate with the test's settings adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    // Logs only when asked (RUST_LOG=...), captured per test by the harness.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    let namespace = config.redis_namespace.clone();
    tweak(&mut config);

    let redis_url = config.redis_url.clone();
    let clock = ManualClock::starting_now();
    let (addr, metrics, booking, shutdown) = serve(config.clone(), Arc::clone(&clock)).await;
    let channel = connect(addr).await;
    TestApp {
        addr,
        reservations: ReservationsClient::new(channel.clone()),
        admin: SlotAdminClient::new(channel),
        metrics,
        booking,
        clock,
        _db: db,
        namespace,
        redis_url,
        config,
        shutdown: Some(shutdown),
    }
}

/// One HTTP/2 connection to the server.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect to slotgate")
}

impl Drop for TestApp {
    /// Stops the server and deletes the Redis namespace; the database drops
    /// itself when the `_db` field goes, after this.
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let (namespace, redis_url) = (self.namespace.clone(), self.redis_url.clone());
        block_on_own_thread(|| async move {
            let _ = delete_namespace(&redis_url, &namespace).await;
        });
    }
}

pub async fn delete_namespace(redis_url: &str, namespace: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl TestApp {
    /// A connection to the database this app uses (the test's own, or a
    /// private server's).
    pub async fn database(&self) -> AsyncPgConnection {
        let link = PgLink::new(self.config.database.url()).expect("the app's database URL");
        link.connect().await.expect("connect to the app's database")
    }

    /// The settings this app runs with, as environment variables, for a
    /// slotgate process that should share its database and Redis namespace.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.config.database.database_url.clone()),
            ("REDIS_URL".into(), self.redis_url.clone()),
            ("SLOTGATE_REDIS_NAMESPACE".into(), self.namespace.clone()),
        ]
    }

    /// As [`TestApp::env`], with the process's background work off (what
    /// [`by_hand`] does to a config).
    pub fn env_by_hand(&self) -> Vec<(String, String)> {
        let mut env = self.env();
        let loops =
            ["SLOTGATE_REAP_INTERVAL_MS", "SLOTGATE_EXPIRY_SWEEP_INTERVAL_MS", "SLOTGATE_RECONCILE_INTERVAL_MS"];
        env.extend(loops.map(|off| (off.to_owned(), "0".to_owned())));
        env
    }

    /// Starts another replica of this app (same database, same Redis
    /// namespace, same clock).
    pub async fn spawn_replica(&self) -> Replica {
        self.spawn_replica_with_clock(Arc::clone(&self.clock)).await
    }

    /// [`TestApp::spawn_replica`] with a clock of its own (a replica whose
    /// process clock is off).
    pub async fn spawn_replica_with_clock(&self, clock: Arc<ManualClock>) -> Replica {
        let (addr, _, booking, shutdown) = serve(self.config.clone(), clock).await;
        Replica { addr, booking, _shutdown: shutdown }
    }

    /// The name of one of a slot's gate keys (`seats`, `users`, `ids`, `holds`).
    pub fn key(&self, slot: &pb::SlotRef, which: &str) -> String {
        format!("{}:{{{}:{}:{}}}:{which}", self.namespace, slot.restaurant_id, slot.date, slot.time)
    }

    /// A plain connection to the Redis this app uses, to inspect or damage
    /// the gate's keys.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Deletes every key of this test's namespace (as a Redis restart would).
    pub async fn flush_redis(&self) {
        delete_namespace(&self.redis_url, &self.namespace).await.unwrap();
    }

    /// Opens slots with the given capacities.
    pub async fn open(&self, slots: &[(pb::SlotRef, i32)]) -> pb::OpenSlotsResponse {
        let request = pb::OpenSlotsRequest {
            slots: slots
                .iter()
                .map(|(slot, capacity)| pb::SlotCapacity {
                    slot: Some(slot.clone()),
                    capacity: *capacity,
                    ..Default::default()
                })
                .collect(),
        };
        self.admin.clone().open_slots(request).await.expect("open slots").into_inner()
    }

    pub async fn create(&self, request: pb::CreateReservationRequest) -> Result<pb::Reservation, Status> {
        self.reservations.clone().create_reservation(request).await.map(tonic::Response::into_inner)
    }

    /// Holds in flight in a slot's gate.
    pub async fn holds(&self, slot: &pb::SlotRef) -> usize {
        redis::cmd("HLEN").arg(self.key(slot, "holds")).query_async(&mut self.redis().await).await.unwrap()
    }

    pub async fn cancel(&self, id: &str, reason: pb::CancelReason) -> Result<pb::CancelReservationResponse, Status> {
        self.reservations
            .clone()
            .cancel_reservation(pb::CancelReservationRequest { id: id.into(), reason: reason as i32 })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn remaining(&self, slot: &pb::SlotRef) -> pb::GetRemainingResponse {
        self.reservations
            .clone()
            .get_remaining(pb::GetRemainingRequest { slot: Some(slot.clone()) })
            .await
            .expect("get remaining")
            .into_inner()
    }

    /// What the database says of a slot: (capacity, reserved, sum of the
    /// party sizes of its active reservations).
    pub async fn db_slot(&self, slot: &pb::SlotRef) -> (i32, i32, i64) {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            capacity: i32,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            reserved: i32,
            #[diesel(sql_type = BigInt)]
            active: i64,
        }
        let row: Row = sql_query(
            "SELECT s.capacity, s.reserved,
                    (SELECT COALESCE(sum(r.party_size), 0)::bigint FROM reservations r
                     WHERE r.slot_id = s.id AND r.status IN ('PENDING_DEPOSIT', 'CONFIRMED')) AS active
             FROM slots s WHERE s.restaurant_id = $1 AND s.slot_date = $2::date AND s.slot_time = $3::time",
        )
        .bind::<BigInt, _>(slot.restaurant_id)
        .bind::<diesel::sql_types::Text, _>(&slot.date)
        .bind::<diesel::sql_types::Text, _>(&slot.time)
        .get_result(&mut self.database().await)
        .await
        .expect("read the slot");
        (row.capacity, row.reserved, row.active)
    }
}

/// How long [`eventually`] keeps looking, and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub within: Duration,
    pub every: Duration,
}

impl Patience {
    /// Up to `within`, looking every 20 ms.
    pub const fn up_to(within: Duration) -> Self {
        Self { within, every: Duration::from_millis(20) }
    }

    /// Looking every `every` instead.
    pub const fn every(self, every: Duration) -> Self {
        Self { every, ..self }
    }
}

impl Default for Patience {
    /// Ten seconds: how long to look, not a speed claim (the background
    /// passes tests wait for run every 50-100 ms).
    fn default() -> Self {
        Self::up_to(Duration::from_secs(10))
    }
}

/// Reads until `done` holds or `patience` runs out, and returns the last
/// reading for the caller to assert on.
pub async fn eventually<T>(patience: Patience, mut read: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let until = tokio::time::Instant::now() + patience.within;
    loop {
        let value = read().await;
        if done(&value) || tokio::time::Instant::now() >= until {
            return value;
        }
        tokio::time::sleep(patience.every).await;
    }
}

/// A slot at `time` of the restaurant (67) and date every test books into.
pub fn slot_at(time: &str) -> pb::SlotRef {
    pb::SlotRef { restaurant_id: 67, date: "2036-12-24".into(), time: time.into() }
}

/// A valid deposit reservation request.
pub fn reserve(request_id: &str, user_id: &str, slot: &pb::SlotRef, party_size: i32) -> pb::CreateReservationRequest {
    pb::CreateReservationRequest {
        request_id: request_id.into(),
        user_id: user_id.into(),
        slot: Some(slot.clone()),
        party_size,
        r#type: pb::ReservationType::ReservationDeposit as i32,
        menu_items: vec![],
    }
}

/// (remaining, capacity) of a `GetRemaining` answer.
pub fn seats(r: &pb::GetRemainingResponse) -> (i32, i32) {
    (r.remaining, r.capacity)
}

/// The status code and the `ErrorInfo` reason of an error.
pub fn reason_of(status: &Status) -> (Code, String) {
    let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
    (status.code(), reason)
}

/// Calls released together from a start line by [`release_together`].
pub struct InFlight<T>(Vec<JoinHandle<T>>);

impl<T> InFlight<T> {
    /// Waits for every call; their results in request order.
    pub async fn results(self) -> Vec<T> {
        let mut results = Vec::with_capacity(self.0.len());
        for handle in self.0 {
            results.push(handle.await.unwrap());
        }
        results
    }
}

/// Makes `call` once per request, all at once: every call is created first
/// and waits at a start line, then all are released together, spread over
/// `connections` HTTP/2 connections. Returns as soon as they are released.
pub async fn release_together<R, T, F>(
    addr: SocketAddr,
    connections: usize,
    requests: Vec<R>,
    call: impl Fn(ReservationsClient<Channel>, R) -> F,
) -> InFlight<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(ReservationsClient::new(connect(addr).await));
    }
    let (go, start_line) = watch::channel(false);
    let handles = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let call = call(clients[i % connections].clone(), request);
            let mut start_line = start_line.clone();
            tokio::spawn(async move {
                start_line.wait_for(|go| *go).await.unwrap();
                call.await
            })
        })
        .collect();
    go.send(true).unwrap();
    InFlight(handles)
}

/// Fires every request at once from a start line (see
/// [`release_together`]); the answers in request order.
pub async fn burst(
    addr: SocketAddr,
    requests: Vec<pb::CreateReservationRequest>,
    connections: usize,
) -> Vec<Result<pb::Reservation, Status>> {
    let calls = release_together(addr, connections, requests, |mut client, request| async move {
        client.create_reservation(request).await.map(tonic::Response::into_inner)
    });
    calls.await.results().await
}

/// Outcomes tallied as "OK" or "CODE/REASON".
pub fn tally(results: &[Result<pb::Reservation, Status>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in results {
        let key = match r {
            Ok(_) => "OK".to_owned(),
            Err(s) => {
                let (code, reason) = reason_of(s);
                format!("{code:?}/{reason}")
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The seeds a model test runs: `SLOTGATE_MODEL_SEED` alone if set, else
/// as many as the variable `count` says (default `cases`), counting up from
/// a random start, different on every run (each is printed with a failure).
pub fn model_seeds(count: &str, cases: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SLOTGATE_MODEL_SEED") {
        return vec![seed.parse().expect("SLOTGATE_MODEL_SEED is a number")];
    }
    let cases = std::env::var(count).ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    use std::hash::BuildHasher;
    // Seeded from the OS once per process: a new start on every run.
    let start = std::collections::hash_map::RandomState::new().hash_one(0u8) >> 16;
    (start..start + cases).collect()
}

/// splitmix64, for the model tests: small, fast, and the same sequence for
/// the same seed everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the database says of every slot, for the model tests' audits.
#[derive(QueryableByName)]
pub struct SlotAudit {
    /// `HH:MM`.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub time: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub capacity: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub reserved: i32,
    /// The seats of its active reservations.
    #[diesel(sql_type = BigInt)]
    pub active: i64,
    /// Users holding more than one active reservation in it.
    #[diesel(sql_type = BigInt)]
    pub doubled: i64,
    /// Seats set aside for its waitlist.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub set_aside: i32,
}

/// Every slot of the database, in time order.
pub async fn audit_slots(conn: &mut AsyncPgConnection) -> Result<Vec<SlotAudit>, diesel::result::Error> {
    sql_query(
        "SELECT to_char(s.slot_time, 'HH24:MI') AS time, s.capacity, s.reserved,
                (SELECT COALESCE(sum(r.party_size), 0)::bigint FROM reservations r
                 WHERE r.slot_id = s.id AND r.status IN ('PENDING_DEPOSIT', 'CONFIRMED')) AS active,
                (SELECT count(*) FROM (SELECT r.user_id FROM reservations r
                 WHERE r.slot_id = s.id AND r.status IN ('PENDING_DEPOSIT', 'CONFIRMED')
                 GROUP BY r.user_id HAVING count(*) > 1) d) AS doubled,
                s.set_aside
         FROM slots s ORDER BY s.slot_time",
    )
    .load(conn)
    .await
}
