//! Events leave only after their transaction commits, numbered per user, and cross
//! replicas through Redis.

use std::time::Duration;

use serde_json::json;
use tradegraph::events::{Event, EventBus};

use crate::both_backends;
use crate::helpers::{code, email, redis_url, Backend, TestApp};

both_backends!(committed_changes_publish_events_and_rollbacks_do_not);

async fn committed_changes_publish_events_and_rollbacks_do_not(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let seller = app.register(&email("seller")).await;
    let buyer = app.register(&email("buyer")).await;
    let deposit = "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }";
    app.gql(
        deposit,
        json!({"i": {"userId": seller.user_id, "asset": "ETH", "amount": "3", "reference": "e1"}}),
        Some(&admin.access),
    )
    .await;
    app.gql(deposit, json!({"i": {"userId": buyer.user_id, "asset": "USD", "amount": "5000", "reference": "u1"}}), Some(&admin.access)).await;
    let mut events = app.events.subscribe();
    let place = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }";
    let order = |side: &str, price: &str, quantity: &str| json!({"i": {"market": "ETH-USD", "side": side, "type": "LIMIT", "price": price, "quantity": quantity}});

    // Refused for funds: rolled back, so nothing is published.
    let refused = app
        .gql(place, order("BUY", "3000", "2"), Some(&buyer.access))
        .await;
    assert_eq!(code(&refused), "INSUFFICIENT_FUNDS");
    app.gql(place, order("SELL", "2000", "1"), Some(&seller.access))
        .await;
    app.gql(place, order("BUY", "2000", "1"), Some(&buyer.access))
        .await;

    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        received.push((*event).clone());
        let trades = received
            .iter()
            .filter(|e| matches!(e, Event::Trade { .. }))
            .count();
        let done = received
            .iter()
            .filter(|e| matches!(e, Event::BookChanged { .. }))
            .count()
            >= 2;
        if trades == 1 && done {
            break;
        }
    }
    let updates = |user: &str| -> Vec<(i64, String)> {
        received
            .iter()
            .filter_map(|e| match e {
                Event::OrderUpdate {
                    user_id,
                    sequence,
                    kind,
                    ..
                } if user_id.to_string() == user => Some((*sequence, kind.clone())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        updates(&seller.user_id),
        [(1, "CREATED".to_owned()), (2, "FILLED".to_owned())],
        "{received:?}"
    );
    assert_eq!(
        updates(&buyer.user_id),
        [(1, "CREATED".to_owned()), (2, "FILLED".to_owned())],
        "the refused order took no number: {received:?}"
    );
    assert!(received.iter().any(|e| matches!(e, Event::Trade { market, price, .. } if market == "ETH-USD" && price.to_string() == "2000")), "{received:?}");
}

/// Two processes' buses on one Redis channel: each hears the other, and nobody hears
/// its own events twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_relays_events_between_replicas() {
    let Some(url) = redis_url() else {
        eprintln!("!!! SKIPPED: TEST_REDIS_URL not set");
        return;
    };
    let channel = format!("tradegraph:test:{}", uuid::Uuid::new_v4());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let bus = |url: &str| {
        let client = redis::Client::open(url).expect("redis url");
        let manager =
            redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), Default::default())
                .expect("manager");
        EventBus::with_redis(client, manager, channel.clone(), stopped.clone())
    };
    let (a, b) = (bus(&url), bus(&url));
    let (mut on_a, mut on_b) = (a.subscribe(), b.subscribe());
    // The relays subscribe in the background; publish until the other side hears.
    let event = Event::BookChanged {
        market: "BTC-USD".into(),
    };
    let mut heard = false;
    for _ in 0..50 {
        a.publish(vec![event.clone()]).await;
        if let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(100), on_b.recv()).await {
            assert_eq!(*got, event);
            heard = true;
            break;
        }
    }
    assert!(heard, "replica B never heard replica A");
    // A heard each of its own publications exactly once, locally.
    let mut own = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), on_a.recv()).await {
        own += 1;
    }
    let mut from_b = 0;
    b.publish(vec![Event::BookChanged {
        market: "ETH-USD".into(),
    }])
    .await;
    while let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(500), on_a.recv()).await {
        assert_eq!(
            *got,
            Event::BookChanged {
                market: "ETH-USD".into()
            }
        );
        from_b += 1;
    }
    assert!(own >= 1);
    assert_eq!(from_b, 1, "B's event reached A once");
}
