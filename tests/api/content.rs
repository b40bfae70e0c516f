//! Advisor content through compliance: lifecycle, roles and four eyes, automated
//! findings, approval bound to the exact text, queues, search, live updates, audit.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, Frame, TestApp};

both_backends!(
    content_goes_through_every_state_with_the_right_roles,
    illegal_transitions_are_conflicts_naming_the_state,
    authors_never_review_their_own_content_and_roles_are_enforced,
    edits_after_approval_force_a_new_review,
    automated_checks_reject_with_findings_and_flag_senior_review,
    queues_search_and_visibility,
    content_updates_reach_authors_and_reviewers,
    a_text_changed_behind_the_workflow_is_never_published,
    admins_list_and_reload_the_rules,
);

/// A piece the shipped rules pass (with a risk warning).
const CLEAN: &str = "Bitcoin traded sideways this week. Risk warning: crypto assets are volatile and you could lose money.";

const FIELDS: &str = "id title body topic language status version author { id displayName } reviewer { id } reviewNote complianceScore seniorReviewRequired findings { rule severity message field start end } approvedVersion approvedHash versions { version title body topic language contentHash editor { id } complianceScore findings { rule } } auditTrail { action actorId ownerId subjectType subjectId details } createdAt updatedAt publishedAt submittedAt";

struct Cast {
    app: TestApp,
    admin: Auth,
    advisor: Auth,
    officer: Auth,
    user: Auth,
}

