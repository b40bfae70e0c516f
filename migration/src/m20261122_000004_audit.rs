//! The audit log: append-only, hash-chained events of every security and money action.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Refuses UPDATE and DELETE on `audit_events`, so the log cannot be rewritten through the
/// application's own connection by mistake. (A database owner can still drop the
/// trigger; the hash chain is what shows that happened.)
const PG_APPEND_ONLY: [&str; 2] = [
    "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
     BEGIN RAISE EXCEPTION 'audit_events is append-only'; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
     FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
];

const SQLITE_APPEND_ONLY: [&str; 2] = [
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(uuid(AuditEvents::Id).primary_key())
                    .col(string_len(AuditEvents::Chain, 80))
                    .col(big_integer(AuditEvents::ChainSeq))
                    .col(string_len(AuditEvents::Action, 64))
                    .col(uuid_null(AuditEvents::ActorId))
                    .col(uuid_null(AuditEvents::OwnerId))
                    .col(string_len(AuditEvents::SubjectType, 32))
                    .col(string_len(AuditEvents::SubjectId, 80))
                    .col(text(AuditEvents::Details))
                    .col(timestamp_with_time_zone(AuditEvents::CreatedAt))
                    .col(string_len(AuditEvents::PrevHash, 64))
                    .col(string_len(AuditEvents::Hash, 64))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "idx_audit_events_chain",
                vec![AuditEvents::Chain, AuditEvents::ChainSeq],
            ),
            (
                "idx_audit_events_owner",
                vec![AuditEvents::OwnerId, AuditEvents::Id],
            ),
            (
                "idx_audit_events_subject",
                vec![
                    AuditEvents::SubjectType,
                    AuditEvents::SubjectId,
                    AuditEvents::Id,
                ],
            ),
            (
                "idx_audit_events_actor",
                vec![AuditEvents::ActorId, AuditEvents::Id],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(AuditEvents::Table);
            for col in cols {
                index.col(col);
            }
            if name == "idx_audit_events_chain" {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(AuditChains::Table)
                    .col(string_len(AuditChains::Chain, 80).primary_key())
                    .col(big_integer(AuditChains::LastSeq))
                    .col(string_len(AuditChains::LastHash, 64))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let statements = match manager.get_database_backend() {
            DatabaseBackend::Postgres => PG_APPEND_ONLY,
            _ => SQLITE_APPEND_ONLY,
        };
        for sql in statements {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditChains::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS audit_events_append_only()")
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Chain,
    ChainSeq,
    Action,
    ActorId,
    OwnerId,
    SubjectType,
    SubjectId,
    Details,
    CreatedAt,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditChains {
    Table,
    Chain,
    LastSeq,
    LastHash,
}
