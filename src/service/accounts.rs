//! Accounts: registration, login, passwords and roles.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    SqlErr,
};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::security::{self, LoginMethod};
use super::sessions::{self, AuthTokens};
use super::{two_factor, ClientInfo};
use crate::auth::{password, Viewer};
use crate::domain::account_rules::{self, RuleViolation};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{users, Role};

pub struct Registration {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

pub struct Credentials {
    pub email: String,
    pub password: String,
    /// The second factor, needed when the account has 2FA.
    pub second_factor: super::two_factor::Presented,
}

fn field_error(field: &str) -> impl Fn(RuleViolation) -> ApiError + '_ {
    move |violation| ApiError::bad_input(field, violation.0)
}

/// Creates an account and signs it in.
#[tracing::instrument(skip_all)]
pub async fn register(
    state: &AppState,
    input: Registration,
    client: &ClientInfo,
) -> Result<AuthTokens, ApiError> {
    let email = account_rules::normalize_email(&input.email).map_err(field_error("input.email"))?;
    let display_name = account_rules::normalize_display_name(&input.display_name)
        .map_err(field_error("input.displayName"))?;
    let local_part = email.split('@').next().unwrap_or_default().to_owned();
    account_rules::check_password(&input.password, &[&email, &local_part, &display_name])
        .map_err(field_error("input.password"))?;
    let password_hash = password::hash(input.password).await?;
    let now = Utc::now();
    let user = users::Model {
        id: Uuid::now_v7(),
        email,
        display_name,
        password_hash,
        roles: String::new(),
        two_factor_enabled: false,
        kyc_tier: "UNVERIFIED".to_owned(),
        anti_phishing_code: None,
        password_changed_at: now,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        rate_limit_tier: None,
    };
    state
        .db
        .write(|txn| {
            let (user, state, client) = (user.clone(), state.clone(), client.clone());
            Box::pin(async move {
                let inserted = users::ActiveModel::from(user).reset_all().insert(txn).await;
                let user = match inserted {
                    Ok(user) => user,
                    Err(error)
                        if matches!(
                            error.sql_err(),
                            Some(SqlErr::UniqueConstraintViolation(_))
                        ) =>
                    {
                        return Err(ApiError::Conflict(
                            "an account with this e-mail already exists".into(),
                        ));
                    }
                    Err(error) => return Err(error.into()),
                };
                sessions::start(&state, txn, user, &client).await
            })
        })
        .await
}

/// Checks credentials and starts a session. Wrong e-mail and wrong password answer the
/// same, in the same time; repeated failures are throttled per account and per IP.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: &AppState,
    input: Credentials,
    client: &ClientInfo,
) -> Result<AuthTokens, ApiError> {
    let account_key = input.email.trim().to_lowercase();
    let throttles = &state.login_throttle;
    let limited = |retry_after_secs| ApiError::RateLimited { retry_after_secs };
    throttles.per_ip.check(&client.ip).map_err(limited)?;
    throttles.per_account.check(&account_key).map_err(limited)?;

    let user = match account_rules::normalize_email(&input.email) {
        Ok(email) => {
            users::Entity::find()
                .filter(users::Column::Email.eq(email))
                .one(state.db.conn())
                .await?
        }
        Err(_) => None,
    };
    let valid = input.password.len() <= account_rules::MAX_PASSWORD_LEN
        && password::verify(
            input.password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
    let user_id = user.as_ref().map(|u| u.id);
    let Some(user) = user.filter(|_| valid) else {
        throttles.per_ip.fail(&client.ip);
        throttles.per_account.fail(&account_key);
        security::note_login_failure(state, user_id, "password").await?;
        return Err(ApiError::Unauthenticated("wrong e-mail or password".into()));
    };
    let second_factor = input.second_factor;
    let result = state
        .db
        .write(|txn| {
            let (user, state, client) = (user.clone(), state.clone(), client.clone());
            let second_factor = second_factor.clone();
            Box::pin(async move {
                two_factor::require(&state, txn, &user, &second_factor).await?;
                security::note_login(txn, &user, &client, LoginMethod::Password).await?;
                sessions::start(&state, txn, user, &client).await
            })
        })
        .await;
    if let Err(ApiError::TwoFactorRequired | ApiError::RateLimited { .. }) = &result {
        security::note_login_failure(state, Some(user.id), "second_factor").await?;
    }
    result
}

/// Changes the viewer's password and signs out every other session, since whoever
/// knew the old password may hold one of them.
#[tracing::instrument(skip_all)]
pub async fn change_password(
    state: &AppState,
    viewer: &Viewer,
    current: String,
    new: String,
) -> Result<bool, ApiError> {
    let user = &viewer.user;
    if !password::verify(current, Some(user.password_hash.clone())).await? {
        return Err(ApiError::bad_input(
            "currentPassword",
            "the current password is wrong",
        ));
    }
    let local_part = user.email.split('@').next().unwrap_or_default().to_owned();
    account_rules::check_password(&new, &[&user.email, &local_part, &user.display_name])
        .map_err(field_error("newPassword"))?;
    let password_hash = password::hash(new).await?;
    let (user_id, keep) = (user.id, viewer.session_id);
    state
        .db
        .write(|txn| {
            let (state, password_hash) = (state.clone(), password_hash.clone());
            Box::pin(async move {
                let now = Utc::now();
                users::Entity::update_many()
                    .col_expr(users::Column::PasswordHash, Expr::value(password_hash))
                    .col_expr(users::Column::PasswordChangedAt, Expr::value(now))
                    .col_expr(users::Column::UpdatedAt, Expr::value(now))
                    .filter(users::Column::Id.eq(user_id))
                    .exec(txn)
                    .await?;
                sessions::revoke_all_except(
                    txn,
                    user_id,
                    Some(keep),
                    sessions::reason::PASSWORD_CHANGED,
                )
                .await?;
                audit::record(
                    txn,
                    AuditEntry::new("password.changed", "user", user_id)
                        .actor(user_id)
                        .owner(user_id),
                )
                .await?;
                let user = users::Entity::find_by_id(user_id)
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("user"))?;
                security::security_changed(&state, txn, &user, "the password was changed").await?;
                Ok(true)
            })
        })
        .await?;
    super::live::sessions_revoked(state, user_id, None, Some(keep)).await;
    Ok(true)
}

