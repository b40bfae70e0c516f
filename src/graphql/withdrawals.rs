//! Withdrawals and the withdrawal address book.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};

use super::access::api_key;
use super::accounts::parse_id;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::markets::{load_asset, Asset};
use super::pagination;
use super::scalars::{DateTime, Decimal};
use crate::domain::withdrawal_rules::status;
use crate::service::withdrawals::{self as service, Step};

/// Where a withdrawal stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WithdrawalStatus {
    /// Requested; funds held. The owner may still cancel.
    Pending,
    /// Picked up by an operator for sending; funds held.
    Processing,
    /// Sent; the funds have left the exchange.
    Completed,
    /// Cancelled by the owner; funds returned.
    Cancelled,
    /// Could not be sent; funds returned.
    Failed,
}

impl WithdrawalStatus {
    fn as_str(self) -> &'static str {
        match self {
            WithdrawalStatus::Pending => status::PENDING,
            WithdrawalStatus::Processing => status::PROCESSING,
            WithdrawalStatus::Completed => status::COMPLETED,
            WithdrawalStatus::Cancelled => status::CANCELLED,
            WithdrawalStatus::Failed => status::FAILED,
        }
    }

    fn from_column(value: &str) -> Self {
        match value {
            status::PROCESSING => WithdrawalStatus::Processing,
            status::COMPLETED => WithdrawalStatus::Completed,
            status::CANCELLED => WithdrawalStatus::Cancelled,
            status::FAILED => WithdrawalStatus::Failed,
            _ => WithdrawalStatus::Pending,
        }
    }
}

/// An entry of the viewer's withdrawal address book.
#[derive(SimpleObject)]
pub struct WithdrawalAddress {
    /// Opaque identifier, for `requestWithdrawal` and `removeWithdrawalAddress`.
    id: ID,
    /// The asset this address receives.
    asset: String,
    /// The destination address.
    address: String,
    /// The owner's name for it.
    label: String,
    /// When it becomes usable: a new address cools off first
    /// (`WITHDRAWAL_ADDRESS_COOLING_OFF_SECS`, 48 hours by default).
    activates_at: DateTime,
    /// True once `activatesAt` has passed.
    active: bool,
    /// When it was added.
    created_at: DateTime,
}

impl From<entity::withdrawal_addresses::Model> for WithdrawalAddress {
    fn from(model: entity::withdrawal_addresses::Model) -> Self {
        WithdrawalAddress {
            id: ID(model.id.to_string()),
            active: model.activates_at <= chrono::Utc::now(),
            asset: model.asset,
            address: model.address,
            label: model.label,
            activates_at: model.activates_at.into(),
            created_at: model.created_at.into(),
        }
    }
}

/// A request to send funds off the exchange.
pub struct Withdrawal(pub entity::withdrawals::Model);

/// A request to send funds off the exchange, with its funds held until it completes.
#[Object]
impl Withdrawal {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The asset withdrawn.
    async fn asset(&self, ctx: &Context<'_>) -> async_graphql::Result<Asset> {
        load_asset(ctx, &self.0.asset).await
    }

    /// The amount withdrawn.
    async fn amount(&self) -> Decimal {
        Decimal(self.0.amount.0)
    }

    /// Its value in USD when requested, as counted against the daily limit.
    async fn usd_value(&self) -> Decimal {
        Decimal(self.0.usd_value.0)
    }

    /// The address-book entry it was sent to.
    async fn address_id(&self) -> ID {
        ID(self.0.address_id.to_string())
    }

    /// The destination address, as it was when requested.
    async fn address(&self) -> &str {
        &self.0.address
    }

    /// Where it stands.
    async fn status(&self) -> WithdrawalStatus {
        WithdrawalStatus::from_column(&self.0.status)
    }

    /// The client's idempotency key.
    async fn idempotency_key(&self) -> &str {
        &self.0.idempotency_key
    }

    /// The chain transaction id, once COMPLETED; otherwise null.
    async fn txid(&self) -> Option<&str> {
        self.0.txid.as_deref()
    }

    /// Why it FAILED; otherwise null.
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }

    /// When it was requested.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// When its status last changed.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }
}

/// A new address-book entry.
#[derive(InputObject)]
pub struct AddWithdrawalAddressInput {
    /// Asset symbol the address receives.
    asset: String,
    /// The destination: 8 to 128 visible characters.
    address: String,
    /// A name for it: 1 to 64 characters.
    label: String,
    /// A current TOTP code; required when the account has 2FA.
    totp_code: Option<String>,
}

/// A withdrawal request.
#[derive(InputObject)]
pub struct RequestWithdrawalInput {
    /// Asset symbol; must match the address's asset.
    asset: String,
    /// Positive, within the asset's precision.
    amount: Decimal,
    /// An address-book entry past its cooling-off period.
    address_id: ID,
    /// A current TOTP code; required when the account has 2FA.
    totp_code: Option<String>,
    /// The client's key for this request (1 to 128 characters): repeating a request with
    /// it returns the first withdrawal instead of making another.
    idempotency_key: String,
}

/// Filters for `withdrawals`.
#[derive(InputObject, Default)]
pub struct WithdrawalFilter {
    /// Only withdrawals in this status.
    status: Option<WithdrawalStatus>,
    /// Only withdrawals of this asset.
    asset: Option<String>,
    /// Only withdrawals requested at or after this instant.
    from: Option<DateTime>,
    /// Only withdrawals requested before this instant.
    to: Option<DateTime>,
}

#[derive(Default)]
pub struct WithdrawalQuery;

