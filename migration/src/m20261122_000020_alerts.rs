//! Price alerts and the notifications they (and later other features) leave for users.

use crate::columns::amount as amount_def;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PriceAlerts::Table)
                    .col(uuid(PriceAlerts::Id).primary_key())
                    .col(uuid(PriceAlerts::UserId))
                    .col(string_len(PriceAlerts::Market, 33))
                    .col(string_len(PriceAlerts::Condition, 5))
                    .col(amount_def(manager, PriceAlerts::Price, false))
                    // The threshold in whole ticks, rounded towards firing later: an
                    // integer that orders exactly on every database.
                    .col(big_integer(PriceAlerts::ThresholdTicks))
                    .col(boolean(PriceAlerts::Recurring))
                    .col(integer(PriceAlerts::CooldownSeconds))
                    .col(boolean(PriceAlerts::Armed))
                    .col(timestamp_with_time_zone_null(PriceAlerts::CooldownUntil))
                    .col(timestamp_with_time_zone_null(PriceAlerts::LastTriggeredAt))
                    .col(integer(PriceAlerts::TriggerCount).default(0))
                    .col(timestamp_with_time_zone(PriceAlerts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // The alert book: armed thresholds of one market and direction, in price order,
        // so a price move reads only the alerts it crossed.
        manager
            .create_index(
                Index::create()
                    .name("idx_price_alerts_book")
                    .table(PriceAlerts::Table)
                    .col(PriceAlerts::Market)
                    .col(PriceAlerts::Condition)
                    .col(PriceAlerts::Armed)
                    .col(PriceAlerts::ThresholdTicks)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_price_alerts_user")
                    .table(PriceAlerts::Table)
                    .col(PriceAlerts::UserId)
                    .col(PriceAlerts::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(uuid(Notifications::Id).primary_key())
                    .col(uuid(Notifications::UserId))
                    .col(string_len(Notifications::Kind, 32))
                    .col(string_len(Notifications::Title, 200))
                    .col(text(Notifications::Body))
                    .col(uuid_null(Notifications::AlertId))
                    .col(string_len_null(Notifications::Market, 33))
                    .col(amount_def(manager, Notifications::Price, true))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .col(timestamp_with_time_zone_null(Notifications::ReadAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_user")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Notifications::Table.into_iden(),
            PriceAlerts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum PriceAlerts {
    Table,
    Id,
    UserId,
    Market,
    Condition,
    Price,
    ThresholdTicks,
    Recurring,
    CooldownSeconds,
    Armed,
    CooldownUntil,
    LastTriggeredAt,
    TriggerCount,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    Kind,
    Title,
    Body,
    AlertId,
    Market,
    Price,
    CreatedAt,
    ReadAt,
}
