//! Advisor content and its compliance workflow: writing, automated checks, review,
//! publication, the review queue, rules administration and live status updates.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::access::api_key;
use super::accounts::parse_id;
use super::api_keys::ApiScope;
use super::audit::AuditEvent;
use super::context::ContextExt;
use super::pagination;
use super::scalars::DateTime;
use crate::db::Db;
use crate::domain::compliance_rules as rules;
use crate::domain::content_workflow::{self as workflow, ContentAction};
use crate::error::ApiError;
use crate::events::Event;
use crate::service::content as service;

/// Where a piece of content stands in the compliance workflow.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ContentStatus {
    /// Being written by its author; editable.
    Draft,
    /// Submitted; the automated checks run at once, so this is seldom seen.
    Submitted,
    /// A blocking finding stopped it (see `findings`); `reviseContent` reopens it.
    AutoRejected,
    /// Waiting for a compliance officer.
    InReview,
    /// A compliance officer asked for changes (see `reviewNote`); editable.
    ChangesRequested,
    /// Approved: exactly this version may be published.
    Approved,
    /// Refused by a compliance officer (see `reviewNote`); final.
    Rejected,
    /// Visible to every user.
    Published,
    /// Withdrawn from publication; final.
    Archived,
}

impl From<workflow::ContentStatus> for ContentStatus {
    fn from(status: workflow::ContentStatus) -> Self {
        use workflow::ContentStatus as S;
        match status {
            S::Draft => ContentStatus::Draft,
            S::Submitted => ContentStatus::Submitted,
            S::AutoRejected => ContentStatus::AutoRejected,
            S::InReview => ContentStatus::InReview,
            S::ChangesRequested => ContentStatus::ChangesRequested,
            S::Approved => ContentStatus::Approved,
            S::Rejected => ContentStatus::Rejected,
            S::Published => ContentStatus::Published,
            S::Archived => ContentStatus::Archived,
        }
    }
}

impl From<ContentStatus> for workflow::ContentStatus {
    fn from(status: ContentStatus) -> Self {
        use workflow::ContentStatus as S;
        match status {
            ContentStatus::Draft => S::Draft,
            ContentStatus::Submitted => S::Submitted,
            ContentStatus::AutoRejected => S::AutoRejected,
            ContentStatus::InReview => S::InReview,
            ContentStatus::ChangesRequested => S::ChangesRequested,
            ContentStatus::Approved => S::Approved,
            ContentStatus::Rejected => S::Rejected,
            ContentStatus::Published => S::Published,
            ContentStatus::Archived => S::Archived,
        }
    }
}

fn parse_status(value: &str) -> ContentStatus {
    value
        .parse::<workflow::ContentStatus>()
        .map(Into::into)
        .unwrap_or(ContentStatus::Draft)
}

/// How serious a compliance finding is.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ComplianceSeverity {
    /// Worth a look; holds nothing up.
    Info,
    /// A reviewer must judge it.
    Warning,
    /// Stops the piece: AUTO_REJECTED.
    Blocking,
}

impl From<rules::Severity> for ComplianceSeverity {
    fn from(severity: rules::Severity) -> Self {
        match severity {
            rules::Severity::Info => ComplianceSeverity::Info,
            rules::Severity::Warning => ComplianceSeverity::Warning,
            rules::Severity::Blocking => ComplianceSeverity::Blocking,
        }
    }
}

/// Which field of a piece a finding points into.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ContentField {
    /// The title.
    Title,
    /// The body.
    Body,
}

/// How a compliance rule matches.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ComplianceRuleKind {
    /// Each occurrence of a phrase or pattern is a finding.
    Flag,
    /// The body must contain one of the rule's `satisfiedBy` phrases.
    Require,
}

/// One problem the automated checks found.
#[derive(SimpleObject, Clone)]
pub struct ComplianceFinding {
    /// The rule's id, e.g. `guarantee-language` (see `complianceRules`).
    rule: String,
    /// How serious it is.
    severity: ComplianceSeverity,
    /// What is wrong and how to fix it.
    message: String,
    /// The field the span is in (BODY unless the title is at fault).
    field: ContentField,
    /// Start of the offending text in `field`, in UTF-16 code units (what JavaScript's
    /// `String.prototype.slice` takes), inclusive.
    start: i32,
    /// End of the offending text, in UTF-16 code units, exclusive. Equal to `start` (at
    /// the end of the body) when the finding is about something missing.
    end: i32,
}

