//! Funds: balances, the ledger statement, deposits credited by operators, and the
//! ledger consistency check.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};

use super::accounts::parse_id;
use super::context::ContextExt;
use super::markets::{load_asset, Asset};
use super::pagination;
use super::scalars::{DateTime, Decimal};
use crate::service::{funds, ledger, markets};
use entity::Role;

/// What a user holds of one asset.
pub struct Balance {
    asset: entity::assets::Model,
    available: rust_decimal::Decimal,
    locked: rust_decimal::Decimal,
}

/// What the signed-in user holds of one asset.
#[Object]
impl Balance {
    /// The asset held.
    async fn asset(&self) -> Asset {
        Asset(self.asset.clone())
    }

    /// Free to trade or withdraw.
    async fn available(&self) -> Decimal {
        Decimal(self.available)
    }

    /// Held for open orders and pending withdrawals.
    async fn locked(&self) -> Decimal {
        Decimal(self.locked)
    }

    /// `available + locked`.
    async fn total(&self) -> Decimal {
        Decimal(self.available + self.locked)
    }
}

/// One movement of funds on the user's statement.
pub struct LedgerEntry(pub entity::journal_entries::Model);

/// One movement of the user's funds, booked as a balanced journal entry.
#[Object]
impl LedgerEntry {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// What happened: `DEPOSIT`, `WITHDRAWAL`, `TRADE`, ...
    async fn kind(&self) -> &str {
        &self.0.kind
    }

    /// The asset that moved.
    async fn asset(&self, ctx: &Context<'_>) -> async_graphql::Result<Asset> {
        load_asset(ctx, &self.0.asset).await
    }

    /// The signed change to the user's funds (positive for money in).
    async fn amount(&self) -> Decimal {
        Decimal(self.0.amount.0)
    }

    /// The idempotency reference given by whoever created the entry, if any.
    async fn reference(&self) -> Option<&str> {
        self.0.reference.as_deref()
    }

    /// A short human description.
    async fn description(&self) -> &str {
        &self.0.description
    }

    /// When the movement was booked.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// Filters for `ledger`.
#[derive(InputObject, Default)]
pub struct LedgerFilter {
    /// Only entries in this asset.
    asset: Option<String>,
    /// Only entries of this kind (`DEPOSIT`, ...).
    kind: Option<String>,
    /// Only entries at or after this instant.
    from: Option<DateTime>,
    /// Only entries before this instant.
    to: Option<DateTime>,
}

/// A deposit that arrived outside the exchange.
#[derive(InputObject)]
pub struct CreditDepositInput {
    /// The user credited.
    user_id: ID,
    /// Asset symbol.
    asset: String,
    /// Positive, within the asset's precision.
    amount: Decimal,
    /// Unique reference (e.g. the chain transaction id); repeating it changes nothing.
    reference: String,
}

/// The result of checking the ledger.
#[derive(SimpleObject)]
pub struct LedgerCheck {
    /// True when every balance equals the sum of its postings and every entry balances.
    ok: bool,
    /// Ledger accounts checked.
    accounts_checked: u64,
    /// Journal entries checked.
    entries_checked: u64,
    /// What disagrees, one line per problem (empty when `ok`).
    problems: Vec<String>,
}

#[derive(Default)]
pub struct FundsQuery;

#[Object]
impl FundsQuery {
    /// The signed-in user's balances, one per listed asset (zero where nothing is held).
    async fn balances(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Balance>> {
        let viewer = ctx.viewer()?;
        let conn = ctx.state().db.conn();
        let assets = markets::list_assets(conn).await?;
        let mut holdings = ledger::holdings(conn, viewer.user_id()).await?;
        Ok(assets
            .into_iter()
            .map(|asset| {
                let holding = holdings.remove(&asset.symbol).unwrap_or_default();
                Balance {
                    asset,
                    available: holding.available,
                    locked: holding.locked,
                }
            })
            .collect())
    }

    /// The signed-in user's ledger entries, newest first. `first` is at most 200.
    async fn ledger(
        &self,
        ctx: &Context<'_>,
        filter: Option<LedgerFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, LedgerEntry>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let filter = ledger::EntryFilter {
            asset: filter.asset.map(|a| a.trim().to_uppercase()),
            kind: filter.kind.map(|k| k.trim().to_uppercase()),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let mut rows = ledger::entries(
            ctx.state().db.conn(),
            viewer.user_id(),
            &filter,
            page.after,
            page.limit + 1,
        )
        .await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(pagination::encode_cursor(row.id), LedgerEntry(row))),
        );
        Ok(connection)
    }

    /// Rebuilds every balance from the journal and reports any disagreement. ADMIN only;
    /// reads the whole ledger.
    async fn ledger_check(&self, ctx: &Context<'_>) -> async_graphql::Result<LedgerCheck> {
        ctx.viewer_with_role(Role::Admin)?;
        let report = ctx
            .state()
            .db
            .read_snapshot(|txn| Box::pin(ledger::check(txn)))
            .await?;
        Ok(LedgerCheck {
            ok: report.problems.is_empty(),
            accounts_checked: report.accounts_checked,
            entries_checked: report.entries_checked,
            problems: report.problems,
        })
    }
}

#[derive(Default)]
pub struct FundsMutation;

#[Object]
impl FundsMutation {
    /// Credits a deposit to a user. ADMIN only. Idempotent by `reference`: a repeat
    /// returns the original entry; the same reference with other details is `CONFLICT`.
    async fn credit_deposit(
        &self,
        ctx: &Context<'_>,
        input: CreditDepositInput,
    ) -> async_graphql::Result<LedgerEntry> {
        let viewer = ctx.viewer_with_role(Role::Admin)?;
        let user_id = parse_id(&input.user_id, "user")?;
        let entry = funds::credit_deposit(
            ctx.state(),
            viewer,
            funds::DepositInput {
                user_id,
                asset: input.asset,
                amount: input.amount.0,
                reference: input.reference,
            },
        )
        .await?;
        Ok(LedgerEntry(entry))
    }
}
