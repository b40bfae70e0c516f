//! Assets, markets and the double-entry ledger.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// An exact amount column: NUMERIC on PostgreSQL, TEXT on SQLite (whose numeric
/// affinity would turn decimals into binary floats).
fn amount(manager: &SchemaManager, col: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    match manager.get_database_backend() {
        DatabaseBackend::Sqlite => def.text(),
        _ => def.decimal(),
    };
    def.not_null().to_owned()
}

fn amount_null(manager: &SchemaManager, col: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    match manager.get_database_backend() {
        DatabaseBackend::Sqlite => def.text(),
        _ => def.decimal(),
    };
    def.null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Assets::Table)
                    .col(string_len(Assets::Symbol, 16).primary_key())
                    .col(string_len(Assets::Name, 64))
                    .col(small_integer(Assets::Precision))
                    .col(timestamp_with_time_zone(Assets::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Markets::Table)
                    .col(string_len(Markets::Symbol, 33).primary_key())
                    .col(string_len(Markets::BaseAsset, 16))
                    .col(string_len(Markets::QuoteAsset, 16))
                    .col(amount(manager, Markets::TickSize))
                    .col(amount(manager, Markets::LotSize))
                    .col(amount(manager, Markets::MinNotional))
                    .col(integer(Markets::MakerFeeBps))
                    .col(integer(Markets::TakerFeeBps))
                    .col(string_len(Markets::Status, 16))
                    .col(amount_null(manager, Markets::LastPrice))
                    .col(timestamp_with_time_zone(Markets::CreatedAt))
                    .col(timestamp_with_time_zone(Markets::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_markets_base")
                            .from(Markets::Table, Markets::BaseAsset)
                            .to(Assets::Table, Assets::Symbol),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_markets_quote")
                            .from(Markets::Table, Markets::QuoteAsset)
                            .to(Assets::Table, Assets::Symbol),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LedgerAccounts::Table)
                    .col(uuid(LedgerAccounts::Id).primary_key())
                    .col(uuid(LedgerAccounts::OwnerId))
                    .col(string_len(LedgerAccounts::Asset, 16))
                    .col(string_len(LedgerAccounts::Kind, 16))
                    .col(amount(manager, LedgerAccounts::Balance))
                    .col(timestamp_with_time_zone(LedgerAccounts::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_ledger_accounts_asset")
                            .from(LedgerAccounts::Table, LedgerAccounts::Asset)
                            .to(Assets::Table, Assets::Symbol),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_ledger_accounts_owner_asset_kind")
                    .table(LedgerAccounts::Table)
                    .col(LedgerAccounts::OwnerId)
                    .col(LedgerAccounts::Asset)
                    .col(LedgerAccounts::Kind)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JournalEntries::Table)
                    .col(uuid(JournalEntries::Id).primary_key())
                    .col(string_len(JournalEntries::Kind, 32))
                    .col(string_len_null(JournalEntries::Reference, 128))
                    .col(uuid_null(JournalEntries::UserId))
                    .col(string_len(JournalEntries::Asset, 16))
                    .col(amount(manager, JournalEntries::Amount))
                    .col(string_len(JournalEntries::Description, 256))
                    .col(timestamp_with_time_zone(JournalEntries::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Idempotency: one entry per (kind, reference); NULL references never collide.
        manager
            .create_index(
                Index::create()
                    .name("ux_journal_entries_kind_reference")
                    .table(JournalEntries::Table)
                    .col(JournalEntries::Kind)
                    .col(JournalEntries::Reference)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_journal_entries_user")
                    .table(JournalEntries::Table)
                    .col(JournalEntries::UserId)
                    .col(JournalEntries::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Postings::Table)
                    .col(uuid(Postings::Id).primary_key())
                    .col(uuid(Postings::EntryId))
                    .col(uuid(Postings::AccountId))
                    .col(string_len(Postings::Asset, 16))
                    .col(amount(manager, Postings::Amount))
                    .col(amount(manager, Postings::BalanceAfter))
                    .col(timestamp_with_time_zone(Postings::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_postings_entry")
                            .from(Postings::Table, Postings::EntryId)
                            .to(JournalEntries::Table, JournalEntries::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_postings_account")
                            .from(Postings::Table, Postings::AccountId)
                            .to(LedgerAccounts::Table, LedgerAccounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_postings_entry", Postings::EntryId),
            ("idx_postings_account", Postings::AccountId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Postings::Table)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Postings::Table.into_iden(),
            JournalEntries::Table.into_iden(),
            LedgerAccounts::Table.into_iden(),
            Markets::Table.into_iden(),
            Assets::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Assets {
    Table,
    Symbol,
    Name,
    Precision,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Markets {
    Table,
    Symbol,
    BaseAsset,
    QuoteAsset,
    TickSize,
    LotSize,
    MinNotional,
    MakerFeeBps,
    TakerFeeBps,
    Status,
    LastPrice,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum LedgerAccounts {
    Table,
    Id,
    OwnerId,
    Asset,
    Kind,
    Balance,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum JournalEntries {
    Table,
    Id,
    Kind,
    Reference,
    UserId,
    Asset,
    Amount,
    Description,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Postings {
    Table,
    Id,
    EntryId,
    AccountId,
    Asset,
    Amount,
    BalanceAfter,
    CreatedAt,
}
