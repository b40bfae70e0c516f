use sea_orm::entity::prelude::*;

/// An entry of a user's withdrawal address book.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "withdrawal_addresses")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub address: String,
    pub label: String,
    /// Usable for withdrawals from then on (the cooling-off period).
    pub activates_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    /// Removed entries are kept, so past withdrawals still name their address.
    pub removed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
