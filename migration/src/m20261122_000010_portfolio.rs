//! Portfolio state kept as fills and deposits land: open lots per cost-basis method,
//! running positions and realized totals, realized lots for tax reports, hourly
//! holdings and price candles for performance, and external flows (deposits and
//! withdrawals) for returns.

use crate::columns::amount as amount_def;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    cols: Vec<DynIden>,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for col in cols {
        index.col(col);
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let amount = |col: Portfolio| amount_def(manager, col, false);
        let amount_null = |col: Portfolio| amount_def(manager, col, true);
        manager
            .create_table(
                Table::create()
                    .table(Portfolio::Lots)
                    .col(uuid(Portfolio::Id).primary_key())
                    .col(uuid(Portfolio::UserId))
                    .col(string_len(Portfolio::Asset, 16))
                    .col(string_len(Portfolio::Method, 12))
                    .col(amount(Portfolio::Quantity))
                    .col(amount_null(Portfolio::Cost))
                    // Unit cost in 1e-8 steps, for HIFO order in SQL (amounts sort as
                    // text on SQLite); unknown cost is i64::MIN, consumed last.
                    .col(big_integer(Portfolio::CostRank))
                    .col(timestamp_with_time_zone(Portfolio::AcquiredAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_portfolio_lots_order",
            Portfolio::Lots,
            vec![
                Portfolio::UserId.into_iden(),
                Portfolio::Asset.into_iden(),
                Portfolio::Method.into_iden(),
                Portfolio::Id.into_iden(),
            ],
        )
        .await?;
        index(
            manager,
            "idx_portfolio_lots_rank",
            Portfolio::Lots,
            vec![
                Portfolio::UserId.into_iden(),
                Portfolio::Asset.into_iden(),
                Portfolio::Method.into_iden(),
                Portfolio::CostRank.into_iden(),
            ],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(Portfolio::Positions)
                    .col(uuid(Portfolio::UserId))
                    .col(string_len(Portfolio::Asset, 16))
                    .col(string_len(Portfolio::Method, 12))
                    .col(amount(Portfolio::Quantity))
                    .col(amount(Portfolio::Cost))
                    .col(amount(Portfolio::UnknownQuantity))
                    .col(amount(Portfolio::RealizedPnl))
                    .col(amount(Portfolio::UnknownRealized))
                    .col(timestamp_with_time_zone_null(Portfolio::Since))
                    .col(timestamp_with_time_zone(Portfolio::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Portfolio::UserId)
                            .col(Portfolio::Method)
                            .col(Portfolio::Asset),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Portfolio::Realized)
                    .col(uuid(Portfolio::Id).primary_key())
                    .col(uuid(Portfolio::UserId))
                    .col(string_len(Portfolio::Asset, 16))
                    .col(string_len(Portfolio::Method, 12))
                    .col(amount(Portfolio::Quantity))
                    .col(timestamp_with_time_zone(Portfolio::AcquiredAt))
                    .col(timestamp_with_time_zone(Portfolio::DisposedAt))
                    .col(amount_null(Portfolio::Proceeds))
                    .col(amount_null(Portfolio::Cost))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_portfolio_realized_user",
            Portfolio::Realized,
            vec![
                Portfolio::UserId.into_iden(),
                Portfolio::Method.into_iden(),
                Portfolio::DisposedAt.into_iden(),
            ],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(Portfolio::Candles)
                    .col(string_len(Portfolio::Market, 33))
                    .col(timestamp_with_time_zone(Portfolio::Bucket))
                    .col(amount(Portfolio::Open))
                    .col(amount(Portfolio::High))
                    .col(amount(Portfolio::Low))
                    .col(amount(Portfolio::Close))
                    .col(amount(Portfolio::Volume))
                    .primary_key(
                        Index::create()
                            .col(Portfolio::Market)
                            .col(Portfolio::Bucket),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Portfolio::HoldingsHistory)
                    .col(uuid(Portfolio::UserId))
                    .col(string_len(Portfolio::Asset, 16))
                    .col(timestamp_with_time_zone(Portfolio::Bucket))
                    .col(amount(Portfolio::Quantity))
                    .primary_key(
                        Index::create()
                            .col(Portfolio::UserId)
                            .col(Portfolio::Asset)
                            .col(Portfolio::Bucket),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Portfolio::Flows)
                    .col(uuid(Portfolio::Id).primary_key())
                    .col(uuid(Portfolio::UserId))
                    .col(string_len(Portfolio::Asset, 16))
                    .col(amount(Portfolio::Quantity))
                    .col(timestamp_with_time_zone(Portfolio::At))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_portfolio_flows_user",
            Portfolio::Flows,
            vec![Portfolio::UserId.into_iden(), Portfolio::At.into_iden()],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Portfolio::Flows,
            Portfolio::HoldingsHistory,
            Portfolio::Candles,
            Portfolio::Realized,
            Portfolio::Positions,
            Portfolio::Lots,
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Portfolio {
    #[sea_orm(iden = "portfolio_lots")]
    Lots,
    #[sea_orm(iden = "portfolio_positions")]
    Positions,
    #[sea_orm(iden = "portfolio_realized")]
    Realized,
    #[sea_orm(iden = "price_candles")]
    Candles,
    #[sea_orm(iden = "portfolio_holdings_history")]
    HoldingsHistory,
    #[sea_orm(iden = "portfolio_flows")]
    Flows,
    Id,
    UserId,
    Asset,
    Method,
    Quantity,
    Cost,
    CostRank,
    AcquiredAt,
    DisposedAt,
    Proceeds,
    UnknownQuantity,
    RealizedPnl,
    UnknownRealized,
    Since,
    UpdatedAt,
    Market,
    Bucket,
    Open,
    High,
    Low,
    Close,
    Volume,
    At,
}
