//! The database connection: one pool for SQLite or PostgreSQL, migrations, and the
//! write-transaction helper every service uses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use rand::Rng;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long SQLite waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TX_ATTEMPTS: u32 = 6;

pub type TxFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'c>>;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 1024;

/// The database pool plus what tradegraph needs around it.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// SQLite allows one writer at a time. Queuing writers of this process here, rather
    /// than in SQLite's busy handler, keeps them fair and avoids `SQLITE_BUSY` on
    /// read-to-write upgrades, which the busy timeout cannot help with.
    sqlite_writer: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// The port a PostgreSQL URL connects to (5432 when it names none, or for a URL of
/// another database, which is not parsed: sqlx would warn of its parameters).
fn postgres_port(url: &str) -> u16 {
    use std::str::FromStr;
    if !url.starts_with("postgres") {
        return 5432;
    }
    sea_orm::sqlx::postgres::PgConnectOptions::from_str(url)
        .map(|options| options.get_port())
        .unwrap_or(5432)
}

impl Db {
    /// Connects, applying SQLite's WAL mode and busy timeout where relevant, and counts
    /// every SQL statement in `metrics`.
    pub async fn connect(url: &str, max_connections: u32, metrics: &Metrics) -> anyhow::Result<Db> {
        let postgres_port = postgres_port(url);
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            // A ping before every checkout doubles the round trips of a short query; a
            // connection idle for a while is still checked, as it may have been dropped.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            // Every distinct statement text is prepared once per connection and kept:
            // an order placement alone uses dozens (multi-row inserts and IN lists vary
            // with their length), and sqlx's default of 100 would evict and re-prepare
            // them, costing an extra round trip each time.
            .map_sqlx_postgres_opts(|opts| opts.statement_cache_capacity(STATEMENT_CACHE))
            // Statements of many rows must not wait for delayed ACKs (`db_nodelay`).
            .map_sqlx_postgres_pool_opts(move |pool| {
                pool.after_connect(move |_, _| {
                    Box::pin(async move {
                        crate::db_nodelay::set_towards(postgres_port);
                        Ok(())
                    })
                })
            })
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
            });
        let mut conn = Database::connect(options)
            .await
            .context("cannot connect to the database (check DATABASE_URL)")?;
        let counter = metrics.sql_statements.clone();
        let failures = metrics.sql_failures.clone();
        conn.set_metric_callback(move |info| {
            counter.inc();
            if info.failed {
                failures.inc();
            }
        });
        let sqlite_writer = (conn.get_database_backend() == DatabaseBackend::Sqlite)
            .then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Db {
            conn,
            sqlite_writer,
        })
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        Migrator::up(&self.conn, None)
            .await
            .context("database migration failed")
    }

    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.ping().await
    }

    /// Runs `work` in one write transaction, committing on `Ok` and rolling back on
    /// `Err`. Serialization failures, deadlocks and SQLite lock timeouts are retried with
    /// jittered backoff, so callers never show them to users as `INTERNAL`; `work` must
    /// therefore be safe to run again from the start.
    pub async fn write<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send,
        F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T> + Send + Sync,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.write_once(&work).await;
            match result {
                Err(ApiError::Internal(ref error))
                    if attempt < MAX_TX_ATTEMPTS && is_retryable(error) =>
                {
                    let base = 5u64 << attempt.min(6);
                    let delay = rand::thread_rng().gen_range(base / 2..=base);
                    tracing::debug!(attempt, delay_ms = delay, "retrying transaction: {error:#}");
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                other => return other,
            }
        }
    }

    async fn write_once<T, F>(&self, work: &F) -> Result<T, ApiError>
    where
        F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T>,
    {
        let _writer = match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let txn = self.begin_write().await?;
        let value = work(&txn).await?;
        txn.commit().await.map_err(|error| {
            if lost_connection(&error) {
                // The commit may have reached the database before the connection went:
                // running the work again could do it twice.
                ApiError::Internal(anyhow::Error::new(error).context(OutcomeUnknown))
            } else {
                ApiError::from(error)
            }
        })?;
        Ok(value)
    }

    /// Runs `work` in a transaction that is always rolled back: to see what a change
    /// would do without making it.
    pub async fn dry_run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send,
        F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T> + Send + Sync,
    {
        let _writer = match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let txn = self.begin_write().await?;
        let result = work(&txn).await;
        txn.rollback().await?;
        result
    }

    /// Runs `work` in a read-only transaction that sees one consistent snapshot, for
    /// reads that must agree with each other (balances against postings).
    pub async fn read_snapshot<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> TxFuture<'c, T> + Send,
    {
        let (isolation, access) = match self.backend() {
            // SQLite in WAL mode gives a deferred transaction a snapshot at its first read.
            DatabaseBackend::Sqlite => (None, None),
            _ => (
                Some(sea_orm::IsolationLevel::RepeatableRead),
                Some(sea_orm::AccessMode::ReadOnly),
            ),
        };
        let txn = self.conn.begin_with_config(isolation, access).await?;
        let result = work(&txn).await;
        txn.rollback().await?;
        result
    }

    /// Begins a transaction that will write: on SQLite `BEGIN IMMEDIATE`, taking the write
    /// lock up front so the transaction cannot fail later upgrading a read lock.
    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.conn
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// Executes raw SQL (used by health checks and tests).
    pub async fn execute_unprepared(&self, sql: &str) -> Result<(), DbErr> {
        self.conn.execute_unprepared(sql).await.map(|_| ())
    }
}

