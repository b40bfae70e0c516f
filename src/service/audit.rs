//! The audit log: every security and money action, appended in the same transaction as
//! the action itself, so one never commits without the other.
//!
//! Events are kept in chains (one per user, one per market's order flow, one for the
//! system), each event carrying the hash of the one before it in its chain. Several
//! chains rather than one keep unrelated writers from queueing on a single row: an
//! order placement already holds its market's lock, and a user's own actions rarely
//! race each other. `verify` walks every chain and reports the first broken link.
//!
//! Details never hold personal data (no e-mail, name or address): the log is immutable
//! and outlives an account's erasure.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use uuid::Uuid;

use crate::domain::audit::{self, ChainCheck, ChainedEvent, GENESIS};
use crate::error::ApiError;
use crate::service::bulk::{Bulk, Cell, Columns, Params};
use entity::{audit_chains, audit_events};

/// One action to record.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// Dotted and past tense: `order.placed`, `api_key.created`, `login.failed`.
    pub action: String,
    /// Who did it; `None` for the system or an anonymous caller.
    pub actor_id: Option<Uuid>,
    /// Whose security log shows it: the user the action affects.
    pub owner_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: String,
    /// Ids, amounts, states and reasons; never personal data.
    pub details: serde_json::Value,
    /// The chain to append to; by default the owner's, else the system's.
    pub chain: Option<String>,
    /// When it happened: when the entry was made, even if written later with others.
    at: chrono::DateTime<Utc>,
}

impl AuditEntry {
    pub fn new(
        action: impl Into<String>,
        subject_type: impl Into<String>,
        subject_id: impl ToString,
    ) -> Self {
        AuditEntry {
            action: action.into(),
            actor_id: None,
            owner_id: None,
            subject_type: subject_type.into(),
            subject_id: subject_id.to_string(),
            details: serde_json::Value::Object(Default::default()),
            chain: None,
            at: Utc::now(),
        }
    }

    pub fn actor(mut self, id: Uuid) -> Self {
        self.actor_id = Some(id);
        self
    }

    pub fn owner(mut self, id: Uuid) -> Self {
        self.owner_id = Some(id);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Appends to a named chain instead of the owner's: order flow goes to its market's
    /// chain, whose lock the placing transaction already holds.
    pub fn in_chain(mut self, chain: impl Into<String>) -> Self {
        self.chain = Some(chain.into());
        self
    }

    fn chain_key(&self) -> String {
        match (&self.chain, self.owner_id) {
            (Some(chain), _) => chain.clone(),
            (None, Some(owner)) => format!("user:{owner}"),
            (None, None) => "system".to_owned(),
        }
    }
}

/// Appends `entry` inside `txn`, hash-chained to the previous event of its chain.
pub async fn record(txn: &DatabaseTransaction, entry: AuditEntry) -> Result<(), ApiError> {
    record_all(txn, vec![entry]).await
}

/// Appends `entries` inside `txn`, in their order, each hash-chained to the one before
/// it in its chain, exactly as one [`record`] after another would. Each chain costs one
/// statement for its head however many entries it gets, and the entries and new heads
/// one more for all chains on PostgreSQL (two per chain on SQLite), so a transaction
/// that placed several orders of a market writes their audit entries together before
/// it commits. Chains are taken in name order.
pub async fn record_all(
    txn: &DatabaseTransaction,
    entries: Vec<AuditEntry>,
) -> Result<(), ApiError> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        let mut bulk = Bulk::default();
        record_all_in(txn, entries, &mut bulk).await?;
        return bulk.run(txn).await;
    }
    for (chain, events) in chain_all(txn, entries).await? {
        let head = events.last().map(|e| e.hash.clone());
        let mut rows: Vec<audit_events::ActiveModel> = events
            .into_iter()
            .map(|e| audit_events::ActiveModel::from(e).reset_all())
            .collect();
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(INSERT_ROWS));
            audit_events::Entity::insert_many(std::mem::replace(&mut rows, rest))
                .exec_without_returning(txn)
                .await?;
        }
        if let Some(head) = head {
            audit_chains::Entity::update_many()
                .col_expr(audit_chains::Column::LastHash, Expr::value(head))
                .filter(audit_chains::Column::Chain.eq(chain))
                .exec(txn)
                .await?;
        }
    }
    Ok(())
}

