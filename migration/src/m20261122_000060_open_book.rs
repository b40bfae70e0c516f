use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The book index holds open orders only. Most orders close soon after they arrive
/// (filled, cancelled, expired), and an index over all of them makes every book read
/// step past closed entries and every write of a closed order maintain an entry no
/// book read wants. Queries that read the book say `is_open` in those words, which is
/// what lets SQLite and PostgreSQL use a partial index with a prepared statement.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS idx_orders_book")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_orders_open_book ON orders (market, side, price_ticks, sequence) \
             WHERE is_open",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS idx_orders_open_book")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_orders_book ON orders (market, side, is_open, price_ticks, sequence)",
        )
        .await?;
        Ok(())
    }
}
