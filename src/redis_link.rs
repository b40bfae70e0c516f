//! The optional Redis connection.
//!
//! The manager connects lazily and reconnects by itself, so a Redis that is down at
//! start-up or goes away later never stops the server: features that use Redis degrade
//! and `/readyz` reports it.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    manager: ConnectionManager,
}

impl RedisLink {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .context("cannot set up the Redis connection")?;
        Ok(RedisLink { client, manager })
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// A handle for commands; cheap to clone.
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connection();
        let reply: String =
            tokio::time::timeout(REDIS_TIMEOUT * 2, redis::cmd("PING").query_async(&mut conn))
                .await
                .context("Redis did not answer in time")??;
        anyhow::ensure!(reply == "PONG", "unexpected Redis reply");
        Ok(())
    }
}
