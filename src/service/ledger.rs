//! The double-entry ledger: posting balanced journal entries and reading balances.
//!
//! Every balance change in tradegraph goes through [`post`], inside the caller's
//! transaction, so the balance columns always equal the sum of their postings and a
//! balance that would go negative aborts the whole transaction with
//! `INSUFFICIENT_FUNDS`.

use std::collections::BTreeMap;

use chrono::Utc;
use rust_decimal::Decimal;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait,
    QueryFilter, QuerySelect,
};
use uuid::Uuid;

use crate::domain::ledger::{self as rules, AccountKind, AccountRef, LedgerError, Leg};
use crate::error::ApiError;
use crate::service::bulk::{Cell, Columns, Params};
use entity::{journal_entries, ledger_accounts, postings, Amount};

/// A journal entry to be posted.
pub struct Draft {
    pub kind: &'static str,
    pub reference: Option<String>,
    pub user_id: Option<Uuid>,
    pub asset: String,
    pub amount: Decimal,
    pub description: String,
    pub legs: Vec<Leg>,
}

/// Posts a balanced entry: locks each account it touches, applies the legs, refuses a
/// negative balance on any account that may not go below zero, and records postings
/// with the balance after each.
pub async fn post<C: ConnectionTrait>(
    conn: &C,
    draft: Draft,
) -> Result<journal_entries::Model, ApiError> {
    let now = Utc::now();
    let (entry, legs) = entry_of(draft, now)?;
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        post_in_one_statement(conn, &entry, &legs).await?;
        return Ok(entry);
    }
    let entry = journal_entries::ActiveModel::from(entry.clone())
        .reset_all()
        .insert(conn)
        .await?;
    let mut rows = Vec::with_capacity(legs.len());
    for leg in legs {
        let (account_id, balance) = apply_leg(conn, &leg.account, leg.amount, now).await?;
        if balance.is_sign_negative() && !leg.account.kind.may_go_negative() {
            return Err(ApiError::InsufficientFunds(format!(
                "not enough {} available",
                leg.account.asset
            )));
        }
        rows.push(postings::ActiveModel {
            id: Set(Uuid::now_v7()),
            entry_id: Set(entry.id),
            account_id: Set(account_id),
            asset: Set(leg.account.asset.clone()),
            amount: Set(Amount(leg.amount)),
            balance_after: Set(Amount(balance)),
            created_at: Set(now),
        });
    }
    // One statement for all the entry's postings: a fill has half a dozen legs.
    postings::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    Ok(entry)
}

