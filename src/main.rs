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
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.log_format)?;
    let outcome = match cli.command {
        Some(Command::Migrate(db)) => store::migrate(&db.database_url)
            .await
            .map(|applied| tracing::info!(applied, "migrations applied"))
            .map_err(Into::into),
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
