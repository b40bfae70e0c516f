//! Routing committed events to the subscribers that asked for them, in this process.
//!
//! Every event has at most one topic (a user's order log, a user's alerts, a user's
//! sessions, a market), so delivering it costs one map lookup plus one non-blocking
//! push per subscriber of that topic: a user's fill never wakes another user's
//! subscription, and ten thousand idle subscribers cost nothing per event.
//!
//! Each subscriber has a small bounded buffer. Publishing never waits: when a buffer
//! is full the event is dropped for that subscriber only and the subscriber is marked
//! as lagging, so it can resynchronise (replay from the database) or tell its client.
//! [`Fanout::lag_all`] marks every subscriber at once, for when events may have been
//! lost upstream (the Redis relay was cut off); an idle subscriber is woken for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::Event;

/// What a subscriber listens to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One user's order events (and so their fills).
    Orders(Uuid),
    /// One user's price alerts that fired.
    Alerts(Uuid),
    /// One user's session and API key revocations, watched by their open connections.
    Sessions(Uuid),
    /// Trades and book changes of one market (public).
    Market(String),
}

impl Topic {
    /// The topic an event is delivered to, if any.
    pub fn of(event: &Event) -> Option<Topic> {
        match event {
            Event::OrderUpdate { user_id, .. } => Some(Topic::Orders(*user_id)),
            Event::PriceAlertTriggered { user_id, .. } => Some(Topic::Alerts(*user_id)),
            Event::SessionsRevoked { user_id, .. } | Event::ApiKeyRevoked { user_id, .. } => {
                Some(Topic::Sessions(*user_id))
            }
            Event::Trade { market, .. } | Event::BookChanged { market } => {
                Some(Topic::Market(market.clone()))
            }
            // Content and portfolio-value subscribers read the broadcast feed.
            Event::ContentUpdate { .. } | Event::BalanceChanged { .. } => None,
        }
    }
}

/// What travels in a subscriber's buffer.
enum Item {
    Event(Arc<Event>),
    /// Events may have been lost before they reached this process: wakes a subscriber
    /// that has nothing buffered, which a flag alone would not.
    Lag,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Item>,
    lagged: Arc<AtomicBool>,
}

/// The subscriber table of one process.
#[derive(Default)]
pub struct Fanout {
    next_id: AtomicU64,
    topics: Mutex<HashMap<Topic, Vec<Slot>>>,
    dropped: AtomicU64,
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Delivery {
    Event(Arc<Event>),
    /// Events were dropped because this subscriber's buffer was full, or may have been
    /// lost before they reached this process.
    Lagged,
}

/// One subscriber's end. Unsubscribes when dropped.
pub struct Feed {
    rx: mpsc::Receiver<Item>,
    lagged: Arc<AtomicBool>,
    fanout: Weak<Fanout>,
    topic: Topic,
    id: u64,
}

impl Feed {
    /// The next delivery; `None` only if the bus is gone. A lag is reported before
    /// the events still buffered, which are older than the ones dropped.
    pub async fn recv(&mut self) -> Option<Delivery> {
        if self.lagged.swap(false, Ordering::AcqRel) {
            return Some(Delivery::Lagged);
        }
        let item = self.rx.recv().await?;
        if self.lagged.swap(false, Ordering::AcqRel) {
            return Some(Delivery::Lagged);
        }
        Some(match item {
            Item::Event(event) => Delivery::Event(event),
            Item::Lag => Delivery::Lagged,
        })
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(fanout) = self.fanout.upgrade() {
            fanout.remove(&self.topic, self.id);
        }
    }
}

impl Fanout {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, Vec<Slot>>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to `topic` with room for `capacity` undelivered events.
    pub fn subscribe(self: &Arc<Self>, topic: Topic, capacity: usize) -> Feed {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(topic.clone()).or_default().push(Slot {
            id,
            tx,
            lagged: lagged.clone(),
        });
        Feed {
            rx,
            lagged,
            fanout: Arc::downgrade(self),
            topic,
            id,
        }
    }

    fn remove(&self, topic: &Topic, id: u64) {
        let mut topics = self.lock();
        if let Some(slots) = topics.get_mut(topic) {
            slots.retain(|slot| slot.id != id);
            if slots.is_empty() {
                topics.remove(topic);
            }
        }
    }

