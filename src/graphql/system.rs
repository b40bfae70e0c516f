//! Public fields about the server itself.

use std::time::Duration;

use async_graphql::{Object, Subscription};
use futures_util::Stream;

use super::access::api_key;
use super::scalars::DateTime;
use crate::error::ApiError;

#[derive(Default)]
pub struct SystemQuery;

#[Object]
impl SystemQuery {
    /// The server's clock in UTC. Clients that sign API requests compare it with their
    /// own clock, since a signed request is refused outside a few seconds' window.
    /// Public: needs no authentication.
    #[graphql(directive = api_key::apply(None))]
    async fn server_time(&self) -> DateTime {
        DateTime(chrono::Utc::now())
    }
}

#[derive(Default)]
pub struct SystemSubscription;

#[Subscription]
impl SystemSubscription {
    /// The server's clock, pushed every `intervalSeconds` (1 to 60, default 1). Useful
    /// to check a live connection end to end; public.
    #[graphql(directive = api_key::apply(None))]
    async fn server_time(
        &self,
        #[graphql(default = 1)] interval_seconds: i32,
    ) -> Result<impl Stream<Item = DateTime>, ApiError> {
        if !(1..=60).contains(&interval_seconds) {
            return Err(ApiError::bad_input(
                "intervalSeconds",
                "must be between 1 and 60",
            ));
        }
        let period = Duration::from_secs(interval_seconds as u64);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(ticks(interval))
    }
}

/// One item per tick of `interval`, starting at once.
fn ticks(interval: tokio::time::Interval) -> impl Stream<Item = DateTime> {
    futures_util::stream::unfold(interval, |mut interval| async move {
        interval.tick().await;
        Some((DateTime(chrono::Utc::now()), interval))
    })
}
