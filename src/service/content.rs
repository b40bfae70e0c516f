//! Advisor content through compliance: writing versions, the automated checks on
//! submit, four-eyes review, publication bound to the approved text, and archiving.
//!
//! Every step runs in one transaction that locks the piece's row, checks who may act
//! (`domain::content_workflow::Actor`) and whether the state allows it, writes, and
//! appends its audit event (`service::audit`) before commit; subscribers hear of it
//! only after commit.

use chrono::Utc;
use entity::{content_checks, content_versions, contents, Role};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use crate::auth::Viewer;
use crate::domain::compliance_rules::{content_hash, Assessment, Finding, RuleSet};
use crate::domain::content_workflow::{
    self as workflow, Actor, ContentAction, ContentStatus, IllegalTransition,
};
use crate::error::ApiError;
use crate::events::{Collector, Event};
use crate::state::AppState;

/// The subject type of content in the audit log.
pub const SUBJECT: &str = "content";

/// A new piece.
#[derive(Clone, Debug)]
pub struct NewContent {
    pub title: String,
    pub body: String,
    pub topic: String,
    pub language: String,
}

/// Changes to a piece's text; `None` keeps the field.
#[derive(Clone, Debug, Default)]
pub struct ContentEdit {
    pub title: Option<String>,
    pub body: Option<String>,
    pub topic: Option<String>,
    pub language: Option<String>,
}

/// Filters for `contents`.
#[derive(Clone, Debug, Default)]
pub struct ContentFilter {
    pub status: Option<ContentStatus>,
    pub author_id: Option<Uuid>,
    pub topic: Option<String>,
    pub search: Option<String>,
}

/// Who is acting, as far as content cares; `Copy`, so a retried transaction can take
/// it along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    pub id: Uuid,
    pub advisor: bool,
    pub officer: bool,
    pub admin: bool,
}

impl Who {
    pub fn of(viewer: &Viewer) -> Who {
        Who {
            id: viewer.user_id(),
            advisor: viewer.has_role(Role::Advisor),
            officer: viewer.has_role(Role::ComplianceOfficer),
            admin: viewer.has_role(Role::Admin),
        }
    }
}

/// How the viewer relates to a piece.
pub fn actor(viewer: Option<&Viewer>, content: &contents::Model) -> Actor {
    actor_of(viewer.map(Who::of), content)
}

fn actor_of(who: Option<Who>, content: &contents::Model) -> Actor {
    match who {
        None => Actor::default(),
        Some(w) => Actor {
            is_author: w.id == content.author_id,
            is_advisor: w.advisor,
            is_officer: w.officer,
            is_admin: w.admin,
        },
    }
}

/// Whether the viewer sees every piece (officers and admins).
fn sees_all(viewer: Option<&Viewer>) -> bool {
    viewer.is_some_and(|v| v.has_role(Role::ComplianceOfficer) || v.has_role(Role::Admin))
}

fn status_of(content: &contents::Model) -> Result<ContentStatus, ApiError> {
    content
        .status
        .parse()
        .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))
}

/// An audit entry about piece `id`. Each piece has its own hash chain, so its trail is
/// complete, verifiable on its own, and its writers never queue behind others.
fn entry(action: &str, id: Uuid) -> AuditEntry {
    AuditEntry::new(action, SUBJECT, id).in_chain(format!("content:{id}"))
}

fn conflict(error: IllegalTransition) -> ApiError {
    ApiError::Conflict(error.to_string())
}

fn bad(field: &str) -> impl FnOnce(String) -> ApiError + '_ {
    move |message| ApiError::bad_input(field, message)
}

