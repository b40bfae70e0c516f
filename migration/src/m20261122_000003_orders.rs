//! Orders, fills, trades, and the per-user order event log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn amount_def(manager: &SchemaManager, col: impl IntoIden, null: bool) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    match manager.get_database_backend() {
        DatabaseBackend::Sqlite => def.text(),
        _ => def.decimal(),
    };
    if null {
        def.null();
    } else {
        def.not_null();
    }
    def.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let amount = |col: Orders| amount_def(manager, col, false);
        let amount_null = |col: Orders| amount_def(manager, col, true);
        manager
            .alter_table(
                Table::alter()
                    .table(Markets::Table)
                    .add_column(big_integer(Markets::NextSequence).default(1))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .col(uuid(Orders::Id).primary_key())
                    .col(uuid(Orders::UserId))
                    .col(string_len(Orders::Market, 33))
                    .col(string_len(Orders::Side, 4))
                    .col(string_len(Orders::OrderType, 16))
                    .col(string_len(Orders::Status, 20))
                    .col(boolean(Orders::IsOpen))
                    .col(amount_null(Orders::Price))
                    // Price in ticks: an integer that sorts the book exactly on every
                    // database (decimal text would sort as text on SQLite).
                    .col(big_integer_null(Orders::PriceTicks))
                    .col(amount_null(Orders::TriggerPrice))
                    .col(big_integer_null(Orders::TriggerTicks))
                    .col(amount_null(Orders::Quantity))
                    .col(amount_null(Orders::QuoteQuantity))
                    .col(amount(Orders::FilledQuantity))
                    .col(amount(Orders::FilledQuote))
                    .col(amount(Orders::Fee))
                    .col(string_len(Orders::HeldAsset, 16))
                    .col(amount(Orders::Held))
                    .col(string_len(Orders::TimeInForce, 4))
                    .col(timestamp_with_time_zone_null(Orders::ExpireAt))
                    .col(boolean(Orders::PostOnly))
                    .col(string_len(Orders::SelfTradePrevention, 16))
                    .col(string_len_null(Orders::ClientOrderId, 64))
                    .col(string_len_null(Orders::RejectReason, 256))
                    .col(big_integer(Orders::Sequence))
                    .col(timestamp_with_time_zone(Orders::CreatedAt))
                    .col(timestamp_with_time_zone(Orders::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // The book: open orders of a market side in price-time priority.
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_book")
                    .table(Orders::Table)
                    .col(Orders::Market)
                    .col(Orders::Side)
                    .col(Orders::IsOpen)
                    .col(Orders::PriceTicks)
                    .col(Orders::Sequence)
                    .to_owned(),
            )
            .await?;
        // Stop orders waiting for their trigger, found by trigger price.
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_stops")
                    .table(Orders::Table)
                    .col(Orders::Market)
                    .col(Orders::Status)
                    .col(Orders::Side)
                    .col(Orders::TriggerTicks)
                    .to_owned(),
            )
            .await?;
        // Good-till-date orders, found by expiry.
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_expiry")
                    .table(Orders::Table)
                    .col(Orders::IsOpen)
                    .col(Orders::ExpireAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_user")
                    .table(Orders::Table)
                    .col(Orders::UserId)
                    .col(Orders::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_orders_client_order_id")
                    .table(Orders::Table)
                    .col(Orders::UserId)
                    .col(Orders::ClientOrderId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        let fill_amount = |col: Fills| amount_def(manager, col, false);
        manager
            .create_table(
                Table::create()
                    .table(Fills::Table)
                    .col(uuid(Fills::Id).primary_key())
                    .col(uuid(Fills::OrderId))
                    .col(uuid(Fills::UserId))
                    .col(uuid(Fills::TradeId))
                    .col(string_len(Fills::Market, 33))
                    .col(string_len(Fills::Side, 4))
                    .col(fill_amount(Fills::Price))
                    .col(fill_amount(Fills::Quantity))
                    .col(fill_amount(Fills::Fee))
                    .col(string_len(Fills::FeeAsset, 16))
                    .col(string_len(Fills::Liquidity, 5))
                    .col(timestamp_with_time_zone(Fills::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("idx_fills_order", vec![Fills::OrderId]),
            ("idx_fills_user", vec![Fills::UserId, Fills::Id]),
            ("idx_fills_market", vec![Fills::Market, Fills::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Fills::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(OrderEvents::Table)
                    .col(uuid(OrderEvents::UserId))
                    .col(big_integer(OrderEvents::Sequence))
                    .col(string_len(OrderEvents::Kind, 20))
                    .col(uuid(OrderEvents::OrderId))
                    .col(uuid_null(OrderEvents::FillId))
                    .col(timestamp_with_time_zone(OrderEvents::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(OrderEvents::UserId)
                            .col(OrderEvents::Sequence),
                    )
                    .to_owned(),
            )
            .await?;
        // Traded volume per user, market and day, kept as fills land, so a 30-day
        // volume (for fee tiers) reads at most 30 rows, however long the history.
        manager
            .create_table(
                Table::create()
                    .table(UserDailyVolumes::Table)
                    .col(uuid(UserDailyVolumes::UserId))
                    .col(string_len(UserDailyVolumes::Market, 33))
                    .col(string_len(UserDailyVolumes::Day, 10))
                    .col(amount_def(manager, UserDailyVolumes::Volume, false))
                    .primary_key(
                        Index::create()
                            .col(UserDailyVolumes::UserId)
                            .col(UserDailyVolumes::Market)
                            .col(UserDailyVolumes::Day),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UserSequences::Table)
                    .col(uuid(UserSequences::UserId).primary_key())
                    .col(big_integer(UserSequences::LastSequence))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            UserDailyVolumes::Table.into_iden(),
            UserSequences::Table.into_iden(),
            OrderEvents::Table.into_iden(),
            Fills::Table.into_iden(),
            Orders::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Markets::Table)
                    .drop_column(Markets::NextSequence)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Markets {
    Table,
    NextSequence,
}

#[derive(DeriveIden, Clone, Copy)]
enum Orders {
    Table,
    Id,
    UserId,
    Market,
    Side,
    OrderType,
    Status,
    IsOpen,
    Price,
    PriceTicks,
    TriggerPrice,
    TriggerTicks,
    Quantity,
    QuoteQuantity,
    FilledQuantity,
    FilledQuote,
    Fee,
    HeldAsset,
    Held,
    TimeInForce,
    ExpireAt,
    PostOnly,
    SelfTradePrevention,
    ClientOrderId,
    RejectReason,
    Sequence,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Fills {
    Table,
    Id,
    OrderId,
    UserId,
    TradeId,
    Market,
    Side,
    Price,
    Quantity,
    Fee,
    FeeAsset,
    Liquidity,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OrderEvents {
    Table,
    UserId,
    Sequence,
    Kind,
    OrderId,
    FillId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UserSequences {
    Table,
    UserId,
    LastSequence,
}

#[derive(DeriveIden)]
enum UserDailyVolumes {
    Table,
    UserId,
    Market,
    Day,
    Volume,
}