async fn grant(app: &TestApp, admin: &Auth, user: &Auth, role: &str) {
    let body = app
        .gql(
            "mutation($u: ID!, $r: Role!) { grantRole(userId: $u, role: $r) { id } }",
            json!({"u": user.user_id, "r": role}),
            Some(&admin.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

async fn cast(backend: Backend) -> Option<Cast> {
    let (app, admin) = TestApp::spawn_with_admin(backend).await?;
    let advisor = app.register(&email("advisor")).await;
    let officer = app.register(&email("officer")).await;
    let user = app.register(&email("user")).await;
    grant(&app, &admin, &advisor, "ADVISOR").await;
    grant(&app, &admin, &officer, "COMPLIANCE_OFFICER").await;
    Some(Cast {
        app,
        admin,
        advisor,
        officer,
        user,
    })
}

impl Cast {
    async fn call(&self, who: &Auth, query: &str, vars: Value) -> Value {
        self.app.gql(query, vars, Some(&who.access)).await
    }

    async fn create(&self, who: &Auth, title: &str, body: &str, topic: &str) -> Value {
        let out = self
            .call(
                who,
                &format!("mutation($i: CreateContentInput!) {{ createContent(input: $i) {{ {FIELDS} }} }}"),
                json!({"i": {"title": title, "body": body, "topic": topic}}),
            )
            .await;
        assert!(out["errors"].is_null(), "{out}");
        out["data"]["createContent"].clone()
    }

    /// Runs a mutation `name(id: $id, ...)` and returns the whole response.
    async fn act(&self, who: &Auth, name: &str, id: &str, extra: &str, vars: Value) -> Value {
        let mut variables = vars;
        variables["id"] = json!(id);
        let decl = match name {
            _ if !extra.contains('$') => "$id: ID!",
            "approveContent" => "$id: ID!, $note: String",
            "requestContentChanges" => "$id: ID!, $note: String!",
            "rejectContent" => "$id: ID!, $reason: String!",
            "updateContent" => "$id: ID!, $input: UpdateContentInput!",
            _ => "$id: ID!",
        };
        self.call(
            who,
            &format!("mutation({decl}) {{ {name}(id: $id{extra}) {{ {FIELDS} }} }}"),
            variables,
        )
        .await
    }

    async fn ok(&self, who: &Auth, name: &str, id: &str, extra: &str, vars: Value) -> Value {
        let out = self.act(who, name, id, extra, vars).await;
        assert!(out["errors"].is_null(), "{name}: {out}");
        out["data"][name].clone()
    }

    async fn edit(&self, who: &Auth, id: &str, input: Value) -> Value {
        self.act(
            who,
            "updateContent",
            id,
            ", input: $input",
            json!({"input": input}),
        )
        .await
    }

    async fn get(&self, who: Option<&Auth>, id: &str) -> Value {
        let out = self
            .app
            .gql(
                "query($id: ID!) { content(id: $id) { id title status version } }",
                json!({"id": id}),
                who.map(|a| a.access.as_str()),
            )
            .await;
        assert!(out["errors"].is_null(), "{out}");
        out["data"]["content"].clone()
    }

    async fn full(&self, who: &Auth, id: &str) -> Value {
        let out = self
            .call(
                who,
                &format!("query($id: ID!) {{ content(id: $id) {{ {FIELDS} }} }}"),
                json!({"id": id}),
            )
            .await;
        assert!(out["errors"].is_null(), "{out}");
        out["data"]["content"].clone()
    }
}

fn canonical_hash(title: &str, body: &str, topic: &str, language: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tradegraph.content.v1\n");
    for field in [title, body, topic, language] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn actions(content: &Value) -> Vec<String> {
    content["auditTrail"]
        .as_array()
        .expect("audit trail")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_conflict(body: &Value, state: &str) {
    assert_eq!(code(body), "CONFLICT", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("state {state}")),
        "the refusal names {state}: {message}"
    );
}

async fn content_goes_through_every_state_with_the_right_roles(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    let draft = c
        .create(
            &c.advisor,
            "Weekly wrap",
            "First draft. You could lose money.",
            "market commentary",
        )
        .await;
    let id = draft["id"].as_str().expect("id").to_owned();
    assert_eq!(draft["status"], "DRAFT");
    assert_eq!(draft["version"], 1);
    assert_eq!(draft["topic"], "MARKET_COMMENTARY");
    assert_eq!(draft["language"], "en");
    assert_eq!(draft["author"]["id"], c.advisor.user_id.as_str());
    assert_eq!(draft["complianceScore"], Value::Null);

    // Each edit is a new version.
    let v2 = c.edit(&c.advisor, &id, json!({"body": CLEAN})).await;
    assert_eq!(v2["data"]["updateContent"]["version"], 2, "{v2}");
    // An edit that changes nothing writes nothing.
    let same = c.edit(&c.advisor, &id, json!({"body": CLEAN})).await;
    assert_eq!(same["data"]["updateContent"]["version"], 2, "{same}");

    let submitted = c.ok(&c.advisor, "submitContent", &id, "", json!({})).await;
    assert_eq!(submitted["status"], "IN_REVIEW");
    assert_eq!(
        submitted["complianceScore"], 5,
        "MARKET_COMMENTARY weighs 5"
    );
    assert_eq!(submitted["findings"], json!([]));
    assert_eq!(submitted["seniorReviewRequired"], false);
    assert!(submitted["submittedAt"].is_string());

    // A note is required to send it back.
    let blank = c
        .act(
            &c.officer,
            "requestContentChanges",
            &id,
            ", note: $note",
            json!({"note": "  "}),
        )
        .await;
    assert_eq!(code(&blank), "BAD_USER_INPUT");
    assert_eq!(blank["errors"][0]["extensions"]["field"], "note");
    let changes = c
        .ok(
            &c.officer,
            "requestContentChanges",
            &id,
            ", note: $note",
            json!({"note": "Name the data source."}),
        )
        .await;
    assert_eq!(changes["status"], "CHANGES_REQUESTED");
    assert_eq!(changes["reviewNote"], "Name the data source.");
    assert_eq!(changes["reviewer"]["id"], c.officer.user_id.as_str());

    let v3_body = format!("{CLEAN} Source: exchange data.");
    let v3 = c
        .edit(
            &c.advisor,
            &id,
            json!({"body": v3_body, "title": "Weekly wrap, sourced"}),
        )
        .await;
    assert_eq!(v3["data"]["updateContent"]["version"], 3, "{v3}");
    let again = c.ok(&c.advisor, "submitContent", &id, "", json!({})).await;
    assert_eq!(again["status"], "IN_REVIEW");

    // Before publication, a plain user and another advisor do not see it.
    assert_eq!(c.get(Some(&c.user), &id).await, Value::Null);
    assert_eq!(c.get(None, &id).await, Value::Null);

    let approved = c
        .ok(
            &c.officer,
            "approveContent",
            &id,
            ", note: $note",
            json!({"note": null}),
        )
        .await;
    assert_eq!(approved["status"], "APPROVED");
    assert_eq!(approved["approvedVersion"], 3);
    let expected_hash = canonical_hash("Weekly wrap, sourced", &v3_body, "MARKET_COMMENTARY", "en");
    assert_eq!(approved["approvedHash"], expected_hash.as_str());

    let published = c.ok(&c.advisor, "publishContent", &id, "", json!({})).await;
    assert_eq!(published["status"], "PUBLISHED");
    assert!(published["publishedAt"].is_string());
    assert_eq!(published["body"], v3_body.as_str());

    // Everyone sees what is published, even anonymously, but not its review record.
    assert_eq!(c.get(None, &id).await["status"], "PUBLISHED");
    assert_eq!(
        c.get(Some(&c.user), &id).await["title"],
        "Weekly wrap, sourced"
    );
    let record = c
        .app
        .gql(
            "query($id: ID!) { content(id: $id) { findings { rule } } }",
            json!({"id": id}),
            Some(&c.user.access),
        )
        .await;
    assert_eq!(code(&record), "FORBIDDEN", "{record}");

    // A plain user may not archive; the admin may.
    let refused = c.act(&c.user, "archiveContent", &id, "", json!({})).await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let archived = c.ok(&c.admin, "archiveContent", &id, "", json!({})).await;
    assert_eq!(archived["status"], "ARCHIVED");
    assert_eq!(c.get(Some(&c.user), &id).await, Value::Null);

    // The history: every version, re-creatable and hash-checked, and every action.
    let full = c.full(&c.advisor, &id).await;
    let versions = full["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 3);
    for version in versions {
        let recomputed = canonical_hash(
            version["title"].as_str().unwrap_or_default(),
            version["body"].as_str().unwrap_or_default(),
            version["topic"].as_str().unwrap_or_default(),
            version["language"].as_str().unwrap_or_default(),
        );
        assert_eq!(version["contentHash"], recomputed.as_str());
        assert_eq!(version["editor"]["id"], c.advisor.user_id.as_str());
    }
    assert_eq!(versions[0]["body"], "First draft. You could lose money.");
    assert_eq!(
        versions[0]["complianceScore"],
        Value::Null,
        "v1 was never checked"
    );
    assert_eq!(versions[1]["complianceScore"], 5);
    assert_eq!(
        actions(&full),
        [
            "content.created",
            "content.edited",
            "content.submitted",
            "content.review_requested",
            "content.changes_requested",
            "content.edited",
            "content.submitted",
            "content.review_requested",
            "content.approved",
            "content.published",
            "content.archived",
        ]
    );
    let trail = full["auditTrail"].as_array().expect("trail");
    // The trail names every version's hash where it was written, so the record of who
    // wrote what can be matched against the versions.
    let written: Vec<&Value> = trail
        .iter()
        .filter(|e| e["action"] == "content.created" || e["action"] == "content.edited")
        .collect();
    for (event, version) in written.iter().zip(versions) {
        assert_eq!(event["details"]["contentHash"], version["contentHash"]);
        assert_eq!(event["details"]["version"], version["version"]);
        assert_eq!(event["actorId"], c.advisor.user_id.as_str());
    }
    let approval = trail
        .iter()
        .find(|e| e["action"] == "content.approved")
        .expect("approval");
    assert_eq!(approval["actorId"], c.officer.user_id.as_str());
    assert_eq!(approval["details"]["contentHash"], expected_hash.as_str());
    assert!(trail
        .iter()
        .all(|e| e["subjectType"] == "content" && e["subjectId"] == id.as_str()));
    let automated = trail
        .iter()
        .find(|e| e["action"] == "content.review_requested")
        .expect("check");
    assert_eq!(
        automated["actorId"],
        Value::Null,
        "the automated checks act as the system"
    );

    // The audit chain as a whole still verifies.
    let chain = c
        .call(&c.admin, "{ verifyAuditChain { valid } }", json!({}))
        .await;
    assert_eq!(chain["data"]["verifyAuditChain"]["valid"], true, "{chain}");

    // The other ends: REJECTED, AUTO_REJECTED back to DRAFT.
    let second = c.create(&c.advisor, "Second", CLEAN, "research").await;
    let second_id = second["id"].as_str().expect("id");
    c.ok(&c.advisor, "submitContent", second_id, "", json!({}))
        .await;
    let no_reason = c
        .act(
            &c.officer,
            "rejectContent",
            second_id,
            ", reason: $reason",
            json!({"reason": ""}),
        )
        .await;
    assert_eq!(
        no_reason["errors"][0]["extensions"]["field"], "reason",
        "{no_reason}"
    );
    let rejected = c
        .ok(
            &c.officer,
            "rejectContent",
            second_id,
            ", reason: $reason",
            json!({"reason": "Off-topic."}),
        )
        .await;
    assert_eq!(rejected["status"], "REJECTED");
    assert_eq!(rejected["reviewNote"], "Off-topic.");

    let third = c
        .create(
            &c.advisor,
            "Third",
            "Guaranteed returns for all. You could lose money.",
            "research",
        )
        .await;
    let third_id = third["id"].as_str().expect("id");
    let auto = c
        .ok(&c.advisor, "submitContent", third_id, "", json!({}))
        .await;
    assert_eq!(auto["status"], "AUTO_REJECTED");
    let revised = c
        .ok(&c.advisor, "reviseContent", third_id, "", json!({}))
        .await;
    assert_eq!(revised["status"], "DRAFT");
    assert_eq!(
        actions(&revised)[1..],
        [
            "content.submitted",
            "content.auto_rejected",
            "content.revised"
        ]
    );
}

async fn illegal_transitions_are_conflicts_naming_the_state(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    let piece = c.create(&c.advisor, "T", CLEAN, "education").await;
    let id = piece["id"].as_str().expect("id");
    let note = json!({"note": "n"});
    let reason = json!({"reason": "r"});

    // DRAFT
    for (who, name, extra, vars) in [
        (&c.officer, "approveContent", ", note: $note", note.clone()),
        (
            &c.officer,
            "requestContentChanges",
            ", note: $note",
            note.clone(),
        ),
        (
            &c.officer,
            "rejectContent",
            ", reason: $reason",
            reason.clone(),
        ),
        (&c.advisor, "publishContent", "", json!({})),
        (&c.advisor, "archiveContent", "", json!({})),
        (&c.advisor, "reviseContent", "", json!({})),
    ] {
        assert_conflict(&c.act(who, name, id, extra, vars).await, "DRAFT");
    }
    // IN_REVIEW
    c.ok(&c.advisor, "submitContent", id, "", json!({})).await;
    assert_conflict(
        &c.edit(&c.advisor, id, json!({"title": "X"})).await,
        "IN_REVIEW",
    );
    for (who, name) in [
        (&c.advisor, "submitContent"),
        (&c.advisor, "publishContent"),
        (&c.advisor, "archiveContent"),
        (&c.advisor, "reviseContent"),
    ] {
        assert_conflict(&c.act(who, name, id, "", json!({})).await, "IN_REVIEW");
    }
    // APPROVED
    c.ok(
        &c.officer,
        "approveContent",
        id,
        ", note: $note",
        note.clone(),
    )
    .await;
    assert_conflict(
        &c.edit(&c.advisor, id, json!({"title": "X"})).await,
        "APPROVED",
    );
    assert_conflict(
        &c.act(&c.advisor, "submitContent", id, "", json!({})).await,
        "APPROVED",
    );
    assert_conflict(
        &c.act(
            &c.officer,
            "approveContent",
            id,
            ", note: $note",
            note.clone(),
        )
        .await,
        "APPROVED",
    );
    assert_conflict(
        &c.act(&c.advisor, "archiveContent", id, "", json!({})).await,
        "APPROVED",
    );
    // PUBLISHED
    c.ok(&c.officer, "publishContent", id, "", json!({})).await;
    assert_conflict(
        &c.edit(&c.advisor, id, json!({"title": "X"})).await,
        "PUBLISHED",
    );
    for (who, name) in [
        (&c.advisor, "submitContent"),
        (&c.advisor, "publishContent"),
        (&c.advisor, "reviseContent"),
    ] {
        assert_conflict(&c.act(who, name, id, "", json!({})).await, "PUBLISHED");
    }
    assert_conflict(
        &c.act(
            &c.officer,
            "rejectContent",
            id,
            ", reason: $reason",
            reason.clone(),
        )
        .await,
        "PUBLISHED",
    );
    // ARCHIVED is final.
    c.ok(&c.advisor, "archiveContent", id, "", json!({})).await;
    for (who, name) in [
        (&c.advisor, "archiveContent"),
        (&c.advisor, "publishContent"),
        (&c.advisor, "submitContent"),
        (&c.advisor, "reviseContent"),
    ] {
        assert_conflict(&c.act(who, name, id, "", json!({})).await, "ARCHIVED");
    }
    // REJECTED is final.
    let other = c.create(&c.advisor, "U", CLEAN, "education").await;
    let other = other["id"].as_str().expect("id");
    c.ok(&c.advisor, "submitContent", other, "", json!({}))
        .await;
    c.ok(
        &c.officer,
        "rejectContent",
        other,
        ", reason: $reason",
        reason.clone(),
    )
    .await;
    assert_conflict(
        &c.edit(&c.advisor, other, json!({"body": CLEAN})).await,
        "REJECTED",
    );
    for name in [
        "submitContent",
        "reviseContent",
        "publishContent",
        "archiveContent",
    ] {
        assert_conflict(
            &c.act(&c.advisor, name, other, "", json!({})).await,
            "REJECTED",
        );
    }
    assert_conflict(
        &c.act(
            &c.officer,
            "approveContent",
            other,
            ", note: $note",
            note.clone(),
        )
        .await,
        "REJECTED",
    );
    // AUTO_REJECTED: only revise leads on.
    let bad = c
        .create(
            &c.advisor,
            "V",
            "Risk-free profits. You could lose money.",
            "education",
        )
        .await;
    let bad = bad["id"].as_str().expect("id");
    c.ok(&c.advisor, "submitContent", bad, "", json!({})).await;
    assert_conflict(
        &c.edit(&c.advisor, bad, json!({"title": "W"})).await,
        "AUTO_REJECTED",
    );
    assert_conflict(
        &c.act(&c.advisor, "submitContent", bad, "", json!({})).await,
        "AUTO_REJECTED",
    );
    assert_conflict(
        &c.act(
            &c.officer,
            "approveContent",
            bad,
            ", note: $note",
            note.clone(),
        )
        .await,
        "AUTO_REJECTED",
    );
    // Nothing refused left a trace: only the successful steps are audited.
    let trail = c.full(&c.advisor, other).await;
    assert_eq!(
        actions(&trail),
        [
            "content.created",
            "content.submitted",
            "content.review_requested",
            "content.rejected"
        ]
    );
}

async fn authors_never_review_their_own_content_and_roles_are_enforced(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    // An officer who also writes.
    let both = c.app.register(&email("both")).await;
    grant(&c.app, &c.admin, &both, "ADVISOR").await;
    grant(&c.app, &c.admin, &both, "COMPLIANCE_OFFICER").await;
    let own = c.create(&both, "Mine", CLEAN, "research").await;
    let own_id = own["id"].as_str().expect("id");
    c.ok(&both, "submitContent", own_id, "", json!({})).await;
    for (name, extra, vars) in [
        (
            "approveContent",
            ", note: $note",
            json!({"note": "fine by me"}),
        ),
        (
            "requestContentChanges",
            ", note: $note",
            json!({"note": "n"}),
        ),
        ("rejectContent", ", reason: $reason", json!({"reason": "r"})),
    ] {
        let refused = c.act(&both, name, own_id, extra, vars).await;
        assert_eq!(code(&refused), "FORBIDDEN", "{name}: {refused}");
        assert!(refused["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("authored"));
    }
    // Their queue leaves their own piece out; another officer's has it.
    let queue = "{ reviewQueue { edges { node { id } } } }";
    let mine = c.call(&both, queue, json!({})).await;
    assert_eq!(mine["data"]["reviewQueue"]["edges"], json!([]), "{mine}");
    let theirs = c.call(&c.officer, queue, json!({})).await;
    assert_eq!(
        theirs["data"]["reviewQueue"]["edges"][0]["node"]["id"],
        own_id
    );
    // Still in review: nothing happened.
    assert_eq!(c.full(&both, own_id).await["status"], "IN_REVIEW");

    // Wrong roles.
    let create =
        "mutation { createContent(input: {title: \"t\", body: \"b\", topic: \"x\"}) { id } }";
    assert_eq!(code(&c.call(&c.user, create, json!({})).await), "FORBIDDEN");
    assert_eq!(
        code(&c.call(&c.officer, create, json!({})).await),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&c.app.gql(create, json!({}), None).await),
        "UNAUTHENTICATED"
    );
    // Someone who may not see a piece learns nothing about it: NOT_FOUND.
    let approve_as_user = c
        .act(
            &c.user,
            "approveContent",
            own_id,
            ", note: $note",
            json!({"note": null}),
        )
        .await;
    assert_eq!(code(&approve_as_user), "NOT_FOUND", "{approve_as_user}");
    let edit_as_other_advisor = c.edit(&c.advisor, own_id, json!({"title": "hijack"})).await;
    assert_eq!(code(&edit_as_other_advisor), "NOT_FOUND");
    assert_eq!(c.get(Some(&c.advisor), own_id).await, Value::Null);
    // Officers see it but do not write it; admins see it but do not review.
    assert_eq!(
        code(&c.edit(&c.officer, own_id, json!({"title": "x"})).await),
        "FORBIDDEN"
    );
    let admin_approves = c
        .act(
            &c.admin,
            "approveContent",
            own_id,
            ", note: $note",
            json!({"note": null}),
        )
        .await;
    assert_eq!(code(&admin_approves), "FORBIDDEN");
    assert_eq!(
        code(&c.call(&c.advisor, queue, json!({})).await),
        "FORBIDDEN"
    );
    // Rules administration is for admins.
    let rules = "{ complianceRules { fingerprint rules { id } } }";
    assert_eq!(
        code(&c.call(&c.officer, rules, json!({})).await),
        "FORBIDDEN"
    );
    let reload = "mutation { reloadComplianceRules { fingerprint } }";
    assert_eq!(
        code(&c.call(&c.advisor, reload, json!({})).await),
        "FORBIDDEN"
    );
    // Input is checked field by field.
    let bad_topic = c
        .call(
            &c.advisor,
            "mutation { createContent(input: {title: \"t\", body: \"b\", topic: \"??\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        bad_topic["errors"][0]["extensions"]["field"], "input.topic",
        "{bad_topic}"
    );
    let bad_language = c
        .call(
            &c.advisor,
            "mutation { createContent(input: {title: \"t\", body: \"b\", topic: \"x\", language: \"english\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        bad_language["errors"][0]["extensions"]["field"],
        "input.language"
    );
    let unknown = c
        .act(
            &c.officer,
            "submitContent",
            &Uuid::now_v7().to_string(),
            "",
            json!({}),
        )
        .await;
    assert_eq!(code(&unknown), "NOT_FOUND");
}

async fn edits_after_approval_force_a_new_review(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    let piece = c.create(&c.advisor, "Outlook", CLEAN, "research").await;
    let id = piece["id"].as_str().expect("id");
    c.ok(&c.advisor, "submitContent", id, "", json!({})).await;
    let approved = c
        .ok(
            &c.officer,
            "approveContent",
            id,
            ", note: $note",
            json!({"note": "ok"}),
        )
        .await;
    let first_hash = approved["approvedHash"].as_str().expect("hash").to_owned();

    // The approved text cannot change in place.
    assert_conflict(
        &c.edit(&c.advisor, id, json!({"body": "new"})).await,
        "APPROVED",
    );
    // Revising drops the approval.
    let revised = c.ok(&c.advisor, "reviseContent", id, "", json!({})).await;
    assert_eq!(revised["status"], "DRAFT");
    assert_eq!(revised["approvedHash"], Value::Null);
    assert_eq!(revised["approvedVersion"], Value::Null);
    let changed_body = format!("{CLEAN} Updated after approval.");
    let edited = c.edit(&c.advisor, id, json!({"body": changed_body})).await;
    assert_eq!(edited["data"]["updateContent"]["version"], 2, "{edited}");
    // Nobody can publish the changed text without a new review.
    assert_conflict(
        &c.act(&c.advisor, "publishContent", id, "", json!({})).await,
        "DRAFT",
    );
    assert_conflict(
        &c.act(&c.officer, "publishContent", id, "", json!({})).await,
        "DRAFT",
    );
    let resubmitted = c.ok(&c.advisor, "submitContent", id, "", json!({})).await;
    assert_eq!(resubmitted["status"], "IN_REVIEW");
    assert_conflict(
        &c.act(&c.advisor, "publishContent", id, "", json!({})).await,
        "IN_REVIEW",
    );
    let approved_again = c.ok(&c.officer, "approveContent", id, "", json!({})).await;
    assert_eq!(approved_again["approvedVersion"], 2);
    assert_ne!(approved_again["approvedHash"], first_hash.as_str());
    let published = c.ok(&c.officer, "publishContent", id, "", json!({})).await;
    assert_eq!(published["body"], changed_body.as_str());
    assert_eq!(published["approvedHash"], approved_again["approvedHash"]);
    let trail = actions(&published);
    assert_eq!(
        trail.iter().filter(|a| *a == "content.approved").count(),
        2,
        "{trail:?}"
    );
    assert!(trail.contains(&"content.revised".to_owned()));
}

async fn automated_checks_reject_with_findings_and_flag_senior_review(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    // A blocking finding: AUTO_REJECTED with findings and spans (UTF-16 code units).
    let body = "🚀 These are guaranteed returns! You could lose money.";
    let piece = c.create(&c.advisor, "Moon", body, "trading ideas").await;
    let id = piece["id"].as_str().expect("id");
    let auto = c.ok(&c.advisor, "submitContent", id, "", json!({})).await;
    assert_eq!(auto["status"], "AUTO_REJECTED");
    let findings = auto["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["rule"], "guarantee-language");
    assert_eq!(findings[0]["severity"], "BLOCKING");
    assert_eq!(findings[0]["field"], "BODY");
    // The rocket is two UTF-16 code units: "guaranteed" starts at 13.
    assert_eq!(
        (findings[0]["start"].clone(), findings[0]["end"].clone()),
        (json!(13), json!(23))
    );
    assert_eq!(auto["complianceScore"], 70, "25 for TRADING_IDEAS + 45");
    assert_eq!(auto["seniorReviewRequired"], true);
    assert_eq!(
        auto["versions"][0]["findings"][0]["rule"],
        "guarantee-language"
    );
    let detail = auto["auditTrail"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["action"] == "content.auto_rejected"))
        .expect("auto rejection audited")
        .clone();
    assert_eq!(detail["details"]["riskScore"], 70);
    assert_eq!(detail["details"]["findings"][0]["start"], 13);

    // Warnings go to a human, and a high score is flagged for senior review.
    let risky = c
        .create(
            &c.advisor,
            "SOL view",
            "SOL will reach $500 and it is the best chain. You could lose money.",
            "derivatives",
        )
        .await;
    let risky_id = risky["id"].as_str().expect("id");
    let flagged = c
        .ok(&c.advisor, "submitContent", risky_id, "", json!({}))
        .await;
    assert_eq!(flagged["status"], "IN_REVIEW");
    assert_eq!(flagged["complianceScore"], 65, "30 + 25 + 10");
    assert_eq!(flagged["seniorReviewRequired"], true);
    let senior = c
        .call(
            &c.officer,
            "{ reviewQueue(seniorOnly: true) { edges { node { id seniorReviewRequired } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        senior["data"]["reviewQueue"]["edges"][0]["node"]["id"], risky_id,
        "{senior}"
    );

    // Authors can check a draft without submitting it.
    let preview = c
        .call(
            &c.advisor,
            "mutation($i: CreateContentInput!) { checkContentCompliance(input: $i) { blocked riskScore findings { rule start end } } }",
            json!({"i": {"title": "t", "body": "Not guaranteed. Risk warning: you may lose money.", "topic": "education"}}),
        )
        .await;
    assert_eq!(
        preview["data"]["checkContentCompliance"]["blocked"], false,
        "{preview}"
    );
    assert_eq!(
        preview["data"]["checkContentCompliance"]["findings"],
        json!([])
    );

    // The admin lists the rules in force.
    let rules = c
        .call(&c.admin, "{ complianceRules { source fingerprint seniorReviewThreshold rules { id kind severity weight } } }", json!({}))
        .await;
    let listed: Vec<&str> = rules["data"]["complianceRules"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for id in [
        "guarantee-language",
        "performance-without-disclaimer",
        "missing-risk-disclosure",
        "superlatives",
        "price-target",
        "undisclosed-conflict",
    ] {
        assert!(listed.contains(&id), "{id} in {listed:?}");
    }
}

async fn queues_search_and_visibility(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    let other = c.app.register(&email("advisor2")).await;
    grant(&c.app, &c.admin, &other, "ADVISOR").await;
    let a = c.create(&c.advisor, "Alpha note", CLEAN, "research").await;
    let b = c
        .create(
            &other,
            "Beta 100% note",
            &format!("{CLEAN} Mentions staking."),
            "education",
        )
        .await;
    let d = c.create(&c.advisor, "Delta draft", CLEAN, "research").await;
    let (a, b, d) = (
        a["id"].as_str().expect("id").to_owned(),
        b["id"].as_str().expect("id").to_owned(),
        d["id"].as_str().expect("id").to_owned(),
    );
    // Submitted in the order b, a: the queue is oldest submission first.
    c.ok(&other, "submitContent", &b, "", json!({})).await;
    c.ok(&c.advisor, "submitContent", &a, "", json!({})).await;
    let queue = "query($after: String) { reviewQueue(first: 1, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
    let page1 = c.call(&c.officer, queue, json!({"after": null})).await;
    let q = &page1["data"]["reviewQueue"];
    assert_eq!(q["edges"][0]["node"]["id"], b.as_str(), "{page1}");
    assert_eq!(q["pageInfo"]["hasNextPage"], true);
    let page2 = c
        .call(
            &c.officer,
            queue,
            json!({"after": q["pageInfo"]["endCursor"]}),
        )
        .await;
    let q2 = &page2["data"]["reviewQueue"];
    assert_eq!(q2["edges"][0]["node"]["id"], a.as_str(), "{page2}");
    assert_eq!(q2["pageInfo"]["hasNextPage"], false);

    let list = "query($f: ContentFilter, $first: Int, $after: String) { contents(filter: $f, first: $first, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    let ids = |body: &Value| -> Vec<String> {
        body["data"]["contents"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned))
            .collect()
    };
    // Officers see everything, newest first.
    let all = c.call(&c.officer, list, json!({})).await;
    assert_eq!(ids(&all), [d.as_str(), b.as_str(), a.as_str()]);
    // Keyset pages.
    let first = c.call(&c.officer, list, json!({"first": 2})).await;
    assert_eq!(ids(&first), [d.as_str(), b.as_str()]);
    let rest = c
        .call(
            &c.officer,
            list,
            json!({"first": 2, "after": first["data"]["contents"]["pageInfo"]["endCursor"]}),
        )
        .await;
    assert_eq!(ids(&rest), [a.as_str()]);
    // Filters.
    let by_status = c
        .call(&c.officer, list, json!({"f": {"status": "DRAFT"}}))
        .await;
    assert_eq!(ids(&by_status), [d.as_str()]);
    let by_author = c
        .call(&c.officer, list, json!({"f": {"authorId": other.user_id}}))
        .await;
    assert_eq!(ids(&by_author), [b.as_str()]);
    let by_topic = c
        .call(&c.officer, list, json!({"f": {"topic": "Research"}}))
        .await;
    assert_eq!(ids(&by_topic), [d.as_str(), a.as_str()]);
    let by_text = c
        .call(&c.officer, list, json!({"f": {"search": "STAKING"}}))
        .await;
    assert_eq!(ids(&by_text), [b.as_str()]);
    // Wildcards in a search are literal.
    let literal = c
        .call(&c.officer, list, json!({"f": {"search": "100%"}}))
        .await;
    assert_eq!(ids(&literal), [b.as_str()]);
    let percent = c
        .call(&c.officer, list, json!({"f": {"search": "%"}}))
        .await;
    assert_eq!(ids(&percent), [b.as_str()]);
    // Authors see their own; others' unpublished pieces are invisible.
    let mine = c.call(&c.advisor, list, json!({})).await;
    assert_eq!(ids(&mine), [d.as_str(), a.as_str()]);
    let theirs = c.call(&other, list, json!({})).await;
    assert_eq!(ids(&theirs), [b.as_str()]);
    let anonymous = c.app.gql(list, json!({}), None).await;
    assert!(ids(&anonymous).is_empty());
    // Once published, everyone sees it.
    c.ok(&c.officer, "approveContent", &a, "", json!({})).await;
    c.ok(&c.advisor, "publishContent", &a, "", json!({})).await;
    let public = c.app.gql(list, json!({}), None).await;
    assert_eq!(ids(&public), [a.as_str()]);
    let theirs = c.call(&other, list, json!({})).await;
    assert_eq!(ids(&theirs), [b.as_str(), a.as_str()]);
    let too_big = c.call(&c.officer, list, json!({"first": 201})).await;
    assert_eq!(code(&too_big), "BAD_USER_INPUT");
}

async fn subscribe(app: &TestApp, who: &Auth) -> crate::helpers::Ws {
    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(json!({"authorization": format!("Bearer {}", who.access)}))
        .await;
    ws.send(json!({"id": "c", "type": "subscribe", "payload": {"query": "subscription { contentUpdates { contentId action status previousStatus version content { id status } } }"}}))
        .await;
    ws
}

/// Publishes a marker event for `who` on the server's bus until their subscription
/// hears it, so the subscription is known to be live before the test acts.
async fn until_live(app: &TestApp, ws: &mut crate::helpers::Ws, who: &Auth) {
    let marker = Uuid::now_v7();
    let author: Uuid = who.user_id.parse().expect("uuid");
    for _ in 0..100 {
        app.events
            .publish(vec![tradegraph::events::Event::ContentUpdate {
                content_id: marker,
                author_id: author,
                action: "test.marker".into(),
                status: "DRAFT".into(),
                previous_status: "DRAFT".into(),
                version: 1,
                at: chrono::Utc::now(),
            }])
            .await;
        let got = tokio::time::timeout(Duration::from_millis(100), ws.next_within(30)).await;
        if let Ok(Frame::Json(message)) = got {
            let update = &message["payload"]["data"]["contentUpdates"];
            assert_eq!(update["action"], "test.marker", "{message}");
            // Another test subscriber's marker proves nothing about this one's.
            if update["contentId"] == marker.to_string() {
                return;
            }
        }
    }
    panic!("the subscription never went live");
}

async fn next_real(ws: &mut crate::helpers::Ws) -> Value {
    loop {
        let message = ws.next_json().await;
        let update = &message["payload"]["data"]["contentUpdates"];
        if update["action"] != "test.marker" {
            return update.clone();
        }
    }
}

async fn content_updates_reach_authors_and_reviewers(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    let other = c.app.register(&email("advisor2")).await;
    grant(&c.app, &c.admin, &other, "ADVISOR").await;
    let mut author_ws = subscribe(&c.app, &c.advisor).await;
    let mut officer_ws = subscribe(&c.app, &c.officer).await;
    let mut other_ws = subscribe(&c.app, &other).await;
    until_live(&c.app, &mut author_ws, &c.advisor).await;
    until_live(&c.app, &mut officer_ws, &c.officer).await;
    until_live(&c.app, &mut other_ws, &other).await;

    let piece = c.create(&c.advisor, "Live", CLEAN, "research").await;
    let id = piece["id"].as_str().expect("id");
    c.ok(&c.advisor, "submitContent", id, "", json!({})).await;
    c.ok(&c.officer, "approveContent", id, "", json!({})).await;

    for ws in [&mut author_ws, &mut officer_ws] {
        let created = next_real(ws).await;
        assert_eq!(created["contentId"], id);
        assert_eq!(created["action"], "content.created");
        let submitted = next_real(ws).await;
        assert_eq!(submitted["action"], "content.review_requested");
        assert_eq!(submitted["previousStatus"], "DRAFT");
        assert_eq!(submitted["status"], "IN_REVIEW");
        let approved = next_real(ws).await;
        assert_eq!(approved["action"], "content.approved");
        assert_eq!(approved["status"], "APPROVED");
        assert_eq!(approved["content"]["status"], "APPROVED");
    }
    // Another advisor hears only of their own pieces: the next thing they hear is theirs.
    let theirs = c.create(&other, "Other", CLEAN, "research").await;
    let heard = next_real(&mut other_ws).await;
    assert_eq!(heard["contentId"], theirs["id"], "{heard}");

    // Not signed in: refused.
    let mut anonymous = c.app.websocket("graphql-transport-ws").await;
    anonymous.init(json!({})).await;
    anonymous
        .send(json!({"id": "a", "type": "subscribe", "payload": {"query": "subscription { contentUpdates { contentId } }"}}))
        .await;
    let refusal = anonymous.next_json().await;
    assert_eq!(
        refusal["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refusal}"
    );
}

async fn a_text_changed_behind_the_workflow_is_never_published(backend: Backend) {
    let Some(c) = cast(backend).await else { return };
    let piece = c
        .create(&c.advisor, "Approved text", CLEAN, "research")
        .await;
    let id = piece["id"].as_str().expect("id");
    c.ok(&c.advisor, "submitContent", id, "", json!({})).await;
    c.ok(&c.officer, "approveContent", id, "", json!({})).await;
    // Someone with database access slips a promise into the approved piece.
    let db = sea_orm::Database::connect(c.app.database_url.clone())
        .await
        .expect("database");
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(
        "UPDATE contents SET body = 'Guaranteed returns! You could lose money.' WHERE status = 'APPROVED'",
    )
    .await
    .expect("tamper");
    let refused = c.act(&c.advisor, "publishContent", id, "", json!({})).await;
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    let shown = c.get(Some(&c.officer), id).await;
    assert_eq!(shown["status"], "APPROVED", "nothing was published");
    assert_eq!(c.get(None, id).await, Value::Null);
}

async fn admins_list_and_reload_the_rules(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.toml");
    let shipped = std::fs::read_to_string("config/compliance_rules.toml").expect("shipped rules");
    std::fs::write(&path, &shipped).expect("write rules");
    let path_text = path.display().to_string();
    let Some((app, admin)) =
        TestApp::spawn_with_admin_and(backend, &[("COMPLIANCE_RULES_PATH", path_text.as_str())])
            .await
    else {
        return;
    };
    let advisor = app.register(&email("advisor")).await;
    grant(&app, &admin, &advisor, "ADVISOR").await;
    let list = "{ complianceRules { source fingerprint rules { id } } }";
    let before = app.gql(list, json!({}), Some(&admin.access)).await;
    assert_eq!(
        before["data"]["complianceRules"]["source"],
        path_text.as_str(),
        "{before}"
    );
    let check =
        |body: &'static str| json!({"i": {"title": "t", "body": body, "topic": "education"}});
    let preview = "mutation($i: CreateContentInput!) { checkContentCompliance(input: $i) { findings { rule start end } } }";
    let text = "A moonshot for sure. You could lose money.";
    let quiet = app.gql(preview, check(text), Some(&advisor.access)).await;
    assert_eq!(
        quiet["data"]["checkContentCompliance"]["findings"],
        json!([]),
        "{quiet}"
    );

    // A new rule, in force after the reload.
    let extra = "\n[[rule]]\nid = \"hype\"\nseverity = \"WARNING\"\nweight = 5\nmessage = \"Hype.\"\nphrases = [\"moonshot\"]\n";
    std::fs::write(&path, format!("{shipped}{extra}")).expect("write rules");
    let reload = "mutation { reloadComplianceRules { fingerprint rules { id } } }";
    let reloaded = app.gql(reload, json!({}), Some(&admin.access)).await;
    let ids: Vec<&str> = reloaded["data"]["reloadComplianceRules"]["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{reloaded}"))
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&"hype"), "{ids:?}");
    let fingerprint = reloaded["data"]["reloadComplianceRules"]["fingerprint"].clone();
    assert_ne!(
        fingerprint,
        before["data"]["complianceRules"]["fingerprint"]
    );
    let loud = app.gql(preview, check(text), Some(&advisor.access)).await;
    assert_eq!(
        loud["data"]["checkContentCompliance"]["findings"],
        json!([{"rule": "hype", "start": 2, "end": 10}]),
        "{loud}"
    );

    // A broken file is refused whole; the rules in force stay.
    std::fs::write(&path, "senior_review_threshold = \"high\"").expect("write rules");
    let broken = app.gql(reload, json!({}), Some(&admin.access)).await;
    assert_eq!(code(&broken), "CONFLICT", "{broken}");
    let after = app.gql(list, json!({}), Some(&admin.access)).await;
    assert_eq!(after["data"]["complianceRules"]["fingerprint"], fingerprint);
    let still = app.gql(preview, check(text), Some(&advisor.access)).await;
    assert_eq!(
        still["data"]["checkContentCompliance"]["findings"][0]["rule"],
        "hype"
    );

    // The reload is audited.
    let log = app
        .gql(
            "{ auditLog(filter: {action: \"compliance_rules.reloaded\"}) { edges { node { actorId details } } } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    let edges = log["data"]["auditLog"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(edges.len(), 1, "{log}");
    assert_eq!(edges[0]["node"]["actorId"], admin.user_id.as_str());
    assert_eq!(edges[0]["node"]["details"]["fingerprint"], fingerprint);
}
