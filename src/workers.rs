//! Background work that runs beside the server and stops with it: expiry of GTD
//! orders, the e-mail outbox relay, and P&L state following committed trades.
//!
//! Every replica runs the same workers; each unit of work re-checks its row under the
//! market lock, so replicas racing for the same order do it once.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::service::orders;
use crate::state::AppState;

const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
const EXPIRY_BATCH: u64 = 200;

pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

/// Starts the workers; they watch the state's shutdown flag.
pub fn spawn(state: AppState) -> Workers {
    let mut handles = Vec::new();
    if state.config.demo_bot {
        handles.push(tokio::spawn(crate::demo::run(
            state.clone(),
            state.config.demo_bot_interval,
        )));
    }
    handles.push(tokio::spawn(expire_orders(state.clone())));
    if state.config.pnl_follower {
        handles.push(tokio::spawn(
            crate::service::portfolio::follow::Follower::run(state.clone()),
        ));
    }
    handles.push(tokio::spawn(relay_emails(state)));
    Workers { handles }
}

impl Workers {
    /// Waits for the workers to notice shutdown, or stops them after a grace period.
    pub async fn stop(self) {
        for handle in self.handles {
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Expires GTD orders at their `expireAt`, releasing their held funds.
async fn expire_orders(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        loop {
            match orders::expire_due(&state, EXPIRY_BATCH).await {
                Ok(n) if n as u64 == EXPIRY_BATCH => continue,
                Ok(_) => break,
                Err(error) => {
                    // A database outage must not kill the worker: try again next tick.
                    tracing::warn!(error = ?error, "order expiry failed");
                    break;
                }
            }
        }
    }
}

const EMAIL_INTERVAL: Duration = Duration::from_millis(500);
const EMAIL_BATCH: u64 = 50;

/// Delivers e-mails from the outbox (SMTP, or the log without `SMTP_URL`).
async fn relay_emails(state: AppState) {
    let mailer = match crate::service::email::Mailer::from_config(&state) {
        Ok(mailer) => mailer,
        Err(error) => {
            // Configuration is checked at start, so this is unexpected: say so loudly.
            tracing::error!(error = %error, "e-mail relay not started");
            return;
        }
    };
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(EMAIL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        loop {
            match crate::service::email::deliver_due(&state, &mailer, EMAIL_BATCH).await {
                Ok(n) if n as u64 == EMAIL_BATCH => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = ?error, "e-mail relay failed");
                    break;
                }
            }
        }
    }
}
