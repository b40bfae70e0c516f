use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// P&L state follows trades after they commit instead of inside the placing
/// transaction. Each user's P&L has a cursor into the user's order-event log (whose
/// sequence is gap-free and in commit order per user): events after it are not folded
/// in yet. Every user's P&L is up to date when this runs, so each cursor starts at the
/// user's last event. A fill keeps the rate that valued it (its quote asset in the
/// cost currency when it traded), so folding it later values it as it was.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut rate = ColumnDef::new(Fills::CostRate);
        match manager.get_database_backend() {
            DatabaseBackend::Sqlite => rate.text(),
            _ => rate.decimal(),
        };
        rate.null();
        manager
            .alter_table(
                Table::alter()
                    .table(Fills::Table)
                    .add_column(rate)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PortfolioCursors::Table)
                    .col(
                        ColumnDef::new(PortfolioCursors::UserId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PortfolioCursors::LastSequence)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO portfolio_cursors (user_id, last_sequence) \
                 SELECT user_id, last_sequence FROM user_sequences",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PortfolioCursors::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Fills::Table)
                    .drop_column(Fills::CostRate)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Fills {
    Table,
    CostRate,
}

#[derive(DeriveIden)]
enum PortfolioCursors {
    Table,
    UserId,
    LastSequence,
}
