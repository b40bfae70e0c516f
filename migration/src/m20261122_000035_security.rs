//! Second factors (TOTP, recovery codes, passkeys and their challenges), the withdrawal
//! address book and withdrawals, the e-mail outbox, password-reset tokens, and per-user
//! security state (the withdrawal lock after a security change).

use crate::columns::amount;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn user_fk(
    table: impl IntoIden + Copy,
    name: &str,
    col: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, col)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TotpCredentials::Table)
                    .col(uuid(TotpCredentials::UserId).primary_key())
                    .col(string_len(TotpCredentials::SecretSealed, 255))
                    .col(timestamp_with_time_zone_null(TotpCredentials::ConfirmedAt))
                    .col(big_integer_null(TotpCredentials::LastUsedStep))
                    .col(timestamp_with_time_zone(TotpCredentials::CreatedAt))
                    .foreign_key(&mut user_fk(
                        TotpCredentials::Table,
                        "fk_totp_credentials_user",
                        TotpCredentials::UserId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RecoveryCodes::Table)
                    .col(uuid(RecoveryCodes::Id).primary_key())
                    .col(uuid(RecoveryCodes::UserId))
                    .col(string_len(RecoveryCodes::CodeHash, 64))
                    .col(timestamp_with_time_zone_null(RecoveryCodes::UsedAt))
                    .col(timestamp_with_time_zone(RecoveryCodes::CreatedAt))
                    .foreign_key(&mut user_fk(
                        RecoveryCodes::Table,
                        "fk_recovery_codes_user",
                        RecoveryCodes::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_recovery_codes_user")
                    .table(RecoveryCodes::Table)
                    .col(RecoveryCodes::UserId)
                    .col(RecoveryCodes::CodeHash)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Passkeys::Table)
                    .col(uuid(Passkeys::Id).primary_key())
                    .col(uuid(Passkeys::UserId))
                    .col(string_len(Passkeys::Name, 64))
                    .col(string_len_uniq(Passkeys::CredentialId, 1024))
                    .col(text(Passkeys::Credential))
                    .col(timestamp_with_time_zone(Passkeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(Passkeys::LastUsedAt))
                    .foreign_key(&mut user_fk(
                        Passkeys::Table,
                        "fk_passkeys_user",
                        Passkeys::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_passkeys_user")
                    .table(Passkeys::Table)
                    .col(Passkeys::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebauthnChallenges::Table)
                    .col(uuid(WebauthnChallenges::Id).primary_key())
                    .col(uuid(WebauthnChallenges::UserId))
                    .col(string_len(WebauthnChallenges::Purpose, 16))
                    .col(text(WebauthnChallenges::State))
                    .col(timestamp_with_time_zone(WebauthnChallenges::ExpiresAt))
                    .col(timestamp_with_time_zone(WebauthnChallenges::CreatedAt))
                    .foreign_key(&mut user_fk(
                        WebauthnChallenges::Table,
                        "fk_webauthn_challenges_user",
                        WebauthnChallenges::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webauthn_challenges_user")
                    .table(WebauthnChallenges::Table)
                    .col(WebauthnChallenges::UserId)
                    .col(WebauthnChallenges::Purpose)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserSecurity::Table)
                    .col(uuid(UserSecurity::UserId).primary_key())
                    .col(timestamp_with_time_zone_null(
                        UserSecurity::WithdrawalsLockedUntil,
                    ))
                    .col(timestamp_with_time_zone(UserSecurity::UpdatedAt))
                    .foreign_key(&mut user_fk(
                        UserSecurity::Table,
                        "fk_user_security_user",
                        UserSecurity::UserId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WithdrawalAddresses::Table)
                    .col(uuid(WithdrawalAddresses::Id).primary_key())
                    .col(uuid(WithdrawalAddresses::UserId))
                    .col(string_len(WithdrawalAddresses::Asset, 16))
                    .col(string_len(WithdrawalAddresses::Address, 128))
                    .col(string_len(WithdrawalAddresses::Label, 64))
                    .col(timestamp_with_time_zone(WithdrawalAddresses::ActivatesAt))
                    .col(timestamp_with_time_zone(WithdrawalAddresses::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        WithdrawalAddresses::RemovedAt,
                    ))
                    .foreign_key(&mut user_fk(
                        WithdrawalAddresses::Table,
                        "fk_withdrawal_addresses_user",
                        WithdrawalAddresses::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_withdrawal_addresses_user")
                    .table(WithdrawalAddresses::Table)
                    .col(WithdrawalAddresses::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Withdrawals::Table)
                    .col(uuid(Withdrawals::Id).primary_key())
                    .col(uuid(Withdrawals::UserId))
                    .col(string_len(Withdrawals::Asset, 16))
                    .col(amount(manager, Withdrawals::Amount, false))
                    .col(amount(manager, Withdrawals::UsdValue, false))
                    .col(uuid(Withdrawals::AddressId))
                    .col(string_len(Withdrawals::Address, 128))
                    .col(string_len(Withdrawals::Status, 16))
                    .col(string_len(Withdrawals::IdempotencyKey, 128))
                    .col(string_len_null(Withdrawals::Txid, 128))
                    .col(string_len_null(Withdrawals::FailureReason, 256))
                    .col(timestamp_with_time_zone(Withdrawals::CreatedAt))
                    .col(timestamp_with_time_zone(Withdrawals::UpdatedAt))
                    .foreign_key(&mut user_fk(
                        Withdrawals::Table,
                        "fk_withdrawals_user",
                        Withdrawals::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_withdrawals_idempotency")
                    .table(Withdrawals::Table)
                    .col(Withdrawals::UserId)
                    .col(Withdrawals::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_withdrawals_user_created")
                    .table(Withdrawals::Table)
                    .col(Withdrawals::UserId)
                    .col(Withdrawals::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EmailOutbox::Table)
                    .col(uuid(EmailOutbox::Id).primary_key())
                    .col(uuid_null(EmailOutbox::UserId))
                    .col(string_len(EmailOutbox::ToAddress, 254))
                    .col(string_len(EmailOutbox::Subject, 200))
                    .col(text(EmailOutbox::Body))
                    .col(timestamp_with_time_zone(EmailOutbox::CreatedAt))
                    .col(timestamp_with_time_zone(EmailOutbox::NextAttemptAt))
                    .col(integer(EmailOutbox::Attempts).default(0))
                    .col(timestamp_with_time_zone_null(EmailOutbox::SentAt))
                    .col(string_len_null(EmailOutbox::LastError, 512))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_email_outbox_due")
                    .table(EmailOutbox::Table)
                    .col(EmailOutbox::SentAt)
                    .col(EmailOutbox::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PasswordResetTokens::Table)
                    .col(string_len(PasswordResetTokens::TokenHash, 64).primary_key())
                    .col(uuid(PasswordResetTokens::UserId))
                    .col(timestamp_with_time_zone(PasswordResetTokens::CreatedAt))
                    .col(timestamp_with_time_zone(PasswordResetTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(PasswordResetTokens::UsedAt))
                    .foreign_key(&mut user_fk(
                        PasswordResetTokens::Table,
                        "fk_password_reset_tokens_user",
                        PasswordResetTokens::UserId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PasswordResetTokens::Table.into_iden(),
            EmailOutbox::Table.into_iden(),
            Withdrawals::Table.into_iden(),
            WithdrawalAddresses::Table.into_iden(),
            UserSecurity::Table.into_iden(),
            WebauthnChallenges::Table.into_iden(),
            Passkeys::Table.into_iden(),
            RecoveryCodes::Table.into_iden(),
            TotpCredentials::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum TotpCredentials {
    Table,
    UserId,
    SecretSealed,
    ConfirmedAt,
    LastUsedStep,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum RecoveryCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Passkeys {
    Table,
    Id,
    UserId,
    Name,
    CredentialId,
    Credential,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum WebauthnChallenges {
    Table,
    Id,
    UserId,
    Purpose,
    State,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum UserSecurity {
    Table,
    UserId,
    WithdrawalsLockedUntil,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum WithdrawalAddresses {
    Table,
    Id,
    UserId,
    Asset,
    Address,
    Label,
    ActivatesAt,
    CreatedAt,
    RemovedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Withdrawals {
    Table,
    Id,
    UserId,
    Asset,
    Amount,
    UsdValue,
    AddressId,
    Address,
    Status,
    IdempotencyKey,
    Txid,
    FailureReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum EmailOutbox {
    Table,
    Id,
    UserId,
    ToAddress,
    Subject,
    Body,
    CreatedAt,
    NextAttemptAt,
    Attempts,
    SentAt,
    LastError,
}

#[derive(DeriveIden, Clone, Copy)]
enum PasswordResetTokens {
    Table,
    TokenHash,
    UserId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}