impl From<rules::Finding> for ComplianceFinding {
    fn from(f: rules::Finding) -> Self {
        ComplianceFinding {
            rule: f.rule,
            severity: f.severity.into(),
            message: f.message,
            field: match f.field {
                rules::Field::Title => ContentField::Title,
                rules::Field::Body => ContentField::Body,
            },
            start: i32::try_from(f.start).unwrap_or(i32::MAX),
            end: i32::try_from(f.end).unwrap_or(i32::MAX),
        }
    }
}

/// What the automated checks say about a text.
#[derive(SimpleObject)]
pub struct ComplianceAssessment {
    /// Every finding, in text order (title first).
    findings: Vec<ComplianceFinding>,
    /// Risk score 0-100 from the findings' weights and the topic.
    risk_score: i32,
    /// Whether a BLOCKING finding would AUTO_REJECT the text.
    blocked: bool,
    /// Whether the score reaches the senior-review threshold.
    senior_review_required: bool,
}

impl From<rules::Assessment> for ComplianceAssessment {
    fn from(a: rules::Assessment) -> Self {
        ComplianceAssessment {
            findings: a.findings.into_iter().map(Into::into).collect(),
            risk_score: i32::from(a.risk_score),
            blocked: a.blocked,
            senior_review_required: a.senior_review_required,
        }
    }
}

/// An author or reviewer, as shown on content: no contact details.
#[derive(SimpleObject, Clone)]
pub struct ContentPerson {
    /// The user's id.
    id: ID,
    /// The user's display name.
    display_name: String,
}

/// Loads display names of authors and reviewers.
pub struct ContentPersonLoader(pub Db);

impl Loader<Uuid> for ContentPersonLoader {
    type Value = String;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, String>, Self::Error> {
        Ok(service::people(self.0.conn(), keys)
            .await
            .map_err(Arc::new)?
            .into_iter()
            .collect())
    }
}

/// Loads every version of many pieces, oldest first.
pub struct ContentVersionsLoader(pub Db);

impl Loader<Uuid> for ContentVersionsLoader {
    type Value = Vec<entity::content_versions::Model>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let mut out: HashMap<Uuid, Self::Value> = HashMap::new();
        for v in service::versions_of(self.0.conn(), keys)
            .await
            .map_err(Arc::new)?
        {
            out.entry(v.content_id).or_default().push(v);
        }
        Ok(out)
    }
}

/// Loads every automated check of many pieces, oldest first.
pub struct ContentChecksLoader(pub Db);

impl Loader<Uuid> for ContentChecksLoader {
    type Value = Vec<entity::content_checks::Model>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let mut out: HashMap<Uuid, Self::Value> = HashMap::new();
        for c in service::checks_of(self.0.conn(), keys)
            .await
            .map_err(Arc::new)?
        {
            out.entry(c.content_id).or_default().push(c);
        }
        Ok(out)
    }
}

fn loader_error(error: Arc<ApiError>) -> async_graphql::Error {
    ApiError::internal(anyhow::anyhow!("loader failed: {error}")).into()
}

async fn person(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<ContentPerson>> {
    let name = ctx
        .data_unchecked::<DataLoader<ContentPersonLoader>>()
        .load_one(id)
        .await
        .map_err(loader_error)?;
    // An erased account leaves its content behind, without a name.
    Ok(Some(ContentPerson {
        id: ID(id.to_string()),
        display_name: name.unwrap_or_default(),
    }))
}

/// The latest check of one version, if any.
async fn latest_check(
    ctx: &Context<'_>,
    content_id: Uuid,
    version: i32,
) -> async_graphql::Result<Option<entity::content_checks::Model>> {
    let checks = ctx
        .data_unchecked::<DataLoader<ContentChecksLoader>>()
        .load_one(content_id)
        .await
        .map_err(loader_error)?
        .unwrap_or_default();
    Ok(checks.into_iter().rev().find(|c| c.version == version))
}

fn findings(
    check: Option<&entity::content_checks::Model>,
) -> async_graphql::Result<Vec<ComplianceFinding>> {
    Ok(match check {
        Some(check) => service::findings_of(check)?
            .into_iter()
            .map(Into::into)
            .collect(),
        None => Vec::new(),
    })
}

/// A piece of advisor content (research or market commentary).
pub struct Content(pub entity::contents::Model);

impl Content {
    /// Versions, findings, scores and the audit trail are for the author, compliance
    /// officers and admins only.
    fn record_guard(&self, ctx: &Context<'_>) -> Result<(), ApiError> {
        if service::actor(ctx.request().viewer.as_ref(), &self.0).may_see_record() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only the author and compliance staff see the review record".into(),
            ))
        }
    }
}

