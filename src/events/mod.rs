//! The event bus: what happened, delivered after the transaction that did it commits.
//!
//! Services collect [`Event`]s while a transaction runs ([`Collector`]) and publish
//! them only once it has committed, so nobody ever hears of a change that was rolled
//! back. Delivery is in process through a broadcast channel; with Redis configured every
//! process also publishes to one Redis channel and relays what other processes publish,
//! so subscribers connected to any replica see every replica's events. If Redis is down,
//! local delivery goes on and the relay reconnects by itself; what other replicas
//! published meanwhile is gone from Redis, so on reconnecting every local subscriber is
//! told it lagged and resynchronises from the database (order updates replay, tickers
//! reload, sockets re-check their session, alert subscribers are told what to re-read).
//!
//! Live delivery is best effort; what must not be missed (a user's order events) is
//! also stored with a gap-free per-user sequence, so a subscriber can replay it.

pub mod fanout;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

pub use fanout::{Delivery, Feed, Topic};

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
    /// A piece of advisor content changed state (for its author and the reviewers).
    #[serde(rename_all = "camelCase")]
    ContentUpdate {
        content_id: Uuid,
        author_id: Uuid,
        /// The audit action, e.g. `content.approved`.
        action: String,
        status: String,
        previous_status: String,
        version: i32,
        at: DateTime<Utc>,
    },
    /// One of a user's price alerts fired (its notification is stored).
    #[serde(rename_all = "camelCase")]
    PriceAlertTriggered {
        user_id: Uuid,
        alert_id: Uuid,
        notification_id: Uuid,
        market: String,
        price: rust_decimal::Decimal,
        triggered_at: DateTime<Utc>,
    },
    /// Sessions of a user were revoked: `session_id`, or when it is `None` every
    /// session except `except`. Their open connections close.
    #[serde(rename_all = "camelCase")]
    SessionsRevoked {
        user_id: Uuid,
        session_id: Option<Uuid>,
        except: Option<Uuid>,
    },
    /// A user's balance changed outside trading (a deposit, a withdrawal).
    #[serde(rename_all = "camelCase")]
    BalanceChanged { user_id: Uuid },
    /// One of a user's API keys was revoked. Connections it opened close.
    #[serde(rename_all = "camelCase")]
    ApiKeyRevoked { user_id: Uuid, key_id: Uuid },
}

impl Event {
    /// Whether this revocation ends `session_id`.
    pub fn revokes(&self, session_id: Uuid) -> bool {
        match self {
            Event::SessionsRevoked {
                session_id: Some(revoked),
                ..
            } => *revoked == session_id,
            Event::SessionsRevoked {
                session_id: None,
                except,
                ..
            } => *except != Some(session_id),
            _ => false,
        }
    }

    /// Whether this revocation ends the API key `key_id`. Revoking sessions leaves API
    /// keys alone: they are credentials of their own.
    pub fn revokes_key(&self, key_id: Uuid) -> bool {
        matches!(self, Event::ApiKeyRevoked { key_id: revoked, .. } if *revoked == key_id)
    }
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