/// [`record_all`] on PostgreSQL for a transaction that sends its writes together: the
/// chains' numbers are taken now (one statement per chain, which holds the chain until
/// commit), the entries and the chains' new heads are added to `bulk`.
pub async fn record_all_in(
    txn: &DatabaseTransaction,
    entries: Vec<AuditEntry>,
    bulk: &mut Bulk,
) -> Result<(), ApiError> {
    let chained = chain_all(txn, entries).await?;
    let mut rows = Columns::new(&[
        ("id", "uuid"),
        ("chain", ""),
        ("chain_seq", "bigint"),
        ("action", ""),
        ("actor_id", "uuid?"),
        ("owner_id", "uuid?"),
        ("subject_type", ""),
        ("subject_id", ""),
        ("details", ""),
        ("created_at", "timestamptz"),
        ("prev_hash", ""),
        ("hash", ""),
    ]);
    let mut heads = Columns::new(&[("chain", ""), ("hash", "")]);
    for (chain, events) in chained {
        if let Some(last) = events.last() {
            heads.push([chain.cell(), last.hash.cell()]);
        }
        for e in events {
            rows.push([
                e.id.cell(),
                e.chain.cell(),
                e.chain_seq.cell(),
                e.action.cell(),
                e.actor_id.cell(),
                e.owner_id.cell(),
                e.subject_type.cell(),
                e.subject_id.cell(),
                e.details.cell(),
                e.created_at.cell(),
                e.prev_hash.cell(),
                e.hash.cell(),
            ]);
        }
    }
    bulk.add(|p| {
        format!(
            "INSERT INTO audit_events (id, chain, chain_seq, action, actor_id, owner_id, \
             subject_type, subject_id, details, created_at, prev_hash, hash) {}",
            rows.select(p, "r")
        )
    });
    bulk.add(|p| {
        format!(
            "UPDATE audit_chains AS c SET last_hash = h.hash FROM ({}) AS h \
             WHERE c.chain = h.chain",
            heads.select(p, "h")
        )
    });
    Ok(())
}

/// Rows of `audit_events` per INSERT, well within both backends' bind-parameter limits.
const INSERT_ROWS: usize = 500;

/// `entries` by chain, in chain name order (the order chains are locked in), each in
/// its entries' order.
fn by_chain(entries: Vec<AuditEntry>) -> std::collections::BTreeMap<String, Vec<AuditEntry>> {
    let mut chains: std::collections::BTreeMap<String, Vec<AuditEntry>> = Default::default();
    for entry in entries {
        chains.entry(entry.chain_key()).or_default().push(entry);
    }
    chains
}

/// Takes each chain's next numbers (chains in name order) and chains its entries, in
/// their order, to its head: the rows to write, by chain. One statement for every
/// chain on PostgreSQL, one per chain on SQLite.
async fn chain_all(
    txn: &DatabaseTransaction,
    entries: Vec<AuditEntry>,
) -> Result<Vec<(String, Vec<audit_events::Model>)>, ApiError> {
    let chains = by_chain(entries);
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        return chain_all_at_once(txn, chains).await;
    }
    let mut chained = Vec::with_capacity(chains.len());
    for (chain, entries) in chains {
        let events = chain_run(txn, &chain, entries).await?;
        chained.push((chain, events));
    }
    Ok(chained)
}

