//! Database migrations for tradegraph, shared by SQLite and PostgreSQL.
//!
//! A migration is never edited once released: change the schema with a new one.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_accounts;
mod m20261122_000002_ledger;
mod m20261122_000003_orders;
mod m20261122_000010_portfolio;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_accounts::Migration),
            Box::new(m20261122_000002_ledger::Migration),
            Box::new(m20261122_000003_orders::Migration),
            Box::new(m20261122_000010_portfolio::Migration),
        ]
    }
}
