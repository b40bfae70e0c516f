//! The event bus: what happened, delivered after the transaction that did it commits.
//!
//! Services collect [`Event`]s while a transaction runs ([`Collector`]) and publish
//! them only once it has committed, so nobody ever hears of a change that was rolled
//! back. Delivery is in process through a broadcast channel; with Redis configured every
//! process also publishes to one Redis channel and relays what other processes publish,
//! so subscribers connected to any replica see every replica's events. If Redis is down,
//! local delivery goes on and the relay reconnects by itself.
//!
//! Live delivery is best effort; what must not be missed (a user's order events) is
//! also stored with a gap-free per-user sequence, so a subscriber can replay it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// Events buffered per subscriber before a slow one starts losing the oldest.
const CHANNEL_CAPACITY: usize = 4096;

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A change to one of a user's orders, numbered in the user's event log.
    #[serde(rename_all = "camelCase")]
    OrderUpdate {
        user_id: Uuid,
        sequence: i64,
        kind: String,
        order_id: Uuid,
        fill_id: Option<Uuid>,
    },
    /// A trade in a market (public).
    #[serde(rename_all = "camelCase")]
    Trade {
        market: String,
        price: rust_decimal::Decimal,
        quantity: rust_decimal::Decimal,
        at: DateTime<Utc>,
    },
    /// A market's book changed (public).
    #[serde(rename_all = "camelCase")]
    BookChanged { market: String },
    /// A user's balance changed outside trading (a deposit, a withdrawal).
    #[serde(rename_all = "camelCase")]
    BalanceChanged { user_id: Uuid },
}

/// Gathers the events of one transaction attempt.
#[derive(Debug, Default)]
pub struct Collector(Mutex<Vec<Event>>);

impl Collector {
    pub fn push(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }

    /// Records that `market`'s book changed, once per transaction.
    pub fn book_changed(&self, market: &str) {
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let known = events
            .iter()
            .any(|e| matches!(e, Event::BookChanged { market: m } if m == market));
        if !known {
            events.push(Event::BookChanged {
                market: market.to_owned(),
            });
        }
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What travels over Redis: the publishing process, so it can skip its own events.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: Uuid,
    events: Vec<Event>,
}

/// The bus. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<Event>>,
    redis: Option<RedisSide>,
}

#[derive(Clone)]
struct RedisSide {
    connection: redis::aio::ConnectionManager,
    channel: String,
    origin: Uuid,
}

impl EventBus {
    /// A bus for this process only.
    pub fn in_process() -> Self {
        let (local, _) = broadcast::channel(CHANNEL_CAPACITY);
        EventBus { local, redis: None }
    }

    /// A bus shared with other processes through Redis `channel`. Starts the relay
    /// task, which stops when `shutdown` turns true.
    pub fn with_redis(
        client: redis::Client,
        connection: redis::aio::ConnectionManager,
        channel: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut bus = EventBus::in_process();
        let origin = Uuid::new_v4();
        tokio::spawn(relay(
            client,
            channel.clone(),
            origin,
            bus.local.clone(),
            shutdown,
        ));
        bus.redis = Some(RedisSide {
            connection,
            channel,
            origin,
        });
        bus
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.local.subscribe()
    }

    /// Delivers committed events: locally at once, and to other processes through
    /// Redis when configured. Never fails: a Redis error is logged and local delivery
    /// stands.
    pub async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for event in &events {
            // No receiver is not an error: nobody is listening right now.
            let _ = self.local.send(Arc::new(event.clone()));
        }
        let Some(redis) = &self.redis else { return };
        let envelope = Envelope {
            origin: redis.origin,
            events,
        };
        let Ok(payload) = serde_json::to_string(&envelope) else {
            return;
        };
        let mut connection = redis.connection.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&redis.channel)
            .arg(payload)
            .query_async(&mut connection)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "could not publish events to Redis; local delivery only");
        }
    }
}

/// Relays other processes' events from Redis into the local channel, reconnecting
/// with backoff whenever the subscription breaks.
async fn relay(
    client: redis::Client,
    channel: String,
    origin: Uuid,
    local: broadcast::Sender<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    tracing::info!("event relay subscribed to Redis");
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let Ok(payload) = message.get_payload::<String>() else { continue };
                                match serde_json::from_str::<Envelope>(&payload) {
                                    Ok(envelope) if envelope.origin != origin => {
                                        for event in envelope.events {
                                            let _ = local.send(Arc::new(event));
                                        }
                                    }
                                    Ok(_) => {}
                                    Err(error) => tracing::warn!(%error, "ignoring a malformed event envelope"),
                                }
                            }
                            _ = shutdown.changed() => return,
                        }
                    }
                    tracing::warn!("event relay lost its Redis subscription; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "event relay cannot subscribe"),
            },
            Err(error) => tracing::debug!(%error, "event relay cannot reach Redis"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_subscribers_get_published_events_in_order() {
        let bus = EventBus::in_process();
        let mut first = bus.subscribe();
        let mut second = bus.subscribe();
        let events: Vec<Event> = (1..=3)
            .map(|n| Event::BookChanged {
                market: format!("M{n}"),
            })
            .collect();
        bus.publish(events.clone()).await;
        for receiver in [&mut first, &mut second] {
            for expected in &events {
                assert_eq!(
                    receiver.recv().await.map(|e| (*e).clone()).ok(),
                    Some(expected.clone())
                );
            }
        }
    }

    #[test]
    fn the_collector_notes_each_book_once_and_empties_on_take() {
        let collector = Collector::default();
        collector.book_changed("BTC-USD");
        collector.book_changed("BTC-USD");
        collector.book_changed("ETH-USD");
        assert_eq!(collector.take().len(), 2);
        assert!(collector.take().is_empty());
    }

    #[test]
    fn envelopes_round_trip_as_json() {
        let envelope = Envelope {
            origin: Uuid::new_v4(),
            events: vec![Event::OrderUpdate {
                user_id: Uuid::new_v4(),
                sequence: 7,
                kind: "FILLED".into(),
                order_id: Uuid::new_v4(),
                fill_id: None,
            }],
        };
        let json = serde_json::to_string(&envelope).expect("json");
        assert!(json.contains("\"type\":\"orderUpdate\""), "{json}");
        let back: Envelope = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.events, envelope.events);
    }
}
