//! The `tradegraph` command: `serve` (default), `migrate`, `schema`.

use std::process::ExitCode;

use tradegraph::config::Config;
use tradegraph::{db::Db, metrics::Metrics, telemetry, App};

const USAGE: &str = "\
usage: tradegraph [COMMAND]

commands:
  serve     run the API server (default)
  migrate   apply pending database migrations and exit
  schema    print the GraphQL schema (SDL) and exit

Configuration comes from environment variables; see README.md.";

fn main() -> ExitCode {
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    if command == "schema" {
        print!("{}", tradegraph::graphql::sdl());
        return ExitCode::SUCCESS;
    }
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if !matches!(command.as_str(), "serve" | "migrate") {
        eprintln!("unknown command `{command}`\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tradegraph: invalid configuration: {error:#}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tradegraph: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command.as_str() {
            "migrate" => {
                let db = Db::connect(&config.database_url, 2, &Metrics::new()).await?;
                db.migrate().await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            _ => App::build(config).await?.run_until_stopped().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("tradegraph: {error:#}");
            ExitCode::FAILURE
        }
    }
}
