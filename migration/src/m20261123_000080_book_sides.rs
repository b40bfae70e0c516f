use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One index of open orders per side of the book, each in that side's priority order:
/// asks by rising price, bids by falling price, both oldest first within a price. A
/// single index in rising price served bids only by reading every bid within reach and
/// sorting them, however few the read wanted. Each open order is in exactly one of
/// them, so writes maintain no more entries than before. Queries that read the book
/// say `is_open AND side = 'BUY'` (or `'SELL'`) in those words, so that SQLite and
/// PostgreSQL can use the partial index with a prepared statement.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_orders_open_asks ON orders (market, price_ticks, sequence) \
             WHERE is_open AND side = 'SELL'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_orders_open_bids ON orders (market, price_ticks DESC, sequence) \
             WHERE is_open AND side = 'BUY'",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_orders_open_book")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_orders_open_book ON orders (market, side, price_ticks, sequence) \
             WHERE is_open",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_orders_open_asks")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_orders_open_bids")
            .await?;
        Ok(())
    }
}
