//! The `tradegraph` command: `serve` (default), `migrate`, `schema`.

use std::process::ExitCode;

use tradegraph::config::Config;
use tradegraph::{db::Db, metrics::Metrics, telemetry, App};

const USAGE: &str = "\
usage: tradegraph [COMMAND]

commands:
  serve     run the API server (default)
            --demo  also run the demo bot: market making and trading on the
                    demo markets (never in production data)
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
    let demo = std::env::args().skip(2).any(|arg| arg == "--demo");
    if let Some(unknown) = std::env::args().skip(2).find(|arg| arg != "--demo") {
        eprintln!("unknown option `{unknown}`\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tradegraph: invalid configuration: {error:#}");
            return ExitCode::from(2);
        }
    };
    config.demo_bot |= demo && command == "serve";
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
