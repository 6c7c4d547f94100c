//! Things to break: a private PostgreSQL, Redis, Redis Cluster and slotgate
//! processes of a test's own (killed or stopped without harming anything
//! else), and a TCP proxy that delays traffic or cuts connections. This
//! machine has no netem and no toxiproxy, so faults are made here.
//!
//! Every process started here keeps what it writes in a log file: one that
//! cannot start, or exits while the test waits for it, fails the test with
//! its own exit status and the end of that log.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::helpers::{Patience, eventually, free_port};

/// The last lines of a log, to quote in a failure.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    if tail.trim().is_empty() { format!("(nothing in {})", log.display()) } else { tail }
}

/// Where a helper process's standard output goes (its standard error always
/// goes to its log).
pub enum Stdout {
    /// To the log, with its standard error.
    Log,
    /// To a file of its own (what the test reads, as a collector's output).
    File(PathBuf),
    /// Nowhere: the log holds only its standard error.
    Discard,
}

/// A process started by a test, killed and reaped when dropped.
pub struct Helper {
    name: String,
    log: PathBuf,
    child: Child,
}

/// What [`Helper::wait_ready`] saw last.
enum Readiness {
    Ready,
    NotYet,
    Exited(String),
}

impl Helper {
    /// Starts `command`, its standard error appended to `log`. `name` is
    /// what failures call it.
    pub fn spawn(name: &str, mut command: Command, log: &Path, stdout: Stdout) -> Self {
        let append = |path: &Path| File::options().create(true).append(true).open(path).unwrap();
        let stdout = match stdout {
            Stdout::Log => Stdio::from(append(log)),
            Stdout::File(path) => Stdio::from(File::create(path).unwrap()),
            Stdout::Discard => Stdio::null(),
        };
        #[allow(clippy::zombie_processes)] // reaped in Drop
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(append(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{name} could not be started ({:?}): {e}", command.get_program()));
        Self { name: name.to_owned(), log: log.to_owned(), child }
    }

    /// Its exit status and the end of its log, once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        Some(format!("{} exited ({status}); its log ({}) ends:\n{}", self.name, self.log.display(), tail(&self.log)))
    }

    /// Waits until `ready` holds. Fails the test with the process's own
    /// exit status and log if it exits first, or with its log if it is not
    /// ready within `patience`.
    pub async fn wait_ready(&mut self, patience: Patience, mut ready: impl AsyncFnMut() -> bool) {
        let seen = eventually(
            patience,
            async || match self.exited() {
                Some(exit) => Readiness::Exited(exit),
                None if ready().await => Readiness::Ready,
                None => Readiness::NotYet,
            },
            |seen| !matches!(seen, Readiness::NotYet),
        )
        .await;
        match seen {
            Readiness::Ready => {}
            Readiness::Exited(exit) => panic!("{exit}"),
            Readiness::NotYet => panic!(
                "{} was not ready within {:?}; its log ({}) ends:\n{}",
                self.name,
                patience.within,
                self.log.display(),
                tail(&self.log)
            ),
        }
    }

    /// Waits (up to `patience`) for it to exit on its own; its exit code.
    /// Past that it is killed and `None` returned.
    pub async fn wait_exit(mut self, patience: Duration) -> Option<i32> {
        let exited = async || self.child.try_wait().ok().flatten();
        eventually(Patience::up_to(patience), exited, Option::is_some).await?.code()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to its end; fails the test with its exit status and what
/// it wrote if it fails. `also` is a log worth quoting with it.
fn run(what: &str, command: &mut Command, also: Option<&Path>) {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    if !out.status.success() {
        let log = also.map(|log| format!("\n{} ends:\n{}", log.display(), tail(log))).unwrap_or_default();
        panic!(
            "{what} failed ({}):\n{}{}{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A PostgreSQL cluster of one test's own, on a free port in a temporary
/// directory. PostgreSQL refuses to run as root, so as root it runs as the
/// `postgres` user.
pub struct PrivatePostgres {
    pub url: String,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        Self::start_configured(|_| {}).await
    }

    /// A cluster whose configuration `configure` edits before it first
    /// starts (it is given the data directory: `postgresql.conf`,
    /// `pg_hba.conf`, and room for certificate files).
    pub async fn start_configured(configure: impl FnOnce(&Path)) -> Self {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .unwrap();
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let dir = std::env::temp_dir().join(format!("slotgate-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let pg = Self { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), dir, bin, port };
        if is_root() {
            run("chown the data directory", Command::new("chown").args(["postgres:postgres"]).arg(&pg.dir), None);
        }
        let mut initdb = pg.as_owner(pg.bin.join("initdb"));
        run("initdb", initdb.arg("-D").arg(pg.data()).args(["-A", "trust", "-U", "postgres"]), None);
        configure(&pg.data());
        if is_root() {
            run(
                "chown what was configured",
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(pg.data()),
                None,
            );
        }
        pg.restart().await;
        pg
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// A command run as the cluster's owner.
    fn as_owner(&self, program: PathBuf) -> Command {
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// Starts (or starts again) the server and waits until it accepts.
    pub async fn restart(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let mut pg_ctl = self.as_owner(self.bin.join("pg_ctl"));
        pg_ctl.arg("-D").arg(self.data()).args(["-o", &options, "-w", "-l"]).arg(self.log()).arg("start");
        run("pg_ctl start", &mut pg_ctl, Some(&self.log()));
    }

    /// Crash stop: connections cut, nothing flushed politely.
    pub fn stop(&self) {
        let mut pg_ctl = self.as_owner(self.bin.join("pg_ctl"));
        pg_ctl.arg("-D").arg(self.data()).args(["-m", "immediate", "stop"]);
        let _ = pg_ctl.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A redis-server of one test's own on a free loopback port, for tests that
/// stall or kill it; killed when dropped.
pub struct PrivateRedis {
    pub url: String,
    port: u16,
    log: PathBuf,
    /// `None` while killed.
    server: Option<Helper>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("slotgate-redis-{}-{port}.log", std::process::id()));
        let mut redis = Self { url: format!("redis://127.0.0.1:{port}"), port, log, server: None };
        redis.restart().await;
        redis
    }

    /// Starts the server again on the same port (empty: it keeps nothing).
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "kill it first");
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let mut server = Helper::spawn(&format!("redis-server on port {}", self.port), command, &self.log, Stdout::Log);
        let url = self.url.clone();
        server
            .wait_ready(Patience::up_to(Duration::from_secs(2)), async || {
                let Ok(client) = redis::Client::open(url.as_str()) else { return false };
                client.get_multiplexed_async_connection().await.is_ok()
            })
            .await;
        self.server = Some(server);
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `kill -9`: everything it held is gone.
    pub fn kill(&mut self) {
        self.server = None;
    }

    /// Keeps this Redis busy for `stall` (it answers no one meanwhile) and
    /// returns once the stall has begun; the handle ends with it.
    pub async fn stall(&self, stall: Duration) -> tokio::task::JoinHandle<()> {
        let mut probe = self.connection().await;
        let stalled = tokio::spawn(self.busy(stall));
        // Begun once a PING from another connection goes unanswered (a
        // loaded machine may take a while to get the script to Redis).
        let answered = async || {
            let ping = redis::cmd("PING");
            tokio::time::timeout(Duration::from_millis(100), ping.query_async::<String>(&mut probe)).await.is_ok()
        };
        let patience = Patience::up_to(stall / 2).every(Duration::from_millis(5));
        assert!(!eventually(patience, answered, |answered| !answered).await, "the stall did not begin");
        stalled
    }

    /// Keeps this Redis busy for `stall` once the script reaches it; ends
    /// with the stall.
    pub fn busy(&self, stall: Duration) -> impl Future<Output = ()> + Send + 'static {
        const BUSY: &str = "local t0 = redis.call('TIME') local start = t0[1] * 1000000 + t0[2]
            while true do local t = redis.call('TIME') if t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000 then break end end
            return 1";
        let url = self.url.clone();
        let millis = stall.as_millis() as u64;
        async move {
            let mut conn = connection_to(&url).await;
            redis::cmd("EVAL").arg(BUSY).arg(0).arg(millis).query_async::<i64>(&mut conn).await.expect("the stall");
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        connection_to(&self.url).await
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A TCP proxy in front of one upstream: traffic can be delayed, and every
/// connection through it cut at once (with a reset, mid-whatever).
pub struct FaultProxy {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    cut: watch::Sender<u64>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (cut, cuts) = watch::channel(0u64);
        let delay = Arc::clone(&delay_ms);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (delay, cuts) = (Arc::clone(&delay), cuts.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, delay, cuts).await;
                    }
                });
            }
        });
        Self { addr, delay_ms, cut }
    }

    /// Adds `delay` before every chunk forwarded, both ways.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Resets every connection open through the proxy now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Slows traffic by `delay` for `slow_for`, then resets every
    /// connection and lets traffic through at full speed again.
    pub async fn slow_down_then_cut(&self, delay: Duration, slow_for: Duration) {
        self.set_delay(delay);
        tokio::time::sleep(slow_for).await;
        self.cut_all();
        self.set_delay(Duration::ZERO);
    }
}

async fn pipe(client: TcpStream, server: TcpStream, delay: Arc<AtomicU64>, mut cuts: watch::Receiver<u64>) {
    let generation = *cuts.borrow_and_update();
    // A reset, not a polite close: the peer sees the connection die. (The
    // deprecation warns that a non-zero linger blocks on drop; zero does not
    // block, it resets.)
    #[allow(deprecated)]
    {
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = server.set_linger(Some(Duration::ZERO));
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let forward = |mut from: tokio::net::tcp::OwnedReadHalf,
                   mut to: tokio::net::tcp::OwnedWriteHalf,
                   delay: Arc<AtomicU64>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let ms = delay.load(Ordering::Relaxed);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever ends first, the other arms (and the socket halves they own)
    // are dropped, which closes both sockets with a reset.
    tokio::select! {
        _ = forward(client_read, server_write, Arc::clone(&delay)) => {}
        _ = forward(server_read, client_write, delay) => {}
        _ = cuts.wait_for(|n| *n != generation) => {}
    }
}

/// A connection with no reply timeout: the fault kit runs deliberately
/// slow scripts on it.
async fn connection_to(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap()
}

/// slotgate as a separate process (the binary the tests were built with),
/// to be killed with SIGKILL and started again.
pub struct SlotgateProcess {
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    /// Where its log (stderr) goes.
    log: PathBuf,
    /// Whether the log is a temporary file of this process's own, deleted
    /// with it, rather than one the test reads.
    log_is_temporary: bool,
    /// `None` while killed or exited.
    process: Option<Helper>,
}

impl SlotgateProcess {
    /// Starts `slotgate serve` with these settings (environment variables,
    /// as in production) on a free port, and waits until it accepts.
    pub async fn start(env: Vec<(String, String)>) -> Self {
        Self::start_logging_to(env, None).await
    }

    /// As `start`, with its log (stderr) written to `log`.
    pub async fn start_logging_to(env: Vec<(String, String)>, log: Option<PathBuf>) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log_is_temporary = log.is_none();
        let log = log.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("slotgate-process-{}-{}.log", std::process::id(), addr.port()))
        });
        let mut process = Self { addr, env, log, log_is_temporary, process: None };
        process.restart().await;
        process
    }

    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "kill it first");
        let mut command = Command::new(env!("CARGO_BIN_EXE_slotgate"));
        command
            .arg("serve")
            .env("SLOTGATE_LISTEN", self.addr.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut process = Helper::spawn(&format!("slotgate on {}", self.addr), command, &self.log, Stdout::Discard);
        let addr = self.addr;
        process
            .wait_ready(Patience::up_to(Duration::from_secs(5)).every(Duration::from_millis(25)), async || {
                TcpStream::connect(addr).await.is_ok()
            })
            .await;
        self.process = Some(process);
    }

    /// Sends SIGTERM, as Kubernetes does before stopping a pod.
    pub fn signal_terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        if let Some(process) = &self.process {
            let _ = Command::new("kill").arg(format!("-{name}")).arg(process.id().to_string()).status();
        }
    }

    /// SIGTERM, then wait (up to `patience`) for it to exit; its exit code.
    pub async fn terminate(&mut self, patience: Duration) -> Option<i32> {
        self.signal_terminate();
        self.wait_exit(patience).await
    }

    /// Waits (up to `patience`) for it to exit; its exit code. Past that it
    /// is killed and `None` returned.
    pub async fn wait_exit(&mut self, patience: Duration) -> Option<i32> {
        self.process.take()?.wait_exit(patience).await
    }

    /// `kill -9`: whatever it was doing stops mid-way.
    pub fn kill(&mut self) {
        self.process = None;
    }
}