/// Marks a commit whose connection was lost: whether it took effect is unknown.
#[derive(Debug)]
struct OutcomeUnknown;

impl std::fmt::Display for OutcomeUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection was lost during commit; its outcome is unknown")
    }
}

/// Whether `error` says the connection to the database went away (a restarted or
/// failed-over server, a dropped socket): pooled connections are only checked after
/// being idle, so the first use of each after a restart meets this.
fn lost_connection(error: &DbErr) -> bool {
    let text = error.to_string().to_lowercase();
    [
        "error communicating with database",
        "terminating connection",
        "connection reset",
        "broken pipe",
        "unexpected end of file",
        "connection closed",
    ]
    .iter()
    .any(|sign| text.contains(sign))
}

/// Whether a failed transaction may succeed when simply run again.
fn is_retryable(error: &anyhow::Error) -> bool {
    if error.downcast_ref::<OutcomeUnknown>().is_some() {
        return false;
    }
    let Some(db) = error.downcast_ref::<DbErr>() else {
        return false;
    };
    let text = db.to_string();
    // PostgreSQL: serialization_failure (40001) and deadlock_detected (40P01).
    // SQLite: SQLITE_BUSY / SQLITE_LOCKED after the busy timeout.
    // A connection lost before commit: the database rolled the transaction back.
    text.contains("40001")
        || text.contains("40P01")
        || text.contains("could not serialize access")
        || text.contains("deadlock detected")
        || text.contains("database is locked")
        || text.contains("database table is locked")
        || lost_connection(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `db_nodelay` needs the database's port; only PostgreSQL URLs are parsed for it.
    #[test]
    fn the_port_comes_from_postgres_urls_only() {
        assert_eq!(
            postgres_port("postgres://u@db.internal:6543/tradegraph"),
            6543
        );
        assert_eq!(postgres_port("postgresql://u@db.internal/tradegraph"), 5432);
        assert_eq!(postgres_port("sqlite://tradegraph.db?mode=rwc"), 5432);
    }

    #[test]
    fn retryable_errors_are_recognised() {
        let retry = anyhow::Error::new(DbErr::Custom(
            "error returned from database: could not serialize access".into(),
        ));
        assert!(is_retryable(&retry));
        let locked = anyhow::Error::new(DbErr::Custom("database is locked".into()));
        assert!(is_retryable(&locked));
        let other = anyhow::Error::new(DbErr::Custom("duplicate key value".into()));
        assert!(!is_retryable(&other));
        assert!(!is_retryable(&anyhow::anyhow!("database is locked")));
    }

    /// A connection lost while the work ran is retried (the database rolled it back);
    /// one lost during commit is not, since the commit may have happened.
    #[test]
    fn lost_connections_are_retried_only_before_commit() {
        let lost = || {
            DbErr::Custom(
                "error returned from database: terminating connection due to administrator \
                 command"
                    .into(),
            )
        };
        assert!(is_retryable(&anyhow::Error::new(lost())));
        let io =
            DbErr::Custom("error communicating with database: Broken pipe (os error 32)".into());
        assert!(is_retryable(&anyhow::Error::new(io)));
        let at_commit = anyhow::Error::new(lost()).context(OutcomeUnknown);
        assert!(!is_retryable(&at_commit));
        // Losing the pool (no connection within the acquire timeout) is not retried:
        // the caller has already waited that long.
        let timeout = DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout);
        assert!(!is_retryable(&anyhow::Error::new(timeout)));
    }
}