/// Takes the next numbers of one chain for a run of entries, and chains them.
async fn chain_run(
    txn: &DatabaseTransaction,
    chain: &str,
    entries: Vec<AuditEntry>,
) -> Result<Vec<audit_events::Model>, ApiError> {
    let count = entries.len() as i64;
    if count == 0 {
        return Ok(Vec::new());
    }
    let backend = txn.get_database_backend();
    // One statement creates the chain's head or takes its lock and reserves the next
    // `count` numbers; the row stays locked until commit, so appends to one chain are
    // strictly ordered.
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "INSERT INTO audit_chains (chain, last_seq, last_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (chain) DO UPDATE SET last_seq = audit_chains.last_seq + $4 \
             RETURNING last_seq, last_hash"
        }
        _ => {
            "INSERT INTO audit_chains (chain, last_seq, last_hash) VALUES (?, ?, ?) \
             ON CONFLICT (chain) DO UPDATE SET last_seq = audit_chains.last_seq + ? \
             RETURNING last_seq, last_hash"
        }
    };
    let head = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [chain.into(), count.into(), GENESIS.into(), count.into()],
        ))
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("audit chain head not returned")))?;
    let last_seq: i64 = head.try_get("", "last_seq")?;
    let prev_hash: String = head.try_get("", "last_hash")?;
    Ok(chain_entries(chain, (last_seq, prev_hash), entries))
}

/// Chains `entries` to a chain whose head, after their numbers were taken, is
/// `(last_seq, prev_hash)`: the last number taken and the hash before the first entry.
fn chain_entries(
    chain: &str,
    (last_seq, mut prev_hash): (i64, String),
    entries: Vec<AuditEntry>,
) -> Vec<audit_events::Model> {
    let count = entries.len() as i64;
    let mut rows = Vec::with_capacity(entries.len());
    for (seq, entry) in (last_seq - count + 1..).zip(entries) {
        let details = entry.details.to_string();
        let id = Uuid::now_v7();
        let created_at = audit::stored_time(entry.at);
        let hash = audit::hash(&ChainedEvent {
            id,
            chain,
            seq,
            action: &entry.action,
            actor_id: entry.actor_id,
            owner_id: entry.owner_id,
            subject_type: &entry.subject_type,
            subject_id: &entry.subject_id,
            details: &details,
            created_at,
            prev_hash: &prev_hash,
        });
        rows.push(audit_events::Model {
            id,
            chain: chain.to_owned(),
            chain_seq: seq,
            action: entry.action,
            actor_id: entry.actor_id,
            owner_id: entry.owner_id,
            subject_type: entry.subject_type,
            subject_id: entry.subject_id,
            details,
            created_at,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    rows
}

/// [`chain_all`] on PostgreSQL in one statement, however many chains.
async fn chain_all_at_once(
    txn: &DatabaseTransaction,
    chains: std::collections::BTreeMap<String, Vec<AuditEntry>>,
) -> Result<Vec<(String, Vec<audit_events::Model>)>, ApiError> {
    if chains.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted = Columns::new(&[("chain", ""), ("n", "bigint")]);
    for (chain, entries) in &chains {
        wanted.push([chain.cell(), (entries.len() as i64).cell()]);
    }
    let mut p = Params::default();
    // Heads are created or locked in chain order (`ORDER BY`), as one chain at a time
    // would, and each reserves its entries' numbers.
    let sql = format!(
        "INSERT INTO audit_chains AS c (chain, last_seq, last_hash) \
         SELECT r.chain, r.n, {} FROM ({}) AS r ORDER BY r.chain \
         ON CONFLICT (chain) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq \
         RETURNING chain, last_seq, last_hash",
        p.bind(GENESIS, "text"),
        wanted.select(&mut p, "r"),
    );
    let mut heads = std::collections::HashMap::new();
    for row in txn.query_all_raw(p.into_statement(sql)).await? {
        let chain: String = row.try_get("", "chain")?;
        let head: (i64, String) = (row.try_get("", "last_seq")?, row.try_get("", "last_hash")?);
        heads.insert(chain, head);
    }
    chains
        .into_iter()
        .map(|(chain, entries)| {
            let head = heads.remove(&chain).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("audit chain head not returned"))
            })?;
            let rows = chain_entries(&chain, head, entries);
            Ok((chain, rows))
        })
        .collect()
}

/// Every event about one subject, oldest first.
pub async fn trail<C: ConnectionTrait>(
    conn: &C,
    subject_type: &str,
    subject_id: &str,
) -> Result<Vec<audit_events::Model>, ApiError> {
    Ok(audit_events::Entity::find()
        .filter(audit_events::Column::SubjectType.eq(subject_type))
        .filter(audit_events::Column::SubjectId.eq(subject_id))
        .order_by_asc(audit_events::Column::Id)
        .all(conn)
        .await?)
}

