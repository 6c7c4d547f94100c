use clap::Parser;
use slotgate::{
    config::{Cli, Command, Config, DatabaseConfig, MoveNamespace},
    links::PgLink,
    server::Application,
    store, telemetry,
};

/// glibc's allocator took a fifth of the server's CPU in a burst profile
/// (malloc, free and their consolidation); mimalloc handles the many small,
/// short-lived allocations of gRPC calls far more cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.log_format)?;
    let outcome = match cli.command {
        Some(Command::Migrate(db)) => migrate(&db).await,
        Some(Command::MoveNamespace(m)) => move_namespace(&m).await,
        Some(Command::Serve(config)) => serve(*config).await,
        None => serve(Config::from_env()).await,
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "slotgate stopped on an error");
    }
    // Whatever happened, the last spans and metrics are flushed.
    telemetry.shutdown();
    outcome
}

async fn migrate(db: &DatabaseConfig) -> Result<(), Box<dyn std::error::Error>> {
    let applied = store::migrate(&PgLink::new(db.url())?).await?;
    tracing::info!(applied, "migrations applied");
    Ok(())
}

async fn move_namespace(m: &MoveNamespace) -> Result<(), Box<dyn std::error::Error>> {
    let link = PgLink::new(m.database.url())?;
    store::migrate(&link).await?;
    let moved = store::move_namespace(&link, &m.from, &m.to).await?;
    tracing::info!(
        deployment = %moved.deployment_id,
        from = %m.from,
        to = %m.to,
        "deployment moved: start every replica with --redis-namespace {}", m.to
    );
    Ok(())
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends before a kill).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
