//! Building and running the server: [`App::build`] binds the listener (port 0 in tests)
//! and prepares everything; [`App::run_until_stopped`] serves until SIGTERM or SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::jwt::JwtKeys;
use crate::config::Config;
use crate::db::Db;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::service::accounts;
use crate::state::{AppState, LoginThrottles};
use crate::throttle::FailureThrottle;

pub struct App {
    listener: TcpListener,
    state: AppState,
    router: axum::Router,
    shutdown_tx: watch::Sender<bool>,
}

impl App {
    /// Connects to the database (migrating it), sets up Redis when configured, creates
    /// the first admin when asked to, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        if config.jwt_secret_generated {
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret for this process; sessions \
                 end when it restarts. Set JWT_SECRET in production."
            );
        }
        let metrics = Metrics::new();
        let db = Db::connect(
            &config.database_url,
            config.database_max_connections,
            &metrics,
        )
        .await?;
        db.migrate().await?;
        if config.seed_demo_data && crate::service::markets::seed_demo(db.conn()).await? {
            tracing::info!("seeded demo assets and markets");
        }
        let redis = config
            .redis_url
            .as_deref()
            .map(RedisLink::new)
            .transpose()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let throttle = &config.login_throttle;
        let login_throttle = Arc::new(LoginThrottles {
            per_account: FailureThrottle::new(
                throttle.per_account_burst,
                throttle.per_account_refill,
            ),
            per_ip: FailureThrottle::new(throttle.per_ip_burst, throttle.per_ip_refill),
        });
        let jwt = JwtKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.access_token_ttl,
        );
        let events = match &redis {
            Some(link) => crate::events::EventBus::with_redis(
                link.client(),
                link.connection(),
                config.redis_channel.clone(),
                shutdown_rx.clone(),
            ),
            None => crate::events::EventBus::in_process(),
        };
        let shared = Arc::new(crate::redis_fallback::RedisOrLocal::new(
            redis.clone(),
            config.redis_key_prefix.clone(),
        ));
        let compliance_rules = Arc::new(
            crate::service::compliance::ComplianceRules::load(config.compliance_rules_path.clone())
                .context("cannot load the content compliance rules (COMPLIANCE_RULES_PATH)")?,
        );
        let second_factor_throttle = Arc::new(FailureThrottle::new(
            config.security.second_factor_burst,
            config.security.second_factor_refill,
        ));
        let webauthn = Arc::new(crate::service::passkeys::relying_party(&config.security)?);
        // A quarter of the pool, at least two: enough for several markets' batches at
        // once; one market uses one connection at a time.
        let placement_connections = (config.database_max_connections / 4).max(2);
        let order_batches = Arc::new(
            crate::service::order_batches::OrderBatches::start(
                &db,
                &config.database_url,
                placement_connections,
                &metrics,
            )
            .await?,
        );
        let session_reads = Arc::new(crate::service::auth::session_reads(&db));
        let state = AppState {
            session_reads,
            rate_limiter: Arc::new(crate::ratelimit::RateLimiter::new(shared.clone())),
            replay_guard: Arc::new(crate::auth::replay::ReplayGuard::new(shared)),
            api_key_usage: Default::default(),
            second_factor_throttle,
            webauthn,
            compliance_rules,
            config: Arc::new(config),
            db,
            jwt: Arc::new(jwt),
            metrics,
            redis,
            events,
            tickers: Default::default(),
            order_batches,
            market_rules: Default::default(),
            login_throttle,
            shutdown: shutdown_rx,
            live_sockets: Default::default(),
        };
        // Fails start-up on a bad SMTP_URL or EMAIL_FROM rather than in the relay.
        crate::service::email::Mailer::from_config(&state)?;
        if let Some((email, password)) = &state.config.admin {
            accounts::ensure_admin(&state, email, password.expose())
                .await
                .context("cannot create the admin from ADMIN_EMAIL/ADMIN_PASSWORD")?;
        }
        let schema = crate::graphql::build_schema(state.clone());
        let router = http::router(HttpState {
            app: Arc::new(state.clone()),
            schema,
            shared: http::shared_streams::SharedStreams::new(state.metrics.clone())
                .context("cannot start the runtime of shared subscription pushes")?,
        });
        let listener = TcpListener::bind(state.config.bind_addr)
            .await
            .with_context(|| format!("cannot listen on {}", state.config.bind_addr))?;
        Ok(App {
            listener,
            state,
            router,
            shutdown_tx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.bind_addr)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes. Then it stops accepting connections, asks
    /// WebSockets to close (1001), lets in-flight requests finish, and gives up waiting
    /// after `SHUTDOWN_TIMEOUT_SECS`.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            state,
            router,
            shutdown_tx,
        } = self;
        tracing::info!(address = %listener.local_addr()?, "tradegraph is serving");
        let workers = crate::workers::spawn(state.clone());
        let mut stopping = state.shutdown.clone();
        // Small writes (a WebSocket push, a short response) go out at once instead of
        // waiting, under Nagle's algorithm, for the acknowledgement of the previous one.
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            signal.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = shutdown_tx.send(true);
        });
        let live_sockets = state.live_sockets.clone();
        let deadline = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(state.config.shutdown_timeout).await;
        };
        // Upgraded WebSockets are not the HTTP server's to wait for: wait for them too,
        // so each gets its 1001 close frame out before the process exits.
        let drained = async move {
            let result = server.await;
            live_sockets.all_closed().await;
            result
        };
        tokio::select! {
            result = drained => result.context("server error")?,
            _ = deadline => tracing::warn!("shutdown timeout reached; closing remaining connections"),
        }
        workers.stop().await;
        tracing::info!("tradegraph stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