/// Creates a piece as DRAFT with its version 1 (ADVISOR).
pub async fn create(
    state: &AppState,
    viewer: &Viewer,
    input: NewContent,
) -> Result<contents::Model, ApiError> {
    if !viewer.has_role(Role::Advisor) {
        return Err(ApiError::Forbidden("this needs the ADVISOR role".into()));
    }
    let title = workflow::normalize_title(&input.title).map_err(bad("input.title"))?;
    workflow::check_body(&input.body).map_err(bad("input.body"))?;
    let topic = workflow::normalize_topic(&input.topic).map_err(bad("input.topic"))?;
    let language = workflow::normalize_language(&input.language).map_err(bad("input.language"))?;
    let author = viewer.user_id();
    let id = Uuid::now_v7();
    let (content, events) = state
        .db
        .write(|txn| {
            let (title, body, topic, language) = (
                title.clone(),
                input.body.clone(),
                topic.clone(),
                language.clone(),
            );
            Box::pin(async move {
                let now = Utc::now();
                let content = contents::Model {
                    id,
                    author_id: author,
                    status: ContentStatus::Draft.as_str().to_owned(),
                    title,
                    body,
                    topic,
                    language,
                    version: 1,
                    reviewer_id: None,
                    approved_version: None,
                    approved_hash: None,
                    review_note: None,
                    risk_score: None,
                    senior_review_required: false,
                    submitted_at: None,
                    published_at: None,
                    created_at: now,
                    updated_at: now,
                };
                let content = content.into_active_model().insert(txn).await?;
                let hash = insert_version(txn, &content, author).await?;
                audit::record(
                    txn,
                    entry("content.created", id)
                        .actor(author)
                        .owner(author)
                        .details(json!({
                            "status": content.status,
                            "version": 1,
                            "contentHash": hash,
                        })),
                )
                .await?;
                let events = Collector::default();
                events.push(event(&content, "content.created", ContentStatus::Draft));
                Ok((content, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(content)
}

/// Writes a new version (author, in DRAFT or CHANGES_REQUESTED). An edit that changes
/// nothing writes nothing.
pub async fn update(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    edit: ContentEdit,
) -> Result<contents::Model, ApiError> {
    let title = edit
        .title
        .as_deref()
        .map(workflow::normalize_title)
        .transpose()
        .map_err(bad("input.title"))?;
    if let Some(body) = &edit.body {
        workflow::check_body(body).map_err(bad("input.body"))?;
    }
    let topic = edit
        .topic
        .as_deref()
        .map(workflow::normalize_topic)
        .transpose()
        .map_err(bad("input.topic"))?;
    let language = edit
        .language
        .as_deref()
        .map(workflow::normalize_language)
        .transpose()
        .map_err(bad("input.language"))?;
    let user = viewer.user_id();
    let who = Who::of(viewer);
    let (content, events) = state
        .db
        .write(|txn| {
            let (title, body, topic, language) = (
                title.clone(),
                edit.body.clone(),
                topic.clone(),
                language.clone(),
            );
            Box::pin(async move {
                let (content, status) = lock_for(txn, who, id, ContentAction::Edit).await?;
                let unchanged = title.as_ref().is_none_or(|t| *t == content.title)
                    && body.as_ref().is_none_or(|b| *b == content.body)
                    && topic.as_ref().is_none_or(|t| *t == content.topic)
                    && language.as_ref().is_none_or(|l| *l == content.language);
                if unchanged {
                    return Ok((content, Vec::new()));
                }
                let previous_version = content.version;
                let mut active = content.into_active_model();
                if let Some(title) = title {
                    active.title = Set(title);
                }
                if let Some(body) = body {
                    active.body = Set(body);
                }
                if let Some(topic) = topic {
                    active.topic = Set(topic);
                }
                if let Some(language) = language {
                    active.language = Set(language);
                }
                active.version = Set(previous_version + 1);
                // A new text has not been checked yet.
                active.risk_score = Set(None);
                active.senior_review_required = Set(false);
                active.updated_at = Set(Utc::now());
                let content = active.update(txn).await?;
                let hash = insert_version(txn, &content, user).await?;
                audit::record(
                    txn,
                    entry(ContentAction::Edit.audit_action(), id)
                        .actor(user)
                        .owner(content.author_id)
                        .details(json!({
                            "status": content.status,
                            "version": content.version,
                            "previousVersion": previous_version,
                            "contentHash": hash,
                        })),
                )
                .await?;
                let events = Collector::default();
                events.push(event(&content, ContentAction::Edit.audit_action(), status));
                Ok((content, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(content)
}

/// Submits a piece (author): runs the automated rules and the risk score on its current
/// version, stores the result with the version, and moves it on to AUTO_REJECTED (a
/// blocking finding) or IN_REVIEW.
pub async fn submit(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
) -> Result<contents::Model, ApiError> {
    let rules = state.compliance_rules.current().rules;
    let user = viewer.user_id();
    let who = Who::of(viewer);
    let (content, events) = state
        .db
        .write(|txn| {
            let rules = rules.clone();
            Box::pin(async move {
                let (content, from) =
                    lock_for(txn, who, id, ContentAction::Submit).await?;
                let submitted = from.apply(ContentAction::Submit).map_err(conflict)?;
                let assessment = assess(&rules, &content);
                let check_id = insert_check(txn, &content, &rules, &assessment).await?;
                let events = Collector::default();
                audit::record(
                    txn,
                    entry(ContentAction::Submit.audit_action(), id)
                        .actor(user)
                        .owner(content.author_id)
                        .details(json!({
                            "from": from.as_str(),
                            "status": submitted.as_str(),
                            "version": content.version,
                        })),
                )
                .await?;
                let verdict = if assessment.blocked {
                    ContentAction::FailChecks
                } else {
                    ContentAction::PassChecks
                };
                let next = submitted.apply(verdict).map_err(conflict)?;
                // The checks are the system acting: no actor.
                audit::record(
                    txn,
                    entry(verdict.audit_action(), id)
                        .owner(content.author_id)
                        .details(json!({
                            "from": submitted.as_str(),
                            "status": next.as_str(),
                            "version": content.version,
                            "checkId": check_id,
                            "rulesFingerprint": rules.fingerprint,
                            "riskScore": assessment.risk_score,
                            "seniorReviewRequired": assessment.senior_review_required,
                            "findings": assessment
                                .findings
                                .iter()
                                .map(|f| json!({"rule": f.rule, "severity": f.severity, "start": f.start, "end": f.end}))
                                .collect::<Vec<_>>(),
                        })),
                )
                .await?;
                let now = Utc::now();
                let mut active = content.into_active_model();
                active.status = Set(next.as_str().to_owned());
                active.risk_score = Set(Some(i32::from(assessment.risk_score)));
                active.senior_review_required = Set(assessment.senior_review_required);
                active.submitted_at = Set(Some(now));
                active.review_note = Set(None);
                active.updated_at = Set(now);
                let content = active.update(txn).await?;
                events.push(event(&content, verdict.audit_action(), from));
                Ok((content, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(content)
}

/// A reviewer's decision on a piece IN_REVIEW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    RequestChanges,
    Reject,
}

/// Approves, requests changes to or rejects a piece (COMPLIANCE_OFFICER, never its
/// author). An approval records the version and the SHA-256 of its exact text.
pub async fn decide(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    decision: Decision,
    note: Option<String>,
) -> Result<contents::Model, ApiError> {
    let (action, note) = match decision {
        Decision::Approve => (
            ContentAction::Approve,
            workflow::normalize_note(note.as_deref(), false).map_err(bad("note"))?,
        ),
        Decision::RequestChanges => (
            ContentAction::RequestChanges,
            workflow::normalize_note(note.as_deref(), true).map_err(bad("note"))?,
        ),
        Decision::Reject => (
            ContentAction::Reject,
            workflow::normalize_note(note.as_deref(), true).map_err(bad("reason"))?,
        ),
    };
    let user = viewer.user_id();
    let who = Who::of(viewer);
    let (content, events) = state
        .db
        .write(|txn| {
            let note = note.clone();
            Box::pin(async move {
                let (content, from) = lock_for(txn, who, id, action).await?;
                let next = from.apply(action).map_err(conflict)?;
                let version = load_version(txn, id, content.version).await?;
                let hash = verified_hash(&content, &version)?;
                let mut details = json!({
                    "from": from.as_str(),
                    "status": next.as_str(),
                    "version": content.version,
                    "contentHash": hash,
                    "riskScore": content.risk_score,
                    "seniorReviewRequired": content.senior_review_required,
                });
                let key = if decision == Decision::Reject {
                    "reason"
                } else {
                    "note"
                };
                details[key] = json!(note);
                audit::record(
                    txn,
                    entry(action.audit_action(), id)
                        .actor(user)
                        .owner(content.author_id)
                        .details(details),
                )
                .await?;
                let mut active = content.into_active_model();
                active.status = Set(next.as_str().to_owned());
                active.reviewer_id = Set(Some(user));
                active.review_note = Set(note);
                if decision == Decision::Approve {
                    active.approved_version = Set(Some(version.version));
                    active.approved_hash = Set(Some(hash));
                }
                active.updated_at = Set(Utc::now());
                let content = active.update(txn).await?;
                let events = Collector::default();
                events.push(event(&content, action.audit_action(), from));
                Ok((content, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(content)
}

/// Revises, publishes or archives a piece.
///
/// * revise (author): AUTO_REJECTED or APPROVED back to DRAFT, dropping any approval;
/// * publish (author or officer): APPROVED to PUBLISHED, only if the current text hashes
///   to exactly what was approved;
/// * archive (author, officer or admin): PUBLISHED to ARCHIVED.
pub async fn advance(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    action: ContentAction,
) -> Result<contents::Model, ApiError> {
    if !matches!(
        action,
        ContentAction::Revise | ContentAction::Publish | ContentAction::Archive
    ) {
        return Err(ApiError::internal(anyhow::anyhow!(
            "advance called with {action:?}"
        )));
    }
    let user = viewer.user_id();
    let who = Who::of(viewer);
    let (content, events) = state
        .db
        .write(|txn| {
            Box::pin(async move {
                let (content, from) = lock_for(txn, who, id, action).await?;
                let next = from.apply(action).map_err(conflict)?;
                let mut details = json!({
                    "from": from.as_str(),
                    "status": next.as_str(),
                    "version": content.version,
                });
                let now = Utc::now();
                let author = content.author_id;
                let mut active = content.clone().into_active_model();
                match action {
                    ContentAction::Publish => {
                        let version = load_version(txn, id, content.version).await?;
                        let hash = publishable_hash(&content, &version)?;
                        details["contentHash"] = json!(hash);
                        active.published_at = Set(Some(now));
                    }
                    ContentAction::Revise => {
                        details["droppedApproval"] = json!(content.approved_version);
                        active.approved_version = Set(None);
                        active.approved_hash = Set(None);
                    }
                    _ => {}
                }
                audit::record(
                    txn,
                    entry(action.audit_action(), id)
                        .actor(user)
                        .owner(author)
                        .details(details),
                )
                .await?;
                active.status = Set(next.as_str().to_owned());
                active.updated_at = Set(now);
                let content = active.update(txn).await?;
                let events = Collector::default();
                events.push(event(&content, action.audit_action(), from));
                Ok((content, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(content)
}

/// Runs the rules over a text without storing anything (for authors checking a draft).
pub fn preview(state: &AppState, input: &NewContent) -> Result<Assessment, ApiError> {
    let title = workflow::normalize_title(&input.title).map_err(bad("input.title"))?;
    workflow::check_body(&input.body).map_err(bad("input.body"))?;
    let topic = workflow::normalize_topic(&input.topic).map_err(bad("input.topic"))?;
    let language = workflow::normalize_language(&input.language).map_err(bad("input.language"))?;
    Ok(state
        .compliance_rules
        .current()
        .rules
        .assess(&title, &input.body, &topic, &language))
}

/// Re-reads the rules file (ADMIN), and audits which rules are now in force.
pub async fn reload_rules(
    state: &AppState,
    viewer: &Viewer,
) -> Result<super::compliance::LoadedRules, ApiError> {
    if !viewer.has_role(Role::Admin) {
        return Err(ApiError::Forbidden("this needs the ADMIN role".into()));
    }
    let before = state.compliance_rules.current().rules.fingerprint.clone();
    let loaded = state.compliance_rules.reload()?;
    let user = viewer.user_id();
    state
        .db
        .write(|txn| {
            let (before, loaded) = (before.clone(), loaded.clone());
            Box::pin(async move {
                audit::record(
                    txn,
                    AuditEntry::new(
                        "compliance_rules.reloaded",
                        "compliance_rules",
                        &loaded.rules.fingerprint,
                    )
                    .actor(user)
                    .details(json!({
                        "previousFingerprint": before,
                        "fingerprint": loaded.rules.fingerprint,
                        "rules": loaded.rules.rules.len(),
                    })),
                )
                .await
            })
        })
        .await?;
    Ok(loaded)
}

/// One piece, if the viewer may see it (authors their own, officers and admins all,
/// everyone what is PUBLISHED).
pub async fn find_visible(
    state: &AppState,
    viewer: Option<&Viewer>,
    id: Uuid,
) -> Result<Option<contents::Model>, ApiError> {
    let Some(content) = contents::Entity::find_by_id(id)
        .one(state.db.conn())
        .await?
    else {
        return Ok(None);
    };
    let status = status_of(&content)?;
    Ok(actor(viewer, &content).may_see(status).then_some(content))
}

/// The pieces the viewer may see, newest first, after the cursor `after`.
pub async fn list(
    state: &AppState,
    viewer: Option<&Viewer>,
    filter: &ContentFilter,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<contents::Model>, ApiError> {
    let mut query = contents::Entity::find();
    if !sees_all(viewer) {
        let published = contents::Column::Status.eq(ContentStatus::Published.as_str());
        query = query.filter(match viewer {
            Some(v) => Condition::any()
                .add(published)
                .add(contents::Column::AuthorId.eq(v.user_id())),
            None => Condition::all().add(published),
        });
    }
    if let Some(status) = filter.status {
        query = query.filter(contents::Column::Status.eq(status.as_str()));
    }
    if let Some(author) = filter.author_id {
        query = query.filter(contents::Column::AuthorId.eq(author));
    }
    if let Some(topic) = &filter.topic {
        let topic = workflow::normalize_topic(topic).map_err(bad("filter.topic"))?;
        query = query.filter(contents::Column::Topic.eq(topic));
    }
    if let Some(search) = filter.search.as_deref().map(str::trim) {
        if !search.is_empty() {
            if search.chars().count() > 200 {
                return Err(ApiError::bad_input(
                    "filter.search",
                    "at most 200 characters",
                ));
            }
            let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
            let like = |column: contents::Column| {
                Expr::expr(Func::lower(Expr::col(column)))
                    .like(LikeExpr::new(pattern.clone()).escape('\\'))
            };
            query = query.filter(
                Condition::any()
                    .add(like(contents::Column::Title))
                    .add(like(contents::Column::Body)),
            );
        }
    }
    if let Some(after) = after {
        query = query.filter(contents::Column::Id.lt(after));
    }
    Ok(query
        .order_by_desc(contents::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}

/// Pieces IN_REVIEW that the officer may decide on (not their own), oldest submission
/// first; `senior_only` keeps those flagged for senior review.
pub async fn review_queue(
    state: &AppState,
    viewer: &Viewer,
    senior_only: bool,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<contents::Model>, ApiError> {
    if !viewer.has_role(Role::ComplianceOfficer) {
        return Err(ApiError::Forbidden(
            "this needs the COMPLIANCE_OFFICER role".into(),
        ));
    }
    let mut query = contents::Entity::find()
        .filter(contents::Column::Status.eq(ContentStatus::InReview.as_str()))
        .filter(contents::Column::AuthorId.ne(viewer.user_id()));
    if senior_only {
        query = query.filter(contents::Column::SeniorReviewRequired.eq(true));
    }
    if let Some(after) = after {
        // The cursor names a piece; continue after its place in the queue, wherever
        // that piece is now.
        let Some(anchor) = contents::Entity::find_by_id(after)
            .one(state.db.conn())
            .await?
        else {
            return Err(ApiError::bad_input(
                "after",
                "not a cursor returned by this connection",
            ));
        };
        let at = anchor.submitted_at.unwrap_or(anchor.created_at);
        query = query.filter(
            Condition::any()
                .add(contents::Column::SubmittedAt.gt(at))
                .add(
                    Condition::all()
                        .add(contents::Column::SubmittedAt.eq(at))
                        .add(contents::Column::Id.gt(after)),
                ),
        );
    }
    Ok(query
        .order_by_asc(contents::Column::SubmittedAt)
        .order_by_asc(contents::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}

/// Every version of many pieces, oldest first (for the loader).
pub async fn versions_of<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
) -> Result<Vec<content_versions::Model>, ApiError> {
    Ok(content_versions::Entity::find()
        .filter(content_versions::Column::ContentId.is_in(ids.iter().copied()))
        .order_by_asc(content_versions::Column::ContentId)
        .order_by_asc(content_versions::Column::Version)
        .all(conn)
        .await?)
}

/// Every check of many pieces, oldest first (for the loader).
pub async fn checks_of<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
) -> Result<Vec<content_checks::Model>, ApiError> {
    Ok(content_checks::Entity::find()
        .filter(content_checks::Column::ContentId.is_in(ids.iter().copied()))
        .order_by_asc(content_checks::Column::Id)
        .all(conn)
        .await?)
}

/// Display names of authors and reviewers (for the loader).
pub async fn people<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>, ApiError> {
    Ok(entity::users::Entity::find()
        .filter(entity::users::Column::Id.is_in(ids.iter().copied()))
        .all(conn)
        .await?
        .into_iter()
        .map(|u| (u.id, u.display_name))
        .collect())
}

/// The audit trail of one piece, oldest first.
pub async fn trail(
    state: &AppState,
    id: Uuid,
) -> Result<Vec<entity::audit_events::Model>, ApiError> {
    audit::trail(state.db.conn(), SUBJECT, &id.to_string()).await
}

/// The findings stored by a check.
pub fn findings_of(check: &content_checks::Model) -> Result<Vec<Finding>, ApiError> {
    serde_json::from_str(&check.findings)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored findings unreadable: {e}")))
}

/// Loads and locks a piece for `action` by `viewer`: NOT_FOUND when they may not see it,
/// FORBIDDEN when they may not take the action, CONFLICT when its state does not allow
/// it.
async fn lock_for(
    txn: &DatabaseTransaction,
    who: Who,
    id: Uuid,
    action: ContentAction,
) -> Result<(contents::Model, ContentStatus), ApiError> {
    let mut query = contents::Entity::find_by_id(id);
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    let content = query.one(txn).await?.ok_or(ApiError::NotFound("content"))?;
    let status = status_of(&content)?;
    let actor = actor_of(Some(who), &content);
    if !actor.may_see(status) {
        return Err(ApiError::NotFound("content"));
    }
    actor
        .may(action)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    status.apply(action).map_err(conflict)?;
    Ok((content, status))
}

async fn insert_version(
    txn: &DatabaseTransaction,
    content: &contents::Model,
    editor: Uuid,
) -> Result<String, ApiError> {
    let hash = content_hash(
        &content.title,
        &content.body,
        &content.topic,
        &content.language,
    );
    content_versions::Model {
        content_id: content.id,
        version: content.version,
        title: content.title.clone(),
        body: content.body.clone(),
        topic: content.topic.clone(),
        language: content.language.clone(),
        content_hash: hash.clone(),
        editor_id: editor,
        created_at: content.updated_at,
    }
    .into_active_model()
    .insert(txn)
    .await?;
    Ok(hash)
}

async fn load_version(
    txn: &DatabaseTransaction,
    id: Uuid,
    version: i32,
) -> Result<content_versions::Model, ApiError> {
    content_versions::Entity::find_by_id((id, version))
        .one(txn)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("content {id} lacks version {version}")))
}

/// The hash of the current text, re-computed from both the piece's row and its version
/// row; they must agree with each other and with the hash stored at writing.
fn verified_hash(
    content: &contents::Model,
    version: &content_versions::Model,
) -> Result<String, ApiError> {
    let current = content_hash(
        &content.title,
        &content.body,
        &content.topic,
        &content.language,
    );
    let stored = content_hash(
        &version.title,
        &version.body,
        &version.topic,
        &version.language,
    );
    if current != stored || stored != version.content_hash {
        return Err(ApiError::Conflict(
            "the current text does not match its recorded version; nothing was changed".into(),
        ));
    }
    Ok(current)
}

/// The hash of the text about to be published, if and only if it is exactly the text
/// that was approved: the current version is the approved one, the piece's row and the
/// version row hold the same text, and that text hashes to the approved SHA-256.
fn publishable_hash(
    content: &contents::Model,
    version: &content_versions::Model,
) -> Result<String, ApiError> {
    let hash = verified_hash(content, version)?;
    if content.approved_version != Some(content.version)
        || content.approved_hash.as_deref() != Some(hash.as_str())
    {
        return Err(ApiError::Conflict(
            "the current text is not the approved text; submit it for review again".into(),
        ));
    }
    Ok(hash)
}

fn assess(rules: &RuleSet, content: &contents::Model) -> Assessment {
    rules.assess(
        &content.title,
        &content.body,
        &content.topic,
        &content.language,
    )
}

async fn insert_check(
    txn: &DatabaseTransaction,
    content: &contents::Model,
    rules: &RuleSet,
    assessment: &Assessment,
) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    let findings = serde_json::to_string(&assessment.findings).map_err(ApiError::internal)?;
    content_checks::Model {
        id,
        content_id: content.id,
        version: content.version,
        rules_fingerprint: rules.fingerprint.clone(),
        risk_score: i32::from(assessment.risk_score),
        blocked: assessment.blocked,
        senior_review_required: assessment.senior_review_required,
        findings,
        created_at: Utc::now(),
    }
    .into_active_model()
    .insert(txn)
    .await?;
    Ok(id)
}

fn event(content: &contents::Model, action: &str, previous: ContentStatus) -> Event {
    Event::ContentUpdate {
        content_id: content.id,
        author_id: content.author_id,
        action: action.to_owned(),
        status: content.status.clone(),
        previous_status: previous.as_str().to_owned(),
        version: content.version,
        at: content.updated_at,
    }
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approved_piece() -> (contents::Model, content_versions::Model) {
        let now = Utc::now();
        let id = Uuid::now_v7();
        let hash = content_hash("T", "Body", "RESEARCH", "en");
        let content = contents::Model {
            id,
            author_id: Uuid::now_v7(),
            status: "APPROVED".into(),
            title: "T".into(),
            body: "Body".into(),
            topic: "RESEARCH".into(),
            language: "en".into(),
            version: 2,
            reviewer_id: None,
            approved_version: Some(2),
            approved_hash: Some(hash.clone()),
            review_note: None,
            risk_score: Some(10),
            senior_review_required: false,
            submitted_at: Some(now),
            published_at: None,
            created_at: now,
            updated_at: now,
        };
        let version = content_versions::Model {
            content_id: id,
            version: 2,
            title: "T".into(),
            body: "Body".into(),
            topic: "RESEARCH".into(),
            language: "en".into(),
            content_hash: hash,
            editor_id: content.author_id,
            created_at: now,
        };
        (content, version)
    }

    #[test]
    fn only_the_exact_approved_text_is_publishable() {
        let (content, version) = approved_piece();
        assert_eq!(
            publishable_hash(&content, &version).ok(),
            content.approved_hash.clone()
        );
        // The piece's row changed behind the workflow's back.
        let mut tampered = content.clone();
        tampered.body.push('!');
        assert!(matches!(
            publishable_hash(&tampered, &version),
            Err(ApiError::Conflict(_))
        ));
        // The version row changed (it never should).
        let mut rewritten = version.clone();
        rewritten.title = "Other".into();
        assert!(publishable_hash(&content, &rewritten).is_err());
        // Both rows changed alike: still not the approved hash.
        let (mut both, mut both_version) = (content.clone(), version.clone());
        both.topic = "DERIVATIVES".into();
        both_version.topic = "DERIVATIVES".into();
        both_version.content_hash = content_hash("T", "Body", "DERIVATIVES", "en");
        assert!(publishable_hash(&both, &both_version).is_err());
        // A later version than the approved one.
        let mut later = content.clone();
        later.version = 3;
        let mut later_version = version.clone();
        later_version.version = 3;
        assert!(publishable_hash(&later, &later_version).is_err());
        // No approval at all.
        let mut unapproved = content;
        unapproved.approved_hash = None;
        assert!(publishable_hash(&unapproved, &version).is_err());
    }

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(escape_like("plain"), "plain");
    }
}
