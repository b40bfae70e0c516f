//! E-mail through a transactional outbox: a message is a row written in the transaction
//! of whatever caused it (so a rolled-back change sends nothing, and a committed one is
//! never lost), and a background relay delivers due rows by SMTP, or only logs them
//! when `SMTP_URL` is unset. Every message carries the user's anti-phishing code.

use std::time::Duration;

use chrono::Utc;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use entity::{email_outbox, users};

/// Attempts before a message is left alone (its `last_error` says why).
pub const MAX_ATTEMPTS: i32 = 8;
/// How long one relay may work on a message before another may take it over.
const CLAIM: chrono::Duration = chrono::Duration::seconds(60);

/// Queues an e-mail to `user` in the caller's transaction. `body` is the message
/// proper; the greeting, the anti-phishing code and the signature are added here so no
/// message can go out without the code.
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    user: &users::Model,
    subject: &str,
    body: &str,
) -> Result<(), ApiError> {
    let now = Utc::now();
    email_outbox::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(Some(user.id)),
        to_address: Set(user.email.clone()),
        subject: Set(subject.chars().take(200).collect()),
        body: Set(compose(user, body)),
        created_at: Set(now),
        next_attempt_at: Set(now),
        attempts: Set(0),
        sent_at: Set(None),
        last_error: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// The full text of a message to `user`.
pub fn compose(user: &users::Model, body: &str) -> String {
    let code = match &user.anti_phishing_code {
        Some(code) => format!("Your anti-phishing code: {code}"),
        None => "Your anti-phishing code: (not set - set one in your security settings, and \
                 every genuine e-mail from us will show it here)"
            .to_owned(),
    };
    format!(
        "{code}\n\nHello {},\n\n{body}\n\nIf this was not you, change your password and \
         contact support at once.\n\n- tradegraph\n",
        user.display_name
    )
}

/// Delivers messages: by SMTP, or to the log in development.
#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: lettre::message::Mailbox,
    },
    /// No `SMTP_URL`: messages are logged by id and subject only (bodies can hold
    /// one-time tokens), and marked sent.
    Log,
}

impl Mailer {
    pub fn from_config(state: &AppState) -> anyhow::Result<Mailer> {
        let security = &state.config.security;
        let Some(url) = &security.smtp_url else {
            if state.config.is_production() {
                tracing::warn!("SMTP_URL is not set: e-mails are logged, not sent");
            }
            return Ok(Mailer::Log);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|_| anyhow::anyhow!("SMTP_URL is not a valid smtp:// or smtps:// URL"))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = security
            .email_from
            .parse()
            .map_err(|_| anyhow::anyhow!("EMAIL_FROM is not a valid mailbox"))?;
        Ok(Mailer::Smtp { transport, from })
    }

    async fn deliver(&self, message: &email_outbox::Model) -> anyhow::Result<()> {
        match self {
            Mailer::Log => {
                tracing::info!(
                    email = %message.id,
                    user = ?message.user_id,
                    subject = %message.subject,
                    "e-mail not sent (SMTP_URL unset)"
                );
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let email = Message::builder()
                    .from(from.clone())
                    .to(message.to_address.parse()?)
                    .subject(message.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(message.body.clone())?;
                transport.send(email).await?;
                Ok(())
            }
        }
    }
}

/// Sends up to `batch` due messages; returns how many were attempted. Each is claimed
/// first with a conditional update, so replicas running this at once never send one
/// message twice (unless a relay dies mid-send and the claim lapses).
pub async fn deliver_due(state: &AppState, mailer: &Mailer, batch: u64) -> Result<usize, ApiError> {
    let conn = state.db.conn();
    let now = Utc::now();
    let due = email_outbox::Entity::find()
        .filter(email_outbox::Column::SentAt.is_null())
        .filter(email_outbox::Column::NextAttemptAt.lte(now))
        .filter(email_outbox::Column::Attempts.lt(MAX_ATTEMPTS))
        .order_by_asc(email_outbox::Column::NextAttemptAt)
        .limit(batch)
        .all(conn)
        .await?;
    let mut attempted = 0;
    for message in due {
        let claimed = email_outbox::Entity::update_many()
            .col_expr(
                email_outbox::Column::NextAttemptAt,
                Expr::value(now + CLAIM),
            )
            .filter(email_outbox::Column::Id.eq(message.id))
            .filter(email_outbox::Column::SentAt.is_null())
            .filter(email_outbox::Column::NextAttemptAt.lte(now))
            .exec(conn)
            .await?;
        if claimed.rows_affected == 0 {
            continue;
        }
        attempted += 1;
        let attempts = message.attempts + 1;
        let mut update = email_outbox::Entity::update_many()
            .col_expr(email_outbox::Column::Attempts, Expr::value(attempts))
            .filter(email_outbox::Column::Id.eq(message.id));
        match mailer.deliver(&message).await {
            Ok(()) => {
                update = update.col_expr(email_outbox::Column::SentAt, Expr::value(Utc::now()));
            }
            Err(error) => {
                // Transport errors name hosts and SMTP replies, never the message body.
                let text: String = format!("{error:#}").chars().take(500).collect();
                tracing::warn!(email = %message.id, attempts, error = %text, "e-mail delivery failed");
                let backoff = chrono::Duration::seconds(2i64.pow(attempts.min(12) as u32));
                update = update
                    .col_expr(email_outbox::Column::LastError, Expr::value(text))
                    .col_expr(
                        email_outbox::Column::NextAttemptAt,
                        Expr::value(Utc::now() + backoff),
                    );
            }
        }
        update.exec(conn).await?;
    }
    Ok(attempted)
}