/// Which events a log query wants.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub actor_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub action: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    pub from: Option<chrono::DateTime<Utc>>,
    pub to: Option<chrono::DateTime<Utc>>,
}

/// A page of events, newest first, strictly before `before_id` when given.
pub async fn events<C: ConnectionTrait>(
    conn: &C,
    filter: &EventFilter,
    before_id: Option<Uuid>,
    limit: u64,
) -> Result<Vec<audit_events::Model>, ApiError> {
    use audit_events::Column;
    let mut query = audit_events::Entity::find();
    if let Some(actor) = filter.actor_id {
        query = query.filter(Column::ActorId.eq(actor));
    }
    if let Some(owner) = filter.owner_id {
        query = query.filter(Column::OwnerId.eq(owner));
    }
    if let Some(action) = &filter.action {
        query = query.filter(Column::Action.eq(action.as_str()));
    }
    if let Some(subject_type) = &filter.subject_type {
        query = query.filter(Column::SubjectType.eq(subject_type.as_str()));
    }
    if let Some(subject_id) = &filter.subject_id {
        query = query.filter(Column::SubjectId.eq(subject_id.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(Column::CreatedAt.lt(to));
    }
    if let Some(before) = before_id {
        query = query.filter(Column::Id.lt(before));
    }
    Ok(query
        .order_by_desc(Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// What a walk over every chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainStatus {
    pub valid: bool,
    pub checked_events: u64,
    /// The earliest event (by time) at which some chain breaks.
    pub first_broken_event_id: Option<Uuid>,
}

/// Events read per round trip while verifying.
const VERIFY_BATCH: u64 = 1000;

/// Recomputes every hash of every chain. Reads the whole log in batches: an
/// operator's check, not something a request path calls.
pub async fn verify<C: ConnectionTrait>(conn: &C) -> Result<ChainStatus, ApiError> {
    let heads = audit_chains::Entity::find()
        .order_by_asc(audit_chains::Column::Chain)
        .all(conn)
        .await?;
    let mut checked_events = 0;
    let mut valid = true;
    let mut first_broken: Option<audit_events::Model> = None;
    for head in heads {
        let mut check = ChainCheck::default();
        let mut after_seq = 0;
        let mut last: Option<audit_events::Model> = None;
        let mut broken: Option<audit_events::Model> = None;
        loop {
            let batch = audit_events::Entity::find()
                .filter(audit_events::Column::Chain.eq(head.chain.as_str()))
                .filter(audit_events::Column::ChainSeq.gt(after_seq))
                .order_by_asc(audit_events::Column::ChainSeq)
                .limit(VERIFY_BATCH)
                .all(conn)
                .await?;
            let done = (batch.len() as u64) < VERIFY_BATCH;
            for event in batch {
                after_seq = event.chain_seq;
                let intact = check.next(&chained(&event), &event.hash);
                if !intact && broken.is_none() {
                    broken = Some(event.clone());
                }
                last = Some(event);
            }
            if done || broken.is_some() {
                break;
            }
        }
        checked_events += check.checked;
        if broken.is_none() && !check.matches_head(head.last_seq, &head.last_hash) {
            // Events were cut off the end: the last one left is where the chain stops
            // agreeing with its head.
            valid = false;
            broken = last;
        }
        if let Some(event) = broken {
            valid = false;
            let earlier = first_broken
                .as_ref()
                .is_none_or(|known| (event.created_at, event.id) < (known.created_at, known.id));
            if earlier {
                first_broken = Some(event);
            }
        }
    }
    Ok(ChainStatus {
        valid,
        checked_events,
        first_broken_event_id: first_broken.map(|e| e.id),
    })
}

fn chained(event: &audit_events::Model) -> ChainedEvent<'_> {
    ChainedEvent {
        id: event.id,
        chain: &event.chain,
        seq: event.chain_seq,
        action: &event.action,
        actor_id: event.actor_id,
        owner_id: event.owner_id,
        subject_type: &event.subject_type,
        subject_id: &event.subject_id,
        details: &event.details,
        created_at: event.created_at,
        prev_hash: &event.prev_hash,
    }
}