/// PostgreSQL: the entry, every leg's balance change and every posting in one
/// statement. Each leg is an `INSERT … ON CONFLICT DO UPDATE` adding to the account's
/// balance (exact in `NUMERIC`, creating the account at its first use, holding its row
/// lock to commit), in account order like every other lock on these rows; the
/// postings record the balance each leg left. A balance that went negative where it may
/// not aborts the caller's transaction with `INSUFFICIENT_FUNDS`.
async fn post_in_one_statement<C: ConnectionTrait>(
    conn: &C,
    entry: &journal_entries::Model,
    legs: &[Leg],
) -> Result<(), ApiError> {
    use sea_orm::Value;
    let mut values: Vec<Value> = vec![
        entry.id.into(),
        entry.kind.clone().into(),
        entry.reference.clone().into(),
        entry.user_id.into(),
        entry.asset.clone().into(),
        entry.amount.0.into(),
        entry.description.clone().into(),
        entry.created_at.into(),
    ];
    let mut rows = Vec::with_capacity(legs.len());
    for leg in legs {
        let n = values.len();
        rows.push(format!(
            "(${}::uuid, ${}::uuid, ${}::uuid, ${}, ${}, ${}::numeric)",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6
        ));
        values.extend([
            Uuid::now_v7().into(),
            Uuid::now_v7().into(),
            leg.account.owner.into(),
            leg.account.asset.clone().into(),
            leg.account.kind.as_str().into(),
            leg.amount.into(),
        ]);
    }
    let sql = format!(
        r#"WITH legs (new_id, posting_id, owner_id, asset, kind, amount) AS (VALUES {rows}),
entry AS (
    INSERT INTO journal_entries (id, kind, reference, user_id, asset, amount, description, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
),
moved AS (
    INSERT INTO ledger_accounts AS a (id, owner_id, asset, kind, balance, updated_at)
    SELECT new_id, owner_id, asset, kind, amount, $8 FROM legs
    ON CONFLICT (owner_id, asset, kind)
    DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at
    RETURNING a.id, a.owner_id, a.asset, a.kind, a.balance
),
posted AS (
    INSERT INTO postings (id, entry_id, account_id, asset, amount, balance_after, created_at)
    SELECT l.posting_id, $1, m.id, m.asset, l.amount, m.balance, $8
    FROM moved m JOIN legs l USING (owner_id, asset, kind)
)
SELECT asset, kind, balance FROM moved"#,
        rows = rows.join(", ")
    );
    let moved = conn
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    if moved.len() != legs.len() {
        return Err(ApiError::internal(anyhow::anyhow!(
            "a journal entry moved {} accounts for {} legs",
            moved.len(),
            legs.len()
        )));
    }
    for row in moved {
        let asset: String = row.try_get("", "asset")?;
        let kind: String = row.try_get("", "kind")?;
        let balance: Decimal = row.try_get("", "balance")?;
        let may_go_negative = AccountKind::parse(&kind).is_some_and(AccountKind::may_go_negative);
        if balance.is_sign_negative() && !may_go_negative {
            return Err(ApiError::InsufficientFunds(format!(
                "not enough {asset} available"
            )));
        }
    }
    Ok(())
}

/// SQLite: adds `delta` to an account's balance and returns the account id and new
/// balance. SQLite stores amounts as text, which its arithmetic would turn into binary
/// floats, so the sum is made in Rust between a read and a write (safe: SQLite has a
/// single writer).
async fn apply_leg<C: ConnectionTrait>(
    conn: &C,
    account: &AccountRef,
    delta: Decimal,
    now: chrono::DateTime<Utc>,
) -> Result<(Uuid, Decimal), ApiError> {
    let row = lock_account(conn, account).await?;
    let balance = row
        .balance
        .0
        .checked_add(delta)
        .ok_or_else(|| ApiError::bad_input("amount", "the amount is out of range"))?;
    ledger_accounts::Entity::update_many()
        .col_expr(ledger_accounts::Column::Balance, Amount(balance).into())
        .col_expr(ledger_accounts::Column::UpdatedAt, now.into())
        .filter(ledger_accounts::Column::Id.eq(row.id))
        .exec(conn)
        .await?;
    Ok((row.id, balance))
}

/// A draft as the entry to store, made at `now`, and its checked legs.
pub fn entry_of(
    draft: Draft,
    now: chrono::DateTime<Utc>,
) -> Result<(journal_entries::Model, Vec<Leg>), ApiError> {
    let legs = checked_legs(draft.legs)?;
    let entry = journal_entries::Model {
        id: Uuid::now_v7(),
        kind: draft.kind.to_owned(),
        reference: draft.reference,
        user_id: draft.user_id,
        asset: draft.asset,
        amount: Amount(draft.amount),
        description: draft.description,
        created_at: now,
    };
    Ok((entry, legs))
}

/// A draft's legs, refused unless they balance per asset, netted to one per account.
pub fn checked_legs(legs: Vec<Leg>) -> Result<Vec<Leg>, ApiError> {
    rules::check_balanced(&legs).map_err(ledger_bug)?;
    rules::net_legs(legs).map_err(ledger_bug)
}

/// An unbalanced draft is a programming error, never the user's: report it as internal.
fn ledger_bug(error: LedgerError) -> ApiError {
    ApiError::internal(anyhow::anyhow!(
        "refusing an invalid journal entry: {error:?}"
    ))
}

/// Fetches an account for update, creating it at zero the first time. Creation tolerates
/// a concurrent creator; the row lock (PostgreSQL) serialises writers of one balance.
pub async fn lock_account<C: ConnectionTrait>(
    conn: &C,
    account: &AccountRef,
) -> Result<ledger_accounts::Model, ApiError> {
    // Most accounts exist: lock and read in one statement, inserting only the first time.
    if let Some(existing) = select_account(conn, account).await? {
        return Ok(existing);
    }
    let insert = ledger_accounts::Entity::insert(ledger_accounts::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(account.owner),
        asset: Set(account.asset.clone()),
        kind: Set(account.kind.as_str().to_owned()),
        balance: Set(Amount::ZERO),
        updated_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([
            ledger_accounts::Column::OwnerId,
            ledger_accounts::Column::Asset,
            ledger_accounts::Column::Kind,
        ])
        .do_nothing()
        .to_owned(),
    );
    // With DO NOTHING a concurrent creator is not an error; zero rows inserted is fine.
    let _ = insert.exec_without_returning(conn).await?;
    select_account(conn, account)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("ledger account vanished after insert")))
}