/// A piece of advisor content (research or market commentary). Fields marked "review
/// record" answer `FORBIDDEN` to anyone but the author, compliance officers and admins.
#[Object]
impl Content {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The current version's title.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// The current version's body, exactly as written.
    async fn body(&self) -> &str {
        &self.0.body
    }

    /// The topic, upper case (e.g. `MARKET_COMMENTARY`); it weighs in the risk score.
    async fn topic(&self) -> &str {
        &self.0.topic
    }

    /// The language tag (e.g. `en`, `en-GB`).
    async fn language(&self) -> &str {
        &self.0.language
    }

    /// Where the piece stands.
    async fn status(&self) -> ContentStatus {
        parse_status(&self.0.status)
    }

    /// The current version number: 1 at creation, one more for every edit.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// The author.
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ContentPerson>> {
        person(ctx, self.0.author_id).await
    }

    /// The compliance officer who last decided on the piece; null before any decision.
    async fn reviewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ContentPerson>> {
        match self.0.reviewer_id {
            Some(id) => person(ctx, id).await,
            None => Ok(None),
        }
    }

    /// Review record: the last reviewer's note (changes requested, approval) or reason
    /// (rejection); null when there is none or after a new submission.
    async fn review_note(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<&str>> {
        self.record_guard(ctx)?;
        Ok(self.0.review_note.as_deref())
    }

    /// Review record: the risk score (0-100) of the current version from its latest
    /// automated check; null until the version has been submitted.
    async fn compliance_score(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        self.record_guard(ctx)?;
        Ok(self.0.risk_score)
    }

    /// Review record: whether the current version's score calls for senior review.
    async fn senior_review_required(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        self.record_guard(ctx)?;
        Ok(self.0.senior_review_required)
    }

    /// Review record: the findings of the current version's latest automated check;
    /// empty until it has been submitted.
    async fn findings(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ComplianceFinding>> {
        self.record_guard(ctx)?;
        let check = latest_check(ctx, self.0.id, self.0.version).await?;
        findings(check.as_ref())
    }

    /// Review record: the version that was approved; null unless approved and not
    /// revised since.
    async fn approved_version(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        self.record_guard(ctx)?;
        Ok(self.0.approved_version)
    }

    /// Review record: the SHA-256 (hex) of the approved version's canonical encoding
    /// (see `ContentVersion.contentHash`); publishing requires the current text to hash
    /// to exactly this.
    async fn approved_hash(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<&str>> {
        self.record_guard(ctx)?;
        Ok(self.0.approved_hash.as_deref())
    }

    /// Review record: every version, oldest first; each is immutable.
    async fn versions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ContentVersion>> {
        self.record_guard(ctx)?;
        let versions = ctx
            .data_unchecked::<DataLoader<ContentVersionsLoader>>()
            .load_one(self.0.id)
            .await
            .map_err(loader_error)?
            .unwrap_or_default();
        Ok(versions.into_iter().map(ContentVersion).collect())
    }

    /// Review record: every audited action on the piece, oldest first.
    async fn audit_trail(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AuditEvent>> {
        self.record_guard(ctx)?;
        Ok(service::trail(ctx.state(), self.0.id)
            .await?
            .into_iter()
            .map(AuditEvent::from)
            .collect())
    }

    /// When the piece was last submitted (its age in the review queue); null before.
    async fn submitted_at(&self) -> Option<DateTime> {
        self.0.submitted_at.map(DateTime)
    }

    /// When the piece was created.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// When the piece last changed (text or state).
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }

    /// When the piece was published; null if it never was.
    async fn published_at(&self) -> Option<DateTime> {
        self.0.published_at.map(DateTime)
    }
}

/// One immutable version of a piece's text.
pub struct ContentVersion(pub entity::content_versions::Model);

/// One immutable version of a piece's text.
#[Object]
impl ContentVersion {
    /// The version number, from 1.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// The title of this version.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// The body of this version, exactly as written.
    async fn body(&self) -> &str {
        &self.0.body
    }

    /// The topic of this version.
    async fn topic(&self) -> &str {
        &self.0.topic
    }

    /// The language of this version.
    async fn language(&self) -> &str {
        &self.0.language
    }

    /// SHA-256 (hex) of the version's canonical encoding: the UTF-8 bytes of
    /// `tradegraph.content.v1\n`, then title, body, topic and language, each as its
    /// UTF-8 byte length (8 bytes, big endian) followed by its bytes.
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }

    /// Who wrote this version.
    async fn editor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ContentPerson>> {
        person(ctx, self.0.editor_id).await
    }

    /// When this version was written.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Risk score of this version's latest automated check; null if never checked.
    async fn compliance_score(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        let check = latest_check(ctx, self.0.content_id, self.0.version).await?;
        Ok(check.map(|c| c.risk_score))
    }

    /// Whether that score called for senior review; false if never checked.
    async fn senior_review_required(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let check = latest_check(ctx, self.0.content_id, self.0.version).await?;
        Ok(check.is_some_and(|c| c.senior_review_required))
    }

    /// Findings of this version's latest automated check; empty if never checked.
    async fn findings(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ComplianceFinding>> {
        let check = latest_check(ctx, self.0.content_id, self.0.version).await?;
        findings(check.as_ref())
    }

    /// SHA-256 of the rules file that checked this version last; null if never checked.
    async fn rules_fingerprint(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let check = latest_check(ctx, self.0.content_id, self.0.version).await?;
        Ok(check.map(|c| c.rules_fingerprint))
    }
}

/// A status change of a piece the subscriber authored or may review.
pub struct ContentEvent {
    content_id: Uuid,
    action: String,
    status: ContentStatus,
    previous_status: ContentStatus,
    version: i32,
    at: chrono::DateTime<chrono::Utc>,
}

/// A status change (or new version) of a piece the subscriber authored or may review.
#[Object]
impl ContentEvent {
    /// The piece's id.
    async fn content_id(&self) -> ID {
        ID(self.content_id.to_string())
    }

    /// The audited action, e.g. `content.approved`, `content.auto_rejected`,
    /// `content.edited`.
    async fn action(&self) -> &str {
        &self.action
    }

    /// The status after the change.
    async fn status(&self) -> ContentStatus {
        self.status
    }

    /// The status before the change.
    async fn previous_status(&self) -> ContentStatus {
        self.previous_status
    }

    /// The piece's version after the change.
    async fn version(&self) -> i32 {
        self.version
    }

    /// When the change happened.
    async fn at(&self) -> DateTime {
        DateTime(self.at)
    }

    /// The piece as it is now; null if the subscriber may no longer see it.
    async fn content(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Content>> {
        let viewer = ctx.request().viewer.as_ref();
        Ok(service::find_visible(ctx.state(), viewer, self.content_id)
            .await?
            .map(Content))
    }
}

/// One automated compliance rule, as loaded from the rules file.
#[derive(SimpleObject)]
pub struct ComplianceRule {
    /// Stable id, e.g. `guarantee-language`.
    id: String,
    /// FLAG (occurrences are findings) or REQUIRE (absence is a finding).
    kind: ComplianceRuleKind,
    /// Severity of its findings.
    severity: ComplianceSeverity,
    /// What one finding adds to the risk score (0-100).
    weight: i32,
    /// The message its findings carry.
    message: String,
    /// Why the rule exists.
    description: String,
    /// Phrases that trigger it (whole words, case- and whitespace-insensitive).
    phrases: Vec<String>,
    /// Regular expressions that trigger it (on lower-cased, whitespace-collapsed text).
    patterns: Vec<String>,
    /// Phrases inside which a trigger does not count.
    exceptions: Vec<String>,
    /// Phrases whose presence in the body satisfies the rule.
    satisfied_by: Vec<String>,
    /// Whether negated triggers ("not guaranteed") are ignored.
    ignore_negated: bool,
    /// Whether triggers between double quotes are ignored.
    ignore_quoted: bool,
    /// Languages it applies to (primary subtags); empty for all.
    languages: Vec<String>,
}

/// The risk a topic adds on its own.
#[derive(SimpleObject)]
pub struct TopicWeight {
    /// The topic.
    topic: String,
    /// Its weight (0-100).
    weight: i32,
}

/// The compliance rules in force.
#[derive(SimpleObject)]
pub struct ComplianceRuleSet {
    /// The file they were read from, or `built-in`.
    source: String,
    /// SHA-256 (hex) of the file; recorded with every check.
    fingerprint: String,
    /// When they were loaded.
    loaded_at: DateTime,
    /// Scores at or above this flag a version for senior review.
    senior_review_threshold: i32,
    /// Weight of a topic not listed in `topicWeights`.
    default_topic_weight: i32,
    /// Weights of the listed topics.
    topic_weights: Vec<TopicWeight>,
    /// The rules, in file order.
    rules: Vec<ComplianceRule>,
}

impl From<crate::service::compliance::LoadedRules> for ComplianceRuleSet {
    fn from(loaded: crate::service::compliance::LoadedRules) -> Self {
        let set = &loaded.rules;
        ComplianceRuleSet {
            source: loaded.source.clone(),
            fingerprint: set.fingerprint.clone(),
            loaded_at: DateTime(loaded.loaded_at),
            senior_review_threshold: i32::from(set.senior_review_threshold),
            default_topic_weight: i32::from(set.default_topic_weight),
            topic_weights: set
                .topics
                .iter()
                .map(|(topic, weight)| TopicWeight {
                    topic: topic.clone(),
                    weight: i32::from(*weight),
                })
                .collect(),
            rules: set
                .rules
                .iter()
                .map(|r| ComplianceRule {
                    id: r.id.clone(),
                    kind: match r.kind {
                        rules::RuleKind::Flag => ComplianceRuleKind::Flag,
                        rules::RuleKind::Require => ComplianceRuleKind::Require,
                    },
                    severity: r.severity.into(),
                    weight: i32::from(r.weight),
                    message: r.message.clone(),
                    description: r.description.clone(),
                    phrases: r.phrases.clone(),
                    patterns: r.patterns.clone(),
                    exceptions: r.exceptions.clone(),
                    satisfied_by: r.satisfied_by.clone(),
                    ignore_negated: r.ignore_negated,
                    ignore_quoted: r.ignore_quoted,
                    languages: r.languages.clone(),
                })
                .collect(),
        }
    }
}

/// A new piece of content.
#[derive(InputObject)]
pub struct CreateContentInput {
    /// 1 to 200 characters (trimmed).
    title: String,
    /// The text, kept exactly as written; not blank, at most 50 000 characters.
    body: String,
    /// A topic such as `MARKET_COMMENTARY` or `TRADING_IDEAS` (letters, digits, spaces,
    /// dashes, underscores; stored upper case); some topics weigh more in the risk score.
    topic: String,
    /// A language tag such as `en` or `en-GB` (default `en`); the shipped rules check
    /// English text only.
    #[graphql(default_with = "String::from(\"en\")")]
    language: String,
}

impl CreateContentInput {
    fn into_new(self) -> service::NewContent {
        service::NewContent {
            title: self.title,
            body: self.body,
            topic: self.topic,
            language: self.language,
        }
    }
}

/// Changes to a piece's text; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateContentInput {
    /// New title (1 to 200 characters).
    title: Option<String>,
    /// New body.
    body: Option<String>,
    /// New topic.
    topic: Option<String>,
    /// New language tag.
    language: Option<String>,
}

/// Filters for `contents`; all given filters apply together.
#[derive(InputObject, Default)]
pub struct ContentFilter {
    /// Only pieces in this status.
    status: Option<ContentStatus>,
    /// Only pieces by this author.
    author_id: Option<ID>,
    /// Only pieces on this topic (normalised like `CreateContentInput.topic`).
    topic: Option<String>,
    /// Only pieces whose title or body contains this text (case-insensitive for ASCII
    /// letters; at most 200 characters).
    search: Option<String>,
}

fn connection(
    rows: Vec<entity::contents::Model>,
    page: &pagination::Page,
) -> Connection<String, Content> {
    let mut rows = rows;
    let has_next = rows.len() as u64 > page.limit;
    rows.truncate(page.limit as usize);
    let mut connection = Connection::new(page.after.is_some(), has_next);
    connection.edges.extend(
        rows.into_iter()
            .map(|c| Edge::new(pagination::encode_cursor(c.id), Content(c))),
    );
    connection
}

#[derive(Default)]
pub struct ContentQuery;

#[Object]
impl ContentQuery {
    /// One piece of content: null for an unknown id and for a piece the viewer may not
    /// see (others' unpublished pieces). Authors see their own, compliance officers and
    /// admins see all, everyone (even anonymous) sees PUBLISHED pieces.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn content(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Content>> {
        let Ok(id) = parse_id(&id, "content") else {
            return Ok(None);
        };
        let viewer = ctx.request().viewer.as_ref();
        Ok(service::find_visible(ctx.state(), viewer, id)
            .await?
            .map(Content))
    }

    /// The pieces the viewer may see (as for `content`), newest first. `first` is at
    /// most 200; `BAD_USER_INPUT` for an invalid filter or cursor.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn contents(
        &self,
        ctx: &Context<'_>,
        filter: Option<ContentFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, Content>> {
        let viewer = ctx.request().viewer.as_ref();
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let author_id = match &filter.author_id {
            Some(id) => Some(
                Uuid::parse_str(id.as_str())
                    .map_err(|_| ApiError::bad_input("filter.authorId", "not a user id"))?,
            ),
            None => None,
        };
        let filter = service::ContentFilter {
            status: filter.status.map(Into::into),
            author_id,
            topic: filter.topic,
            search: filter.search,
        };
        let rows = service::list(ctx.state(), viewer, &filter, page.after, page.limit + 1).await?;
        Ok(connection(rows, &page))
    }

    /// Pieces IN_REVIEW waiting for a decision, oldest submission first, without the
    /// viewer's own pieces (nobody reviews their own work). `seniorOnly` keeps those
    /// flagged for senior review. COMPLIANCE_OFFICER only (`FORBIDDEN` otherwise).
    async fn review_queue(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] senior_only: bool,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Content>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, None, None)?;
        let rows =
            service::review_queue(ctx.state(), viewer, senior_only, page.after, page.limit + 1)
                .await?;
        Ok(connection(rows, &page))
    }