impl Drop for SlotgateProcess {
    fn drop(&mut self) {
        self.kill();
        if self.log_is_temporary {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A Redis Cluster of a test's own: `masters` redis-servers on free loopback
/// ports, joined with `redis-cli --cluster create`, killed when dropped.
pub struct PrivateRedisCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    servers: Vec<Helper>,
    /// What redis-cli needs to reach the nodes (their TLS).
    cli: Vec<String>,
    scheme: &'static str,
}

/// The TLS of a cluster's nodes: their certificate and key, and the CA
/// (with a client certificate, for redis-cli) that clients check them with.
pub struct ClusterTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl PrivateRedisCluster {
    pub async fn start(masters: usize) -> Self {
        Self::start_with(masters, None).await
    }

    /// A cluster whose nodes speak only TLS, to clients and to each other.
    pub async fn start_with(masters: usize, tls: Option<&ClusterTls>) -> Self {
        let ports: Vec<u16> = (0..masters).map(|_| free_port()).collect();
        let dir = std::env::temp_dir().join(format!("slotgate-cluster-{}-{}", std::process::id(), ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |p: &Path| p.display().to_string();
        let (cli, server_tls) = match tls {
            None => (Vec::new(), Vec::new()),
            Some(t) => (
                vec!["--tls".into(), "--cacert".into(), path(&t.ca), "--cert".into(), path(&t.client_cert)]
                    .into_iter()
                    .chain(["--key".into(), path(&t.client_key)])
                    .collect(),
                vec!["--tls-cluster".into(), "yes".into(), "--tls-cert-file".into(), path(&t.cert)]
                    .into_iter()
                    .chain(["--tls-key-file".into(), path(&t.key), "--tls-ca-cert-file".into(), path(&t.ca)])
                    .chain(["--tls-auth-clients".into(), "no".into()])
                    .collect::<Vec<String>>(),
            ),
        };
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        let mut cluster = Self { ports: ports.clone(), dir, servers: Vec::new(), cli, scheme };
        for port in &ports {
            let mut command = Command::new("redis-server");
            if tls.is_some() {
                command.args(["--port", "0", "--tls-port", &port.to_string()]).args(&server_tls);
            } else {
                command.args(["--port", &port.to_string()]);
            }
            command
                .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                // The bus port on a free port of its own: the default (the
                // port + 10000) may be taken by another process's socket.
                .args(["--cluster-port", &free_port().to_string()])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf"), "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir);
            let log = cluster.dir.join(format!("redis-{port}.log"));
            cluster.servers.push(Helper::spawn(&format!("cluster node on port {port}"), command, &log, Stdout::Log));
        }
        let patience = Patience::up_to(Duration::from_secs(5)).every(Duration::from_millis(25));
        for (server, port) in cluster.servers.iter_mut().zip(&ports) {
            let cli = &cluster.cli;
            server
                .wait_ready(patience, async || redis_cli(cli, *port, &["PING"]).is_some_and(|o| o.contains("PONG")))
                .await;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = Command::new("redis-cli");
        create.args(&cluster.cli).args(["--cluster", "create"]).args(&nodes).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        run("redis-cli --cluster create", &mut create, None);
        for (server, port) in cluster.servers.iter_mut().zip(&ports) {
            let cli = &cluster.cli;
            let joined =
                async || redis_cli(cli, *port, &["CLUSTER", "INFO"]).is_some_and(|o| o.contains("cluster_state:ok"));
            server.wait_ready(patience, joined).await;
        }
        cluster
    }

    /// The seed list slotgate takes (`REDIS_URL` with `--redis-cluster`).
    pub fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("{}://127.0.0.1:{p}", self.scheme)).collect::<Vec<_>>().join(",")
    }

    /// How many keys each master holds.
    pub fn keys_per_master(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|p| redis_cli(&self.cli, *p, &["DBSIZE"]).and_then(|o| o.trim().parse().ok()).unwrap_or(0))
            .collect()
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_cli(tls: &[String], port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli").args(tls).args(["-p", &port.to_string()]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