/// Locks many accounts at once (PostgreSQL), creating those used for the first time.
///
/// One `SELECT … ORDER BY owner, asset, kind FOR UPDATE` takes the existing rows' locks
/// in that order, so every transaction that locks through here agrees on the order and
/// none can wait on another in a cycle; accounts that do not exist yet are created and
/// locked after, one by one (this happens once per account in its life).
pub async fn lock_accounts<C: ConnectionTrait>(
    conn: &C,
    accounts: &std::collections::BTreeSet<AccountRef>,
) -> Result<(), ApiError> {
    if conn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    lock_and_read_accounts(conn, accounts).await.map(|_| ())
}

/// [`lock_accounts`], returning the rows as locked (PostgreSQL only).
pub async fn lock_and_read_accounts<C: ConnectionTrait>(
    conn: &C,
    accounts: &std::collections::BTreeSet<AccountRef>,
) -> Result<Vec<ledger_accounts::Model>, ApiError> {
    read_accounts(conn, accounts, true).await
}

/// Reads many accounts at once (PostgreSQL), creating those used for the first time;
/// with `lock`, as [`lock_and_read_accounts`]. Without it the rows are as last
/// committed and stay free for others to change, except the ones created here.
pub async fn read_accounts<C: ConnectionTrait>(
    conn: &C,
    accounts: &std::collections::BTreeSet<AccountRef>,
    lock: bool,
) -> Result<Vec<ledger_accounts::Model>, ApiError> {
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    // The keys travel as arrays, so the statement's text (and its plan, prepared once
    // per connection) is the same however many accounts a transaction locks.
    let mut keys = Columns::new(&[("owner_id", "uuid"), ("asset", ""), ("kind", "")]);
    for account in accounts {
        keys.push([
            account.owner.cell(),
            account.asset.cell(),
            account.kind.as_str().cell(),
        ]);
    }
    let mut p = Params::default();
    let keys = keys.select(&mut p, "k");
    let sql = format!(
        "SELECT * FROM ledger_accounts WHERE (owner_id, asset, kind) IN ({keys}) \
         ORDER BY owner_id, asset, kind{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let found = ledger_accounts::Entity::find()
        .from_raw_sql(p.into_statement(sql))
        .all(conn)
        .await?;
    let existing: std::collections::BTreeSet<(Uuid, String, String)> = found
        .iter()
        .map(|a| (a.owner_id, a.asset.clone(), a.kind.clone()))
        .collect();
    let mut rows = found;
    for account in accounts {
        let key = (
            account.owner,
            account.asset.clone(),
            account.kind.as_str().to_owned(),
        );
        if !existing.contains(&key) {
            rows.push(lock_account(conn, account).await?);
        }
    }
    Ok(rows)
}

/// Reads an account, locking its row on PostgreSQL (SQLite has one writer anyway).
async fn select_account<C: ConnectionTrait>(
    conn: &C,
    account: &AccountRef,
) -> Result<Option<ledger_accounts::Model>, ApiError> {
    let mut query = ledger_accounts::Entity::find()
        .filter(ledger_accounts::Column::OwnerId.eq(account.owner))
        .filter(ledger_accounts::Column::Asset.eq(account.asset.as_str()))
        .filter(ledger_accounts::Column::Kind.eq(account.kind.as_str()));
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    Ok(query.one(conn).await?)
}

/// A user's available and locked amounts of one asset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub available: Decimal,
    pub locked: Decimal,
}

/// The user's holdings per asset, from the balance columns (one indexed read).
pub async fn holdings<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
) -> Result<BTreeMap<String, Holding>, ApiError> {
    let accounts = ledger_accounts::Entity::find()
        .filter(ledger_accounts::Column::OwnerId.eq(user_id))
        .all(conn)
        .await?;
    let mut holdings: BTreeMap<String, Holding> = BTreeMap::new();
    for account in accounts {
        let holding = holdings.entry(account.asset).or_default();
        match AccountKind::parse(&account.kind) {
            Some(AccountKind::Available) => holding.available = account.balance.0,
            Some(AccountKind::Locked) => holding.locked = account.balance.0,
            _ => {}
        }
    }
    Ok(holdings)
}

/// What a full ledger check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub accounts_checked: u64,
    pub entries_checked: u64,
    pub problems: Vec<String>,
}

