use sea_orm::entity::prelude::*;

use crate::Amount;

/// A request to send funds off the exchange.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "withdrawals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Amount,
    /// The amount's value in USD when requested, counted against the daily limit.
    pub usd_value: Amount,
    pub address_id: Uuid,
    /// The destination, copied so the record survives edits of the address book.
    pub address: String,
    /// `PENDING`, `PROCESSING`, `COMPLETED`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// The client's key: repeating a request with it returns the first withdrawal.
    pub idempotency_key: String,
    pub txid: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
