//! Prometheus metrics, one registry per running server so tests that start several
//! servers in one process see only their own numbers.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Operation names come from clients; keeping at most this many distinct label values
/// stops a client from inflating the registry with random names.
const MAX_OPERATION_LABELS: usize = 256;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub graphql_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub sql_statements: IntCounter,
    pub sql_failures: IntCounter,
    pub websockets_open: IntGauge,
    pub subscriptions_active: IntGauge,
    /// Transactions that placed several orders at once, by outcome: `committed`, or
    /// `split` when one order failed and each was placed on its own.
    pub order_batches: IntCounterVec,
    /// How many markets each committed batch of orders spanned.
    pub order_batch_markets: Histogram,
    /// Executions of subscriptions shared by every subscriber of one document.
    pub shared_subscription_executions: IntCounter,
    /// WebSockets cut off because the peer took nothing for the write timeout.
    pub websocket_write_timeouts: IntCounter,
    /// WebSocket writes under way; one that stays is a peer that stopped reading.
    pub websocket_writes_pending: IntGauge,
    known_operations: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("tradegraph".into()), None)
            .unwrap_or_else(|_| Registry::new());
        let graphql_requests = IntCounterVec::new(
            Opts::new(
                "graphql_requests_total",
                "GraphQL operations by operation name and outcome (ok, error, rejected)",
            ),
            &["operation", "outcome"],
        )
        .unwrap_or_else(unreachable_metric);
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .unwrap_or_else(unreachable_metric);
        let sql_statements = IntCounter::new("sql_statements_total", "SQL statements executed")
            .unwrap_or_else(unreachable_metric);
        let sql_failures = IntCounter::new("sql_failures_total", "SQL statements that failed")
            .unwrap_or_else(unreachable_metric);
        let websockets_open = IntGauge::new("websocket_connections", "Open WebSocket connections")
            .unwrap_or_else(unreachable_metric);
        let subscriptions_active =
            IntGauge::new("subscriptions_active", "Active GraphQL subscriptions")
                .unwrap_or_else(unreachable_metric);
        let order_batches = IntCounterVec::new(
            Opts::new(
                "order_batches_total",
                "Order placement transactions by outcome: a batch committed or split around \
                 a failed order; a transaction that carried over what others committed for its \
                 traders (carried_over) or ran again with its locks up front (overtaken)",
            ),
            &["outcome"],
        )
        .unwrap_or_else(unreachable_metric);
        let order_batch_markets = Histogram::with_opts(
            HistogramOpts::new(
                "order_batch_markets",
                "Markets whose orders a committed order placement batch held together",
            )
            .buckets(vec![1.0, 2.0, 3.0, 4.0, 8.0, 16.0]),
        )
        .unwrap_or_else(unreachable_metric);
        let shared_subscription_executions = IntCounter::new(
            "shared_subscription_executions_total",
            "Executions of viewer-independent subscriptions (ticker), one per distinct document \
             while it has subscribers, however many they are",
        )
        .unwrap_or_else(unreachable_metric);
        let websocket_write_timeouts = IntCounter::new(
            "websocket_write_timeouts_total",
            "WebSocket connections closed because the peer accepted nothing for WS_WRITE_TIMEOUT_MS",
        )
        .unwrap_or_else(unreachable_metric);
        let websocket_writes_pending = IntGauge::new(
            "websocket_writes_pending",
            "WebSocket writes waiting for the peer to take them; a write that stays here is a \
             client that stopped reading (cut off after WS_WRITE_TIMEOUT_MS)",
        )
        .unwrap_or_else(unreachable_metric);
        for collector in [
            Box::new(graphql_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(sql_statements.clone()),
            Box::new(sql_failures.clone()),
            Box::new(websockets_open.clone()),
            Box::new(subscriptions_active.clone()),
            Box::new(order_batches.clone()),
            Box::new(order_batch_markets.clone()),
            Box::new(shared_subscription_executions.clone()),
            Box::new(websocket_write_timeouts.clone()),
            Box::new(websocket_writes_pending.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::error!(%error, "metric registration failed");
            }
        }
        Metrics {
            registry,
            graphql_requests,
            http_duration,
            sql_statements,
            sql_failures,
            websockets_open,
            subscriptions_active,
            order_batches,
            order_batch_markets,
            shared_subscription_executions,
            websocket_write_timeouts,
            websocket_writes_pending,
            known_operations: Default::default(),
        }
    }

    /// Counts one GraphQL operation.
    pub fn record_operation(&self, operation: Option<&str>, outcome: &str) {
        let label = self.operation_label(operation);
        self.graphql_requests
            .with_label_values(&[label.as_str(), outcome])
            .inc();
    }

    fn operation_label(&self, operation: Option<&str>) -> String {
        let Some(name) = operation.filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) else {
            return "anonymous".to_owned();
        };
        let mut known = match self.known_operations.lock() {
            Ok(known) => known,
            Err(poisoned) => poisoned.into_inner(),
        };
        if known.contains(name) || known.len() < MAX_OPERATION_LABELS {
            known.insert(name.to_owned());
            name.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric definitions are constants; a failure here is a programming error caught by
/// the first test that builds a server.
fn unreachable_metric<T>(error: prometheus::Error) -> T {
    panic!("invalid metric definition: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_labels_are_sanitised_and_bounded() {
        let metrics = Metrics::new();
        metrics.record_operation(Some("Me"), "ok");
        metrics.record_operation(Some("bad name!"), "ok");
        metrics.record_operation(None, "error");
        for i in 0..(MAX_OPERATION_LABELS + 10) {
            metrics.record_operation(Some(&format!("Op{i}")), "ok");
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"tradegraph_graphql_requests_total{operation="Me",outcome="ok"} 1"#)
        );
        assert!(text.contains(r#"operation="anonymous",outcome="ok"} 1"#));
        assert!(text.contains(r#"operation="other""#));
        assert!(!text.contains("bad name"));
    }
}