    /// Changes the events collected so far, in place.
    pub fn edit(&self, edit: impl FnOnce(&mut [Event])) {
        edit(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
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

/// Envelopes waiting for Redis. Beyond this, cross-replica delivery drops the oldest
/// work rather than letting a Redis outage grow memory or slow requests down.
const REDIS_QUEUE: usize = 8192;

/// The bus. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<Event>>,
    /// Events this process published (committed here), not those relayed from others.
    published_here: broadcast::Sender<Arc<Event>>,
    fanout: Arc<fanout::Fanout>,
    /// Counts the times events may have been lost upstream, for subscribers of the
    /// broadcast feed (which cannot be sent a lag through it).
    resyncs: Arc<watch::Sender<u64>>,
    redis: Option<RedisSide>,
}

#[derive(Clone)]
struct RedisSide {
    outgoing: mpsc::Sender<Envelope>,
    origin: Uuid,
    /// Whether the relay holds its Redis subscription right now.
    subscribed: Arc<AtomicBool>,
}

impl EventBus {
    /// A bus for this process only.
    pub fn in_process() -> Self {
        let (local, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (published_here, _) = broadcast::channel(CHANNEL_CAPACITY);
        EventBus {
            local,
            published_here,
            fanout: Arc::new(fanout::Fanout::default()),
            resyncs: Arc::new(watch::channel(0).0),
            redis: None,
        }
    }

    /// A bus shared with other processes through Redis `channel`. Starts the relay
    /// task (one Redis subscription for the whole process) and the publisher task,
    /// which stop when `shutdown` turns true.
    pub fn with_redis(
        client: redis::Client,
        connection: redis::aio::ConnectionManager,
        channel: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut bus = EventBus::in_process();
        let origin = Uuid::new_v4();
        let subscribed = Arc::new(AtomicBool::new(false));
        tokio::spawn(relay(
            client,
            channel.clone(),
            origin,
            bus.clone(),
            subscribed.clone(),
            shutdown,
        ));
        let (outgoing, queue) = mpsc::channel(REDIS_QUEUE);
        tokio::spawn(publisher(connection, channel, queue));
        bus.redis = Some(RedisSide {
            outgoing,
            origin,
            subscribed,
        });
        bus
    }

    /// Every event this process delivers, for observers that want them all (tests,
    /// diagnostics). A receiver that falls behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.local.subscribe()
    }

    /// The events this process publishes, as it publishes them: for work that follows
    /// commits and that one replica should do (the one that committed), where
    /// [`EventBus::subscribe`] would give every replica every event. A receiver that
    /// falls behind loses the oldest.
    pub fn published_here(&self) -> broadcast::Receiver<Arc<Event>> {
        self.published_here.subscribe()
    }

    /// Changes whenever events may have been lost before reaching this process, so a
    /// subscriber of [`EventBus::subscribe`] knows to recompute from the database.
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resyncs.subscribe()
    }

    /// Tells every subscriber of this process that it may have missed events: topic
    /// feeds get a [`Delivery::Lagged`], broadcast subscribers a change of
    /// [`EventBus::resyncs`].
    pub fn lag_all(&self) {
        self.fanout.lag_all();
        self.resyncs.send_modify(|n| *n += 1);
    }

    /// Subscribes to one topic with a buffer of `capacity` events.
    pub fn feed(&self, topic: Topic, capacity: usize) -> Feed {
        self.fanout.subscribe(topic, capacity)
    }

    /// Subscribers of one topic in this process right now.
    pub fn subscribers_of(&self, topic: &Topic) -> usize {
        self.fanout.subscribers_of(topic)
    }

    /// Subscribers now, and deliveries dropped for full buffers since start.
    pub fn fanout_stats(&self) -> (usize, u64) {
        (self.fanout.subscribers(), self.fanout.dropped())
    }

    /// Whether events from other replicas are arriving: `None` without Redis.
    pub fn relay_subscribed(&self) -> Option<bool> {
        self.redis
            .as_ref()
            .map(|r| r.subscribed.load(Ordering::Acquire))
    }

    /// Delivers to this process's subscribers.
    fn deliver_locally(&self, event: Arc<Event>) {
        self.fanout.dispatch(&event);
        // No receiver is not an error: nobody is listening right now.
        let _ = self.local.send(event);
    }

    /// Delivers committed events: locally at once, and to other processes through
    /// Redis when configured. Never fails and never waits on Redis: envelopes go to a
    /// publisher task, so a slow or absent Redis cannot slow a request down.
    pub async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for event in &events {
            let event = Arc::new(event.clone());
            // No receiver is not an error: nothing follows commits right now.
            let _ = self.published_here.send(event.clone());
            self.deliver_locally(event);
        }
        let Some(redis) = &self.redis else { return };
        let envelope = Envelope {
            origin: redis.origin,
            events,
        };
        if redis.outgoing.try_send(envelope).is_err() {
            tracing::warn!("Redis publish queue full; these events reach this replica only");
        }
    }
}

