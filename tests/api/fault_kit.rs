//! Things to break: a private PostgreSQL and slotgate processes of a test's
//! own (killed or stopped without harming anything else), and a TCP proxy
//! that delays traffic or cuts connections. This machine has no netem and
//! no toxiproxy, so faults are made here.

use std::{
    net::SocketAddr,
    path::PathBuf,
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
            let status = Command::new("chown").args(["postgres:postgres"]).arg(&pg.dir).status().unwrap();
            assert!(status.success(), "chown the data directory");
        }
        let mut initdb = pg.as_owner(pg.bin.join("initdb"));
        initdb.arg("-D").arg(pg.data()).args(["-A", "trust", "-U", "postgres"]);
        assert!(initdb.stdout(Stdio::null()).status().unwrap().success(), "initdb");
        pg.restart().await;
        pg
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
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
        pg_ctl.arg("-D").arg(self.data()).args(["-o", &options, "-w", "-l"]).arg(self.dir.join("log")).arg("start");
        assert!(pg_ctl.stdout(Stdio::null()).status().unwrap().success(), "pg_ctl start");
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

/// slotgate as a separate process (the binary the tests were built with),
/// to be killed with SIGKILL and started again.
pub struct SlotgateProcess {
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    /// Where its stderr (the log) goes; nowhere if `None`.
    log: Option<PathBuf>,
    child: Option<Child>,
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
        let mut process = Self { addr, env, log, child: None };
        process.restart().await;
        process
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        #[allow(clippy::zombie_processes)] // reaped in kill or Drop
        let child = Command::new(env!("CARGO_BIN_EXE_slotgate"))
            .arg("serve")
            .env("SLOTGATE_LISTEN", self.addr.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(match &self.log {
                Some(path) => Stdio::from(std::fs::File::options().create(true).append(true).open(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start slotgate");
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("slotgate did not start listening on {}", self.addr);
    }

    /// Sends SIGTERM, as Kubernetes does before stopping a pod.
    pub fn signal_terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
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
        let mut child = self.child.take()?;
        let started = std::time::Instant::now();
        while started.elapsed() < patience {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// `kill -9`: whatever it was doing stops mid-way.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SlotgateProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of a test's own: `masters` redis-servers on free loopback
/// ports, joined with `redis-cli --cluster create`, killed when dropped.
pub struct PrivateRedisCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl PrivateRedisCluster {
    pub async fn start(masters: usize) -> Self {
        let ports: Vec<u16> = (0..masters).map(|_| free_port()).collect();
        let dir = std::env::temp_dir().join(format!("slotgate-cluster-{}-{}", std::process::id(), ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self { ports: ports.clone(), dir, children: Vec::new() };
        for port in &ports {
            #[allow(clippy::zombie_processes)] // reaped in Drop
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf"), "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("start redis-server");
            cluster.children.push(child);
        }
        for port in &ports {
            wait_until(|| redis_cli(*port, &["PING"]).is_some_and(|o| o.contains("PONG"))).await;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create");
        for port in &ports {
            wait_until(|| redis_cli(*port, &["CLUSTER", "INFO"]).is_some_and(|o| o.contains("cluster_state:ok"))).await;
        }
        cluster
    }

    /// The seed list slotgate takes (`REDIS_URL` with `--redis-cluster`).
    pub fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// How many keys each master holds.
    pub fn keys_per_master(&self) -> Vec<u64> {
        self.ports.iter().map(|p| redis_cli(*p, &["DBSIZE"]).and_then(|o| o.trim().parse().ok()).unwrap_or(0)).collect()
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn wait_until(mut ready: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gave up waiting");
}