/// Sets the phrase shown in every e-mail tradegraph sends, so users can tell real
/// e-mails from phishing. `None` clears it.
pub async fn set_anti_phishing_code(
    state: &AppState,
    viewer: &Viewer,
    code: Option<String>,
) -> Result<users::Model, ApiError> {
    let code = code.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if let Some(code) = &code {
        let len = code.chars().count();
        if !(4..=32).contains(&len) || code.chars().any(char::is_control) {
            return Err(ApiError::bad_input(
                "code",
                "the anti-phishing code must be 4 to 32 printable characters",
            ));
        }
    }
    let mut active: users::ActiveModel = viewer.user.clone().into();
    active.anti_phishing_code = Set(code);
    active.updated_at = Set(Utc::now());
    Ok(active.update(state.db.conn()).await?)
}

/// Finds a user by id; unknown ids are `NOT_FOUND`.
pub async fn find(state: &AppState, id: Uuid) -> Result<users::Model, ApiError> {
    users::Entity::find_by_id(id)
        .one(state.db.conn())
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// Grants (`grant = true`) or revokes a role. Only an admin may, and the last admin
/// cannot lose the role, or nobody could administer the exchange.
pub async fn set_role(
    state: &AppState,
    viewer: &Viewer,
    user_id: Uuid,
    role: Role,
    grant: bool,
) -> Result<users::Model, ApiError> {
    if !viewer.has_role(Role::Admin) {
        return Err(ApiError::Forbidden("only an ADMIN can change roles".into()));
    }
    if role == Role::User {
        return Err(ApiError::bad_input(
            "role",
            "every user holds USER; it cannot be granted or revoked",
        ));
    }
    let actor = viewer.user_id();
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                let user = users::Entity::find_by_id(user_id)
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("user"))?;
                let current = user.role_set();
                let roles = if grant {
                    current.with(role)
                } else {
                    current.without(role)
                };
                if roles == current {
                    return Ok(user);
                }
                if role == Role::Admin && !grant {
                    let admins = users::Entity::find()
                        .filter(users::Column::Roles.contains("ADMIN"))
                        .count(txn)
                        .await?;
                    if admins <= 1 {
                        return Err(ApiError::Conflict(
                            "the last ADMIN cannot lose the role".into(),
                        ));
                    }
                }
                let mut active: users::ActiveModel = user.into();
                active.roles = Set(roles.to_column());
                active.updated_at = Set(Utc::now());
                let user = active.update(txn).await?;
                audit::record(
                    txn,
                    AuditEntry::new(
                        if grant {
                            "role.granted"
                        } else {
                            "role.revoked"
                        },
                        "user",
                        user_id,
                    )
                    .actor(actor)
                    .owner(user_id)
                    .details(serde_json::json!({ "role": role.as_str() })),
                )
                .await?;
                Ok(user)
            })
        })
        .await
}

/// Makes sure the account named by `ADMIN_EMAIL` exists and is an admin. An existing
/// account keeps its password: the variable bootstraps, it does not reset.
pub async fn ensure_admin(
    state: &AppState,
    email: &str,
    password_plain: &str,
) -> anyhow::Result<()> {
    let email = account_rules::normalize_email(email)
        .map_err(|v| anyhow::anyhow!("ADMIN_EMAIL: {}", v.0))?;
    let existing = users::Entity::find()
        .filter(users::Column::Email.eq(email.clone()))
        .one(state.db.conn())
        .await?;
    let now = Utc::now();
    match existing {
        Some(user) if user.role_set().contains(Role::Admin) => Ok(()),
        Some(user) => {
            let roles = user.role_set().with(Role::Admin).to_column();
            let mut active: users::ActiveModel = user.into();
            active.roles = Set(roles);
            active.updated_at = Set(now);
            active.update(state.db.conn()).await?;
            tracing::info!("granted ADMIN to the account named by ADMIN_EMAIL");
            Ok(())
        }
        None => {
            account_rules::check_password(password_plain, &[&email])
                .map_err(|v| anyhow::anyhow!("ADMIN_PASSWORD: {}", v.0))?;
            let password_hash = password::hash(password_plain.to_owned()).await?;
            users::ActiveModel::from(users::Model {
                id: Uuid::now_v7(),
                email,
                display_name: "Administrator".to_owned(),
                password_hash,
                roles: Role::Admin.as_str().to_owned(),
                two_factor_enabled: false,
                kyc_tier: "UNVERIFIED".to_owned(),
                anti_phishing_code: None,
                password_changed_at: now,
                created_at: now,
                updated_at: now,
                deleted_at: None,
                rate_limit_tier: None,
            })
            .reset_all()
            .insert(state.db.conn())
            .await?;
            tracing::info!("created the first admin from ADMIN_EMAIL");
            Ok(())
        }
    }
}
