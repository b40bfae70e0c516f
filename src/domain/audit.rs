//! The audit log's hash chain: how an event is hashed and how a chain is checked.
//!
//! Each event's hash covers every stored field and the hash of the event before it in
//! the same chain, so changing, removing or reordering any row breaks every hash after
//! it. Fields are length-prefixed before hashing: no two different events can produce
//! the same byte string by shifting text from one field into the next.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of a chain's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything about an event that its hash covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedEvent<'a> {
    pub id: Uuid,
    pub chain: &'a str,
    pub seq: i64,
    pub action: &'a str,
    pub actor_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    pub details: &'a str,
    pub created_at: DateTime<Utc>,
    pub prev_hash: &'a str,
}

/// Timestamps keep microseconds only: what PostgreSQL stores, so a row read back
/// hashes the same as the one written.
pub fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    let micros = at.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(at)
}

/// The hex SHA-256 of an event.
pub fn hash(event: &ChainedEvent<'_>) -> String {
    let mut hasher = Sha256::new();
    let id = event.id.to_string();
    let seq = event.seq.to_string();
    let actor = event.actor_id.map(|u| u.to_string()).unwrap_or_default();
    let owner = event.owner_id.map(|u| u.to_string()).unwrap_or_default();
    let at = stored_time(event.created_at).to_rfc3339_opts(SecondsFormat::Micros, true);
    for field in [
        id.as_str(),
        event.chain,
        &seq,
        event.action,
        &actor,
        &owner,
        event.subject_type,
        event.subject_id,
        event.details,
        &at,
        event.prev_hash,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Walks one chain's stored events in sequence order.
#[derive(Debug)]
pub struct ChainCheck {
    expected_seq: i64,
    prev_hash: String,
    pub checked: u64,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
            checked: 0,
        }
    }
}

impl ChainCheck {
    /// Checks the next stored event (with the hash stored beside it); `false` when the
    /// event was altered, or one before it was removed or reordered.
    pub fn next(&mut self, event: &ChainedEvent<'_>, stored_hash: &str) -> bool {
        self.checked += 1;
        let intact = event.seq == self.expected_seq
            && event.prev_hash == self.prev_hash
            && hash(event) == stored_hash;
        self.expected_seq = event.seq + 1;
        self.prev_hash = stored_hash.to_owned();
        intact
    }

    /// Whether the chain's head (last sequence and hash recorded at append time) agrees
    /// with the last event seen: `false` when events were removed from the end.
    pub fn matches_head(&self, last_seq: i64, last_hash: &str) -> bool {
        self.expected_seq - 1 == last_seq && self.prev_hash == last_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned {
        id: Uuid,
        seq: i64,
        action: String,
        details: String,
        at: DateTime<Utc>,
        prev: String,
        hash: String,
    }

    impl Owned {
        fn view(&self) -> ChainedEvent<'_> {
            ChainedEvent {
                id: self.id,
                chain: "user:x",
                seq: self.seq,
                action: &self.action,
                actor_id: None,
                owner_id: None,
                subject_type: "order",
                subject_id: "o1",
                details: &self.details,
                created_at: self.at,
                prev_hash: &self.prev,
            }
        }
    }

    fn chain(n: i64) -> Vec<Owned> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut event = Owned {
                    id: Uuid::now_v7(),
                    seq,
                    action: "order.placed".into(),
                    details: format!("{{\"n\":{seq}}}"),
                    at: Utc::now(),
                    prev: prev.clone(),
                    hash: String::new(),
                };
                event.hash = hash(&event.view());
                prev = event.hash.clone();
                event
            })
            .collect()
    }

    fn first_break(events: &[Owned]) -> Option<usize> {
        let mut check = ChainCheck::default();
        events
            .iter()
            .position(|event| !check.next(&event.view(), &event.hash))
    }

    #[test]
    fn an_untouched_chain_checks_out_and_matches_its_head() {
        let events = chain(5);
        let mut check = ChainCheck::default();
        assert!(events.iter().all(|e| check.next(&e.view(), &e.hash)));
        assert_eq!(check.checked, 5);
        assert!(check.matches_head(5, &events[4].hash));
        assert!(!check.matches_head(6, &events[4].hash));
    }

    #[test]
    fn an_altered_field_is_found_at_that_event() {
        let mut events = chain(5);
        events[2].details = "{\"n\":300}".into();
        assert_eq!(first_break(&events), Some(2));
        let mut events = chain(5);
        events[3].action = "order.cancelled".into();
        assert_eq!(first_break(&events), Some(3));
    }

    #[test]
    fn a_rehashed_forgery_still_breaks_the_next_link() {
        let mut events = chain(5);
        events[1].details = "{\"n\":999}".into();
        events[1].hash = hash(&events[1].view());
        assert_eq!(first_break(&events), Some(2));
    }

    #[test]
    fn a_removed_event_breaks_the_one_after_it() {
        let mut events = chain(5);
        events.remove(2);
        assert_eq!(first_break(&events), Some(2));
    }

    #[test]
    fn removing_the_last_events_shows_at_the_head() {
        let mut events = chain(5);
        let head = events[4].hash.clone();
        events.truncate(3);
        let mut check = ChainCheck::default();
        assert!(events.iter().all(|e| check.next(&e.view(), &e.hash)));
        assert!(!check.matches_head(5, &head));
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let events = chain(1);
        let base = events[0].view();
        let shifted = ChainedEvent {
            subject_type: "orde",
            subject_id: "ro1",
            ..base.clone()
        };
        assert_ne!(hash(&base), hash(&shifted));
    }

    #[test]
    fn stored_time_drops_nanoseconds_only() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("valid instant");
        let stored = stored_time(at);
        assert_eq!(stored.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(stored.timestamp(), at.timestamp());
    }
}