#[Object]
impl WithdrawalQuery {
    /// The viewer's withdrawal address book, newest first (removed entries left out).
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn withdrawal_addresses(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<WithdrawalAddress>> {
        let viewer = ctx.viewer()?;
        let list = service::list_addresses(ctx.state(), viewer).await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// One of the viewer's withdrawals; null for an unknown id or another user's.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn withdrawal(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Withdrawal>> {
        let viewer = ctx.viewer()?;
        let Ok(id) = parse_id(&id, "withdrawal") else {
            return Ok(None);
        };
        Ok(service::find(ctx.state(), viewer, id)
            .await?
            .map(Withdrawal))
    }

    /// The viewer's withdrawals, newest first (keyset cursors). `first` is at most 200.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn withdrawals(
        &self,
        ctx: &Context<'_>,
        filter: Option<WithdrawalFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, Withdrawal>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let filter = service::WithdrawalFilter {
            status: filter.status.map(WithdrawalStatus::as_str),
            asset: filter.asset.map(|a| a.trim().to_uppercase()),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let mut rows =
            service::list(ctx.state(), viewer, &filter, page.after, page.limit + 1).await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(pagination::encode_cursor(row.id), Withdrawal(row))),
        );
        Ok(connection)
    }
}

#[derive(Default)]
pub struct WithdrawalMutation;

#[Object]
impl WithdrawalMutation {
    /// Adds an address to the viewer's book; usable after the cooling-off period
    /// (`activatesAt`), and the owner is e-mailed. `TWO_FACTOR_REQUIRED` without a valid
    /// `totpCode` when the account has 2FA; `BAD_USER_INPUT` naming `input.asset`,
    /// `input.address` or `input.label`.
    async fn add_withdrawal_address(
        &self,
        ctx: &Context<'_>,
        input: AddWithdrawalAddressInput,
    ) -> async_graphql::Result<WithdrawalAddress> {
        let viewer = ctx.viewer()?;
        let entry = service::add_address(
            ctx.state(),
            viewer,
            service::NewAddress {
                asset: input.asset,
                address: input.address,
                label: input.label,
                totp_code: input.totp_code,
            },
        )
        .await?;
        Ok(entry.into())
    }

    /// Removes an address from the book. `NOT_FOUND` for an unknown or another user's.
    async fn remove_withdrawal_address(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "withdrawal address")?;
        Ok(service::remove_address(ctx.state(), viewer, id).await?)
    }

    /// Requests a withdrawal and holds its funds. Refused with the reason: `FORBIDDEN`
    /// while the address cools off, within the lock period after a security change
    /// (password, 2FA, passkeys), or when the KYC tier may not withdraw;
    /// `BAD_USER_INPUT` (`input.amount`) above the tier's daily USD limit;
    /// `TWO_FACTOR_REQUIRED` without a valid `totpCode` when the account has 2FA;
    /// `INSUFFICIENT_FUNDS`; `NOT_FOUND` for an address that is not the viewer's.
    /// A repeated `idempotencyKey` returns the first withdrawal (`CONFLICT` if its
    /// details differ).
    #[graphql(directive = api_key::apply(Some(ApiScope::Withdraw)))]
    async fn request_withdrawal(
        &self,
        ctx: &Context<'_>,
        input: RequestWithdrawalInput,
    ) -> async_graphql::Result<Withdrawal> {
        let viewer = ctx.viewer()?;
        let address_id = parse_id(&input.address_id, "withdrawal address")?;
        let withdrawal = service::request(
            ctx.state(),
            viewer,
            service::WithdrawalRequest {
                asset: input.asset,
                amount: input.amount.0,
                address_id,
                totp_code: input.totp_code,
                idempotency_key: input.idempotency_key,
            },
        )
        .await?;
        Ok(Withdrawal(withdrawal))
    }

    /// Cancels one of the viewer's PENDING withdrawals and returns its funds.
    /// `NOT_FOUND` for an unknown or another user's; `CONFLICT` once it is processing
    /// or finished.
    #[graphql(directive = api_key::apply(Some(ApiScope::Withdraw)))]
    async fn cancel_withdrawal(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Withdrawal> {
        advance(ctx, id, Step::Cancel).await
    }

    /// Marks a PENDING withdrawal as being sent, so its owner can no longer cancel it.
    /// ADMIN only (`FORBIDDEN`); `CONFLICT` unless PENDING.
    async fn process_withdrawal(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Withdrawal> {
        advance(ctx, id, Step::Process).await
    }

    /// Records a withdrawal as sent with its chain transaction id; the held funds leave
    /// the exchange. ADMIN only (`FORBIDDEN`); `CONFLICT` unless PENDING or PROCESSING.
    async fn complete_withdrawal(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "The chain transaction id (1 to 128 characters).")] txid: String,
    ) -> async_graphql::Result<Withdrawal> {
        advance(ctx, id, Step::Complete { txid }).await
    }

    /// Gives up on a withdrawal and returns its funds to the owner. ADMIN only
    /// (`FORBIDDEN`); `CONFLICT` unless PENDING or PROCESSING.
    async fn fail_withdrawal(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "Why it failed, shown to the owner (1 to 256 characters).")]
        reason: String,
    ) -> async_graphql::Result<Withdrawal> {
        advance(ctx, id, Step::Fail { reason }).await
    }
}

async fn advance(ctx: &Context<'_>, id: ID, step: Step) -> async_graphql::Result<Withdrawal> {
    let viewer = ctx.viewer()?;
    let id = parse_id(&id, "withdrawal")?;
    Ok(Withdrawal(
        service::advance(ctx.state(), viewer, id, step).await?,
    ))
}
