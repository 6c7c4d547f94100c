use clap::Parser;
use slotgate::{
    config::{Cli, Command, Config},
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
    telemetry::init();
    match Cli::parse().command {
        Some(Command::Migrate(db)) => {
            let applied = store::migrate(&db.database_url).await?;
            tracing::info!(applied, "migrations applied");
        }
        Some(Command::Serve(config)) => serve(*config).await?,
        None => serve(Config::from_env()).await?,
    }
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