    /// Hands `event` to every subscriber of its topic without waiting.
    pub fn dispatch(&self, event: &Arc<Event>) {
        let Some(topic) = Topic::of(event) else {
            return;
        };
        let mut topics = self.lock();
        let Some(slots) = topics.get_mut(&topic) else {
            return;
        };
        slots.retain(|slot| match slot.tx.try_send(Item::Event(event.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                slot.lagged.store(true, Ordering::Release);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if slots.is_empty() {
            topics.remove(&topic);
        }
    }

    /// Marks every subscriber as lagging and wakes it, so each resynchronises once.
    pub fn lag_all(&self) {
        let mut topics = self.lock();
        topics.retain(|_, slots| {
            slots.retain(|slot| match slot.tx.try_send(Item::Lag) {
                Ok(()) => true,
                // Something is buffered, so the subscriber wakes and sees the flag.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.lagged.store(true, Ordering::Release);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            !slots.is_empty()
        });
    }

    /// Subscribers of `topic` right now.
    pub fn subscribers_of(&self, topic: &Topic) -> usize {
        self.lock().get(topic).map_or(0, Vec::len)
    }

    /// Subscribers right now, over all topics.
    pub fn subscribers(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Deliveries dropped for full buffers since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(market: &str) -> Arc<Event> {
        Arc::new(Event::BookChanged {
            market: market.into(),
        })
    }

    #[tokio::test]
    async fn subscribers_get_only_their_topic() {
        let fanout = Arc::new(Fanout::default());
        let mut btc = fanout.subscribe(Topic::Market("BTC-USD".into()), 8);
        let mut eth = fanout.subscribe(Topic::Market("ETH-USD".into()), 8);
        fanout.dispatch(&book("BTC-USD"));
        fanout.dispatch(&book("ETH-USD"));
        assert!(matches!(btc.recv().await, Some(Delivery::Event(e)) if *e == *book("BTC-USD")));
        assert!(matches!(eth.recv().await, Some(Delivery::Event(e)) if *e == *book("ETH-USD")));
        assert!(btc.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_buffer_drops_for_that_subscriber_only_and_reports_the_lag() {
        let fanout = Arc::new(Fanout::default());
        let mut slow = fanout.subscribe(Topic::Market("M".into()), 2);
        let mut fast = fanout.subscribe(Topic::Market("M".into()), 16);
        for _ in 0..5 {
            fanout.dispatch(&book("M"));
            assert!(matches!(fast.recv().await, Some(Delivery::Event(_))));
        }
        assert!(matches!(slow.recv().await, Some(Delivery::Lagged)));
        assert!(matches!(slow.recv().await, Some(Delivery::Event(_))));
        assert_eq!(fanout.dropped(), 3);
    }

    #[tokio::test]
    async fn lag_all_wakes_idle_subscribers_and_reports_once_each() {
        let fanout = Arc::new(Fanout::default());
        let mut idle = fanout.subscribe(Topic::Sessions(Uuid::nil()), 4);
        let mut busy = fanout.subscribe(Topic::Market("M".into()), 1);
        fanout.dispatch(&book("M"));
        // An idle subscriber is waiting in `recv` when the lag comes.
        let waiting = tokio::spawn(async move {
            let first = idle.recv().await;
            (first, idle)
        });
        tokio::task::yield_now().await;
        fanout.lag_all();
        // Without the wake-up this would wait forever.
        let (first, mut idle) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("an idle subscriber wakes")
            .expect("joined");
        assert!(matches!(first, Some(Delivery::Lagged)));
        // A full buffer keeps its flag instead, and the lag comes first.
        assert!(matches!(busy.recv().await, Some(Delivery::Lagged)));
        // Once each: what follows is ordinary delivery.
        assert!(matches!(busy.recv().await, Some(Delivery::Event(_))));
        fanout.dispatch(&Arc::new(Event::SessionsRevoked {
            user_id: Uuid::nil(),
            session_id: None,
            except: None,
        }));
        assert!(matches!(idle.recv().await, Some(Delivery::Event(_))));
        assert_eq!(fanout.dropped(), 0, "a lag is not a dropped event");
    }

    #[tokio::test]
    async fn dropping_a_feed_unsubscribes() {
        let fanout = Arc::new(Fanout::default());
        let feed = fanout.subscribe(Topic::Orders(Uuid::nil()), 4);
        assert_eq!(fanout.subscribers(), 1);
        drop(feed);
        assert_eq!(fanout.subscribers(), 0);
    }
}