/// How long the publisher skips Redis after a failure, so an outage costs one timeout
/// per pause rather than one per event.
const PUBLISH_PAUSE: Duration = Duration::from_millis(500);

/// Publishes envelopes to Redis in order. While Redis is unreachable, envelopes are
/// dropped (other replicas' subscribers to order updates catch up from the database
/// when the next event shows them a gap).
async fn publisher(
    mut connection: redis::aio::ConnectionManager,
    channel: String,
    mut queue: mpsc::Receiver<Envelope>,
) {
    let mut paused_until: Option<tokio::time::Instant> = None;
    while let Some(envelope) = queue.recv().await {
        if paused_until.is_some_and(|until| tokio::time::Instant::now() < until) {
            continue;
        }
        let Ok(payload) = serde_json::to_string(&envelope) else {
            continue;
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut connection)
            .await;
        match sent {
            Ok(_) => {
                if paused_until.take().is_some() {
                    tracing::info!("publishing events to Redis again");
                }
            }
            Err(error) => {
                if paused_until.is_none() {
                    tracing::warn!(%error, "could not publish events to Redis; local delivery only");
                }
                paused_until = Some(tokio::time::Instant::now() + PUBLISH_PAUSE);
            }
        }
    }
}

/// Relays other processes' events from Redis into the local channel, reconnecting
/// with backoff whenever the subscription breaks. Redis pub/sub keeps nothing for an
/// absent subscriber, so after any time without a subscription every local subscriber
/// is told it lagged, once the new subscription is in place (what was published
/// before it is in the database they resynchronise from; what comes after, arrives).
async fn relay(
    client: redis::Client,
    channel: String,
    origin: Uuid,
    bus: EventBus,
    subscribed: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    // A clean start has missed nothing; any failure to hold the subscription has.
    let mut missed = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    tracing::info!("event relay subscribed to Redis");
                    subscribed.store(true, Ordering::Release);
                    backoff = Duration::from_millis(200);
                    if std::mem::take(&mut missed) {
                        tracing::info!("telling local subscribers to resynchronise");
                        bus.lag_all();
                    }
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let Ok(payload) = message.get_payload::<String>() else { continue };
                                match serde_json::from_str::<Envelope>(&payload) {
                                    Ok(envelope) if envelope.origin != origin => {
                                        for event in envelope.events {
                                            bus.deliver_locally(Arc::new(event));
                                        }
                                    }
                                    Ok(_) => {}
                                    Err(error) => tracing::warn!(%error, "ignoring a malformed event envelope"),
                                }
                            }
                            _ = shutdown.changed() => return,
                        }
                    }
                    subscribed.store(false, Ordering::Release);
                    tracing::warn!("event relay lost its Redis subscription; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "event relay cannot subscribe"),
            },
            Err(error) => tracing::debug!(%error, "event relay cannot reach Redis"),
        }
        missed = true;
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

    /// A key's revocation ends that key only; revoking sessions, even all of them,
    /// leaves keys (credentials of their own) alone, and a key's revocation no session.
    #[test]
    fn revocations_end_sessions_and_keys_apart() {
        let (user_id, key_id, session_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let key = Event::ApiKeyRevoked { user_id, key_id };
        assert!(key.revokes_key(key_id));
        assert!(!key.revokes_key(Uuid::now_v7()));
        assert!(!key.revokes(key_id) && !key.revokes(session_id));
        let everywhere = Event::SessionsRevoked {
            user_id,
            session_id: None,
            except: None,
        };
        assert!(everywhere.revokes(session_id));
        assert!(!everywhere.revokes_key(key_id));
        let one = Event::SessionsRevoked {
            user_id,
            session_id: Some(key_id),
            except: None,
        };
        assert!(!one.revokes_key(key_id));
    }

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
