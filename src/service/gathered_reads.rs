//! Reads that many concurrent requests make, one key each, gathered into one query.
//!
//! Every request with an access token reads its session and user. Under load that one
//! small read per request was a third of the statements the database ran for an order
//! placement. Here the requests that arrive while a read is running wait for the next
//! one, which fetches all their keys at once: one query for however many requests
//! queued, and still a read that starts after each request arrived, so nothing is
//! served from a cache. With one request at a time, each still gets its own read.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

type Reply<V> = oneshot::Sender<Result<Option<V>, ApiError>>;

/// Keys to read, gathered; see the module documentation.
pub struct Gathered<K, V> {
    queue: mpsc::UnboundedSender<(K, Reply<V>)>,
}

impl<K, V> Gathered<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts the task that runs `fetch` for up to `most` keys at a time. It ends when
    /// the last handle is dropped.
    pub fn start<F, Fut>(most: usize, fetch: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, ApiError>> + Send,
    {
        let (queue, mut waiting) = mpsc::unbounded_channel::<(K, Reply<V>)>();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < most {
                    match waiting.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let mut keys: Vec<K> = Vec::with_capacity(batch.len());
                for (key, _) in &batch {
                    if !keys.contains(key) {
                        keys.push(key.clone());
                    }
                }
                match fetch(keys).await {
                    Ok(found) => {
                        for (key, reply) in batch {
                            let _ = reply.send(Ok(found.get(&key).cloned()));
                        }
                    }
                    Err(error) => {
                        // Each caller gets an error of its own; the cause is logged once.
                        tracing::warn!(error = ?error, "a gathered read failed");
                        for (_, reply) in batch {
                            let failed = anyhow::anyhow!("a gathered read failed");
                            let _ = reply.send(Err(ApiError::internal(failed)));
                        }
                    }
                }
            }
        });
        Gathered { queue }
    }

    /// Reads `key` with whatever other keys are waiting: `None` when it is not there.
    pub async fn get(&self, key: K) -> Result<Option<V>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((key, reply))
            .map_err(|_| ApiError::internal(anyhow::anyhow!("the gathered reads stopped")))?;
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::internal(anyhow::anyhow!(
                "the gathered reads stopped before answering"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Keys asked for while a read runs go together into the next read, once each, and
    /// every caller gets the value of its own key (or none).
    #[tokio::test]
    async fn keys_waiting_behind_a_read_are_read_together() {
        let reads: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (open, gate) = tokio::sync::watch::channel(false);
        let seen = reads.clone();
        let gathered = Arc::new(Gathered::start(64, move |keys: Vec<u32>| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(keys.clone());
            let mut gate = gate.clone();
            async move {
                // The first read waits until the test has queued the others.
                let _ = gate.wait_for(|open| *open).await;
                Ok(keys
                    .into_iter()
                    .filter(|k| k % 10 != 0)
                    .map(|k| (k, k * 2))
                    .collect())
            }
        }));
        let first = tokio::spawn({
            let gathered = gathered.clone();
            async move { gathered.get(1).await }
        });
        while reads.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            tokio::task::yield_now().await;
        }
        let mut later = Vec::new();
        for key in [2, 3, 3, 10] {
            let gathered = gathered.clone();
            later.push(tokio::spawn(async move { gathered.get(key).await }));
        }
        // Let the four reach the queue before the first read ends.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        open.send(true).expect("the gate");
        assert_eq!(first.await.expect("joined").expect("read"), Some(2));
        let mut values = Vec::new();
        for task in later {
            values.push(task.await.expect("joined").expect("read"));
        }
        assert_eq!(values, vec![Some(4), Some(6), Some(6), None]);
        let reads = reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(reads, vec![vec![1], vec![2, 3, 10]]);
    }
}
