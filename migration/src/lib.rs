//! Database migrations for tradegraph, shared by SQLite and PostgreSQL.
//!
//! A migration is never edited once released: change the schema with a new one.

pub use sea_orm_migration::prelude::*;

mod columns;

mod m20261122_000001_accounts;
mod m20261122_000002_ledger;
mod m20261122_000003_orders;
mod m20261122_000004_audit;
mod m20261122_000010_portfolio;
mod m20261122_000020_alerts;
mod m20261122_000030_api_keys;
mod m20261122_000031_account_privacy_and_tiers;
mod m20261122_000035_security;
mod m20261122_000040_content;
mod m20261122_000050_kyc;
mod m20261122_000060_open_book;
mod m20261122_000070_pnl_follow;
mod m20261123_000080_book_sides;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_accounts::Migration),
            Box::new(m20261122_000002_ledger::Migration),
            Box::new(m20261122_000003_orders::Migration),
            Box::new(m20261122_000004_audit::Migration),
            Box::new(m20261122_000010_portfolio::Migration),
            Box::new(m20261122_000020_alerts::Migration),
            Box::new(m20261122_000030_api_keys::Migration),
            Box::new(m20261122_000031_account_privacy_and_tiers::Migration),
            Box::new(m20261122_000035_security::Migration),
            Box::new(m20261122_000040_content::Migration),
            Box::new(m20261122_000050_kyc::Migration),
            Box::new(m20261122_000060_open_book::Migration),
            Box::new(m20261122_000070_pnl_follow::Migration),
            Box::new(m20261123_000080_book_sides::Migration),
        ]
    }
}
