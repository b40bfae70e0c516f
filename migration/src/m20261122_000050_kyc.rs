//! KYC applications, their documents and decision history, provider webhook events,
//! and transaction monitoring (monitored transfers and compliance alerts).

use crate::columns::amount;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    cols: Vec<Alias>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for col in cols {
        index.col(col);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KycApplications::Table)
                    .col(uuid(KycApplications::Id).primary_key())
                    .col(uuid(KycApplications::UserId))
                    .col(string_len(KycApplications::Status, 16))
                    .col(string_len(KycApplications::RequestedTier, 16))
                    .col(string_len(KycApplications::Country, 2))
                    .col(text(KycApplications::PersonalData))
                    .col(text(KycApplications::ScreeningHits))
                    .col(timestamp_with_time_zone_null(
                        KycApplications::LastDecisionAt,
                    ))
                    .col(timestamp_with_time_zone(KycApplications::CreatedAt))
                    .col(timestamp_with_time_zone(KycApplications::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(KycApplications::Table, KycApplications::UserId)
                            .to(Alias::new("users"), Alias::new("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_kyc_applications_user",
            KycApplications::Table,
            vec![Alias::new("user_id"), Alias::new("created_at")],
            false,
        )
        .await?;
        index(
            manager,
            "idx_kyc_applications_status",
            KycApplications::Table,
            vec![Alias::new("status"), Alias::new("id")],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(KycDecisions::Table)
                    .col(uuid(KycDecisions::Id).primary_key())
                    .col(uuid(KycDecisions::ApplicationId))
                    .col(string_len(KycDecisions::Status, 16))
                    .col(string_len(KycDecisions::Source, 16))
                    .col(uuid_null(KycDecisions::ActorId))
                    .col(text_null(KycDecisions::Note))
                    .col(timestamp_with_time_zone(KycDecisions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(KycDecisions::Table, KycDecisions::ApplicationId)
                            .to(KycApplications::Table, KycApplications::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_kyc_decisions_application",
            KycDecisions::Table,
            vec![Alias::new("application_id"), Alias::new("created_at")],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(KycDocuments::Table)
                    .col(uuid(KycDocuments::Id).primary_key())
                    .col(uuid(KycDocuments::ApplicationId))
                    .col(string_len(KycDocuments::Sha256, 64))
                    .col(string_len(KycDocuments::ContentType, 32))
                    .col(big_integer(KycDocuments::SizeBytes))
                    .col(timestamp_with_time_zone(KycDocuments::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(KycDocuments::Table, KycDocuments::ApplicationId)
                            .to(KycApplications::Table, KycApplications::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_kyc_documents_application",
            KycDocuments::Table,
            vec![Alias::new("application_id")],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(KycWebhookEvents::Table)
                    .col(string_len(KycWebhookEvents::EventId, 128).primary_key())
                    .col(uuid(KycWebhookEvents::ApplicationId))
                    .col(string_len(KycWebhookEvents::Result, 16))
                    .col(string_len(KycWebhookEvents::Outcome, 16))
                    .col(timestamp_with_time_zone(KycWebhookEvents::OccurredAt))
                    .col(timestamp_with_time_zone(KycWebhookEvents::ReceivedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MonitoredTransfers::Table)
                    .col(uuid(MonitoredTransfers::Id).primary_key())
                    .col(uuid(MonitoredTransfers::UserId))
                    .col(string_len(MonitoredTransfers::Direction, 16))
                    .col(string_len(MonitoredTransfers::Asset, 16))
                    .col(amount(manager, MonitoredTransfers::Amount, false))
                    .col(amount(manager, MonitoredTransfers::UsdValue, true))
                    .col(string_len(MonitoredTransfers::SubjectId, 80))
                    .col(timestamp_with_time_zone(MonitoredTransfers::CreatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_monitored_transfers_user",
            MonitoredTransfers::Table,
            vec![Alias::new("user_id"), Alias::new("created_at")],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(ComplianceAlerts::Table)
                    .col(uuid(ComplianceAlerts::Id).primary_key())
                    .col(uuid(ComplianceAlerts::UserId))
                    .col(string_len(ComplianceAlerts::Rule, 32))
                    .col(integer(ComplianceAlerts::Score))
                    .col(text(ComplianceAlerts::Evidence))
                    .col(string_len(ComplianceAlerts::Status, 16))
                    .col(string_len(ComplianceAlerts::SubjectType, 32))
                    .col(string_len(ComplianceAlerts::SubjectId, 80))
                    .col(uuid_null(ComplianceAlerts::ResolvedBy))
                    .col(text_null(ComplianceAlerts::ResolutionNote))
                    .col(timestamp_with_time_zone(ComplianceAlerts::CreatedAt))
                    .col(timestamp_with_time_zone_null(ComplianceAlerts::ResolvedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_compliance_alerts_status",
            ComplianceAlerts::Table,
            vec![Alias::new("status"), Alias::new("id")],
            false,
        )
        .await?;
        index(
            manager,
            "idx_compliance_alerts_user",
            ComplianceAlerts::Table,
            vec![Alias::new("user_id"), Alias::new("created_at")],
            false,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ComplianceAlerts::Table.into_iden(),
            MonitoredTransfers::Table.into_iden(),
            KycWebhookEvents::Table.into_iden(),
            KycDocuments::Table.into_iden(),
            KycDecisions::Table.into_iden(),
            KycApplications::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum KycApplications {
    Table,
    Id,
    UserId,
    Status,
    RequestedTier,
    Country,
    PersonalData,
    ScreeningHits,
    LastDecisionAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum KycDecisions {
    Table,
    Id,
    ApplicationId,
    Status,
    Source,
    ActorId,
    Note,
    CreatedAt,
}

#[derive(DeriveIden)]
enum KycDocuments {
    Table,
    Id,
    ApplicationId,
    Sha256,
    ContentType,
    SizeBytes,
    CreatedAt,
}

#[derive(DeriveIden)]
enum KycWebhookEvents {
    Table,
    EventId,
    ApplicationId,
    Result,
    Outcome,
    OccurredAt,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum MonitoredTransfers {
    Table,
    Id,
    UserId,
    Direction,
    Asset,
    Amount,
    UsdValue,
    SubjectId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ComplianceAlerts {
    Table,
    Id,
    UserId,
    Rule,
    Score,
    Evidence,
    Status,
    SubjectType,
    SubjectId,
    ResolvedBy,
    ResolutionNote,
    CreatedAt,
    ResolvedAt,
}