    /// The automated compliance rules in force. ADMIN only.
    async fn compliance_rules(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<ComplianceRuleSet> {
        ctx.viewer_with_role(entity::Role::Admin)?;
        Ok(ctx.state().compliance_rules.current().into())
    }
}

#[derive(Default)]
pub struct ContentMutation;

#[Object]
impl ContentMutation {
    /// Creates a piece in DRAFT as its version 1. ADVISOR only (`FORBIDDEN`);
    /// `BAD_USER_INPUT` naming `input.title`, `input.body`, `input.topic` or
    /// `input.language`.
    async fn create_content(
        &self,
        ctx: &Context<'_>,
        input: CreateContentInput,
    ) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        Ok(Content(
            service::create(ctx.state(), viewer, input.into_new()).await?,
        ))
    }

    /// Changes the text as a new immutable version; only in DRAFT or
    /// CHANGES_REQUESTED (`CONFLICT` naming the current state otherwise), only by the
    /// author (`FORBIDDEN`); `NOT_FOUND` for a piece the viewer may not see. A change
    /// that changes nothing writes no version.
    async fn update_content(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateContentInput,
    ) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        let edit = service::ContentEdit {
            title: input.title,
            body: input.body,
            topic: input.topic,
            language: input.language,
        };
        Ok(Content(
            service::update(ctx.state(), viewer, id, edit).await?,
        ))
    }

    /// Submits the current version (author, from DRAFT or CHANGES_REQUESTED): the
    /// automated rules and the risk score run at once and are stored with the version;
    /// a BLOCKING finding leaves the piece AUTO_REJECTED (see `findings`), otherwise it
    /// goes IN_REVIEW. `CONFLICT` naming the current state from any other state.
    async fn submit_content(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(service::submit(ctx.state(), viewer, id).await?))
    }

    /// Approves the piece IN_REVIEW, recording its version and the SHA-256 of its exact
    /// text: only that text can be published. COMPLIANCE_OFFICER who is not the author
    /// (`FORBIDDEN`); `CONFLICT` naming the current state when not IN_REVIEW.
    async fn approve_content(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(
            service::decide(ctx.state(), viewer, id, service::Decision::Approve, note).await?,
        ))
    }

    /// Sends the piece IN_REVIEW back to its author as CHANGES_REQUESTED. `note` is
    /// required (`BAD_USER_INPUT` naming `note`); roles and states as for
    /// `approveContent`.
    async fn request_content_changes(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: String,
    ) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(
            service::decide(
                ctx.state(),
                viewer,
                id,
                service::Decision::RequestChanges,
                Some(note),
            )
            .await?,
        ))
    }

    /// Rejects the piece IN_REVIEW for good (REJECTED). `reason` is required
    /// (`BAD_USER_INPUT` naming `reason`); roles and states as for `approveContent`.
    async fn reject_content(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(
            service::decide(
                ctx.state(),
                viewer,
                id,
                service::Decision::Reject,
                Some(reason),
            )
            .await?,
        ))
    }

    /// Takes an AUTO_REJECTED or APPROVED piece back to DRAFT so its author can edit it;
    /// any approval is dropped, so the new text is reviewed again. Author only
    /// (`FORBIDDEN`); `CONFLICT` naming the current state from any other state.
    async fn revise_content(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(
            service::advance(ctx.state(), viewer, id, ContentAction::Revise).await?,
        ))
    }

    /// Publishes an APPROVED piece: its current text must hash to exactly the approved
    /// SHA-256 (`CONFLICT` otherwise, and naming the current state when not APPROVED).
    /// The author or any compliance officer (`FORBIDDEN` for others).
    async fn publish_content(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(
            service::advance(ctx.state(), viewer, id, ContentAction::Publish).await?,
        ))
    }

    /// Withdraws a PUBLISHED piece (ARCHIVED, final). The author, any compliance
    /// officer or an admin (`FORBIDDEN` for others); `CONFLICT` naming the current state
    /// when not PUBLISHED.
    async fn archive_content(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Content> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "content")?;
        Ok(Content(
            service::advance(ctx.state(), viewer, id, ContentAction::Archive).await?,
        ))
    }

    /// Runs the automated rules and the risk score over a text without storing
    /// anything, so an author can fix a draft before submitting. ADVISOR or
    /// COMPLIANCE_OFFICER (`FORBIDDEN` otherwise).
    async fn check_content_compliance(
        &self,
        ctx: &Context<'_>,
        input: CreateContentInput,
    ) -> async_graphql::Result<ComplianceAssessment> {
        let viewer = ctx.viewer()?;
        if !viewer.has_role(entity::Role::Advisor)
            && !viewer.has_role(entity::Role::ComplianceOfficer)
        {
            return Err(ApiError::Forbidden(
                "this needs the ADVISOR or COMPLIANCE_OFFICER role".into(),
            )
            .into());
        }
        Ok(service::preview(ctx.state(), &input.into_new())?.into())
    }

    /// Re-reads the compliance rules file. ADMIN only. A file that does not load is
    /// refused with `CONFLICT` and the reason, and the rules in force stay.
    async fn reload_compliance_rules(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<ComplianceRuleSet> {
        let viewer = ctx.viewer()?;
        Ok(service::reload_rules(ctx.state(), viewer).await?.into())
    }
}

#[derive(Default)]
pub struct ContentSubscription;

#[Subscription]
impl ContentSubscription {
    /// Status changes and new versions of pieces the subscriber authored, and, for
    /// compliance officers, of every piece (those they may review). Live only: events
    /// while disconnected are not replayed (the audit trail has them).
    /// `UNAUTHENTICATED` without a signed-in viewer.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn content_updates(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = ContentEvent>, ApiError> {
        let viewer = ctx.viewer()?;
        let me = viewer.user_id();
        let officer = viewer.has_role(entity::Role::ComplianceOfficer);
        let receiver = ctx.state().events.subscribe();
        Ok(BroadcastStream::new(receiver).filter_map(move |event| {
            let item = match event.as_deref() {
                Ok(Event::ContentUpdate {
                    content_id,
                    author_id,
                    action,
                    status,
                    previous_status,
                    version,
                    at,
                }) if *author_id == me || officer => Some(ContentEvent {
                    content_id: *content_id,
                    action: action.clone(),
                    status: parse_status(status),
                    previous_status: parse_status(previous_status),
                    version: *version,
                    at: *at,
                }),
                _ => None,
            };
            std::future::ready(item)
        }))
    }
}