/// Rebuilds every balance from the postings and checks every entry balances per asset.
/// Reads the whole ledger: an operator's check, not something a user can trigger.
/// Sums are done here, in exact decimals, because SQLite would sum text as floats.
pub async fn check<C: ConnectionTrait>(conn: &C) -> Result<CheckReport, ApiError> {
    let accounts = ledger_accounts::Entity::find().all(conn).await?;
    let all_postings = postings::Entity::find().all(conn).await?;
    let mut per_account: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    let mut per_entry: BTreeMap<(Uuid, String), Decimal> = BTreeMap::new();
    // Each account's running balances: every posting's balance before it, and the
    // account's balance now, must be the balances after its postings and the opening
    // zero, as multisets (whatever order the postings committed in).
    let mut links: BTreeMap<Uuid, BTreeMap<Decimal, i64>> = BTreeMap::new();
    for posting in &all_postings {
        *per_account.entry(posting.account_id).or_default() += posting.amount.0;
        let link = links.entry(posting.account_id).or_default();
        let after = posting.balance_after.0.normalize();
        *link
            .entry((posting.balance_after.0 - posting.amount.0).normalize())
            .or_default() += 1;
        *link.entry(after).or_default() -= 1;
        *per_entry
            .entry((posting.entry_id, posting.asset.clone()))
            .or_default() += posting.amount.0;
    }
    let mut report = CheckReport {
        accounts_checked: accounts.len() as u64,
        ..Default::default()
    };
    for account in &accounts {
        let rebuilt = per_account.get(&account.id).copied().unwrap_or_default();
        if rebuilt != account.balance.0 {
            report.problems.push(format!(
                "account {} ({} {} {}) holds {} but its postings sum to {}",
                account.id, account.owner_id, account.asset, account.kind, account.balance, rebuilt
            ));
        }
        let mut link = links.remove(&account.id).unwrap_or_default();
        *link.entry(account.balance.0.normalize()).or_default() += 1;
        *link.entry(Decimal::ZERO).or_default() -= 1;
        if link.values().any(|count| *count != 0) {
            report.problems.push(format!(
                "account {}: the balances after its postings do not chain from zero to {}",
                account.id, account.balance
            ));
        }
        let kind = AccountKind::parse(&account.kind);
        if account.balance.0.is_sign_negative() && !kind.is_some_and(AccountKind::may_go_negative) {
            report.problems.push(format!(
                "account {} is negative: {}",
                account.id, account.balance
            ));
        }
    }
    let mut entries = std::collections::BTreeSet::new();
    for ((entry, asset), sum) in per_entry {
        entries.insert(entry);
        if !sum.is_zero() {
            report
                .problems
                .push(format!("entry {entry} does not balance in {asset}: {sum}"));
        }
    }
    report.entries_checked = entries.len() as u64;
    Ok(report)
}

/// Finds an entry by its idempotency key.
pub async fn find_by_reference<C: ConnectionTrait>(
    conn: &C,
    kind: &str,
    reference: &str,
) -> Result<Option<journal_entries::Model>, ApiError> {
    Ok(journal_entries::Entity::find()
        .filter(journal_entries::Column::Kind.eq(kind))
        .filter(journal_entries::Column::Reference.eq(reference))
        .one(conn)
        .await?)
}

/// Entries about `user_id`, newest first, after the keyset cursor `before_id`.
pub struct EntryFilter {
    pub asset: Option<String>,
    pub kind: Option<String>,
    pub from: Option<chrono::DateTime<Utc>>,
    pub to: Option<chrono::DateTime<Utc>>,
}

/// One page of a user's journal entries, newest first; ids are time-ordered (UUIDv7),
/// so they serve as a stable keyset cursor under concurrent inserts.
pub async fn entries<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    filter: &EntryFilter,
    before_id: Option<Uuid>,
    limit: u64,
) -> Result<Vec<journal_entries::Model>, ApiError> {
    use sea_orm::QueryOrder;
    let mut query =
        journal_entries::Entity::find().filter(journal_entries::Column::UserId.eq(user_id));
    if let Some(asset) = &filter.asset {
        query = query.filter(journal_entries::Column::Asset.eq(asset.as_str()));
    }
    if let Some(kind) = &filter.kind {
        query = query.filter(journal_entries::Column::Kind.eq(kind.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(journal_entries::Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(journal_entries::Column::CreatedAt.lt(to));
    }
    if let Some(before) = before_id {
        query = query.filter(journal_entries::Column::Id.lt(before));
    }
    Ok(query
        .order_by_desc(journal_entries::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}
