//! Advisor content under compliance review: the pieces, every immutable version of
//! their text, and every automated check of a version.
//!
//! Authors and reviewers are kept as plain ids, without foreign keys to `users`: the
//! record of what was approved and published must outlive the accounts involved.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Contents::Table)
                    .col(uuid(Contents::Id).primary_key())
                    .col(uuid(Contents::AuthorId))
                    .col(string_len(Contents::Status, 20))
                    // A copy of the current version's text, for listing and search.
                    .col(string_len(Contents::Title, 200))
                    .col(text(Contents::Body))
                    .col(string_len(Contents::Topic, 40))
                    .col(string_len(Contents::Language, 16))
                    .col(integer(Contents::Version))
                    .col(uuid_null(Contents::ReviewerId))
                    .col(integer_null(Contents::ApprovedVersion))
                    .col(string_len_null(Contents::ApprovedHash, 64))
                    // The latest reviewer's note or reason, shown to the author.
                    .col(text_null(Contents::ReviewNote))
                    // From the latest check of the current version; null until checked.
                    .col(integer_null(Contents::RiskScore))
                    .col(boolean(Contents::SeniorReviewRequired).default(false))
                    .col(timestamp_with_time_zone_null(Contents::SubmittedAt))
                    .col(timestamp_with_time_zone_null(Contents::PublishedAt))
                    .col(timestamp_with_time_zone(Contents::CreatedAt))
                    .col(timestamp_with_time_zone(Contents::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // The review queue: pieces in one status, oldest submission first.
        manager
            .create_index(
                Index::create()
                    .name("idx_contents_status_submitted")
                    .table(Contents::Table)
                    .col(Contents::Status)
                    .col(Contents::SubmittedAt)
                    .col(Contents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_contents_author")
                    .table(Contents::Table)
                    .col(Contents::AuthorId)
                    .col(Contents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ContentVersions::Table)
                    .col(uuid(ContentVersions::ContentId))
                    .col(integer(ContentVersions::Version))
                    .col(string_len(ContentVersions::Title, 200))
                    .col(text(ContentVersions::Body))
                    .col(string_len(ContentVersions::Topic, 40))
                    .col(string_len(ContentVersions::Language, 16))
                    .col(string_len(ContentVersions::ContentHash, 64))
                    .col(uuid(ContentVersions::EditorId))
                    .col(timestamp_with_time_zone(ContentVersions::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ContentVersions::ContentId)
                            .col(ContentVersions::Version),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_content_versions_content")
                            .from(ContentVersions::Table, ContentVersions::ContentId)
                            .to(Contents::Table, Contents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ContentChecks::Table)
                    .col(uuid(ContentChecks::Id).primary_key())
                    .col(uuid(ContentChecks::ContentId))
                    .col(integer(ContentChecks::Version))
                    .col(string_len(ContentChecks::RulesFingerprint, 64))
                    .col(integer(ContentChecks::RiskScore))
                    .col(boolean(ContentChecks::Blocked))
                    .col(boolean(ContentChecks::SeniorReviewRequired))
                    .col(text(ContentChecks::Findings))
                    .col(timestamp_with_time_zone(ContentChecks::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_content_checks_version")
                            .from_col(ContentChecks::ContentId)
                            .from_col(ContentChecks::Version)
                            .to_tbl(ContentVersions::Table)
                            .to_col(ContentVersions::ContentId)
                            .to_col(ContentVersions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_content_checks_version")
                    .table(ContentChecks::Table)
                    .col(ContentChecks::ContentId)
                    .col(ContentChecks::Version)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ContentChecks::Table.into_iden(),
            ContentVersions::Table.into_iden(),
            Contents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Contents {
    Table,
    Id,
    AuthorId,
    Status,
    Title,
    Body,
    Topic,
    Language,
    Version,
    ReviewerId,
    ApprovedVersion,
    ApprovedHash,
    ReviewNote,
    RiskScore,
    SeniorReviewRequired,
    SubmittedAt,
    PublishedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ContentVersions {
    Table,
    ContentId,
    Version,
    Title,
    Body,
    Topic,
    Language,
    ContentHash,
    EditorId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ContentChecks {
    Table,
    Id,
    ContentId,
    Version,
    RulesFingerprint,
    RiskScore,
    Blocked,
    SeniorReviewRequired,
    Findings,
    CreatedAt,
}
