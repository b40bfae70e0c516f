//! The life of a piece of advisor content, as a state machine with no I/O.
//!
//! ```text
//! DRAFT ──submit──▶ SUBMITTED ──checks block──▶ AUTO_REJECTED ──revise──▶ DRAFT
//!   ▲                   │
//!   │              checks pass
//!   │                   ▼
//!   │              IN_REVIEW ──reject──▶ REJECTED (final)
//!   │               │     │
//!   │  request changes   approve
//!   │               ▼     ▼
//!   │    CHANGES_REQUESTED   APPROVED ──publish──▶ PUBLISHED ──archive──▶ ARCHIVED
//!   │      (edit, submit)     │
//!   └────────revise───────────┘
//! ```
//!
//! Text changes only in DRAFT and CHANGES_REQUESTED. An approved piece that needs a
//! change goes back to DRAFT (`revise`), which drops the approval, so it is reviewed
//! again before anyone can publish it.
//!
//! Who may do what is decided here too, from the actor's relation to the piece: the
//! author (an ADVISOR) writes, submits and revises; a COMPLIANCE_OFFICER who is not the
//! author reviews (four eyes); publishing an approved piece is open to its author or any
//! officer, and archiving a published one to its author, any officer or an admin.

use std::fmt;
use std::str::FromStr;

/// Where a piece of content stands. Stored as the upper-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentStatus {
    Draft,
    Submitted,
    AutoRejected,
    InReview,
    ChangesRequested,
    Approved,
    Rejected,
    Published,
    Archived,
}

impl ContentStatus {
    pub const ALL: [ContentStatus; 9] = [
        ContentStatus::Draft,
        ContentStatus::Submitted,
        ContentStatus::AutoRejected,
        ContentStatus::InReview,
        ContentStatus::ChangesRequested,
        ContentStatus::Approved,
        ContentStatus::Rejected,
        ContentStatus::Published,
        ContentStatus::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContentStatus::Draft => "DRAFT",
            ContentStatus::Submitted => "SUBMITTED",
            ContentStatus::AutoRejected => "AUTO_REJECTED",
            ContentStatus::InReview => "IN_REVIEW",
            ContentStatus::ChangesRequested => "CHANGES_REQUESTED",
            ContentStatus::Approved => "APPROVED",
            ContentStatus::Rejected => "REJECTED",
            ContentStatus::Published => "PUBLISHED",
            ContentStatus::Archived => "ARCHIVED",
        }
    }

    /// Whether the text may change in this state.
    pub fn is_editable(self) -> bool {
        matches!(self, ContentStatus::Draft | ContentStatus::ChangesRequested)
    }

    /// Whether a reviewer still has to act.
    pub fn awaits_review(self) -> bool {
        self == ContentStatus::InReview
    }

    /// The state `action` leads to from here, or the refusal naming this state.
    pub fn apply(self, action: ContentAction) -> Result<ContentStatus, IllegalTransition> {
        use ContentAction as A;
        use ContentStatus as S;
        let next = match (self, action) {
            (S::Draft | S::ChangesRequested, A::Edit) => self,
            (S::Draft | S::ChangesRequested, A::Submit) => S::Submitted,
            (S::Submitted, A::FailChecks) => S::AutoRejected,
            (S::Submitted, A::PassChecks) => S::InReview,
            (S::InReview, A::Approve) => S::Approved,
            (S::InReview, A::RequestChanges) => S::ChangesRequested,
            (S::InReview, A::Reject) => S::Rejected,
            (S::AutoRejected | S::Approved, A::Revise) => S::Draft,
            (S::Approved, A::Publish) => S::Published,
            (S::Published, A::Archive) => S::Archived,
            _ => return Err(IllegalTransition { from: self, action }),
        };
        Ok(next)
    }

    /// The actions possible from here (by someone), for clients that show buttons.
    pub fn allowed_actions(self) -> Vec<ContentAction> {
        ContentAction::ALL
            .into_iter()
            .filter(|a| self.apply(*a).is_ok())
            .collect()
    }
}

impl fmt::Display for ContentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown content status `{s}`"))
    }
}

/// Something done to a piece of content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentAction {
    Edit,
    Submit,
    /// The automated checks found a blocking problem (system).
    FailChecks,
    /// The automated checks let the piece through to a human (system).
    PassChecks,
    Approve,
    RequestChanges,
    Reject,
    /// Back to DRAFT from AUTO_REJECTED or APPROVED, dropping any approval.
    Revise,
    Publish,
    Archive,
}

impl ContentAction {
    pub const ALL: [ContentAction; 10] = [
        ContentAction::Edit,
        ContentAction::Submit,
        ContentAction::FailChecks,
        ContentAction::PassChecks,
        ContentAction::Approve,
        ContentAction::RequestChanges,
        ContentAction::Reject,
        ContentAction::Revise,
        ContentAction::Publish,
        ContentAction::Archive,
    ];

    /// The verb used in messages and the audit log (`content.<past tense>`).
    pub fn verb(self) -> &'static str {
        match self {
            ContentAction::Edit => "edit",
            ContentAction::Submit => "submit",
            ContentAction::FailChecks => "auto-reject",
            ContentAction::PassChecks => "send to review",
            ContentAction::Approve => "approve",
            ContentAction::RequestChanges => "request changes to",
            ContentAction::Reject => "reject",
            ContentAction::Revise => "revise",
            ContentAction::Publish => "publish",
            ContentAction::Archive => "archive",
        }
    }

    /// The audit action name for this step.
    pub fn audit_action(self) -> &'static str {
        match self {
            ContentAction::Edit => "content.edited",
            ContentAction::Submit => "content.submitted",
            ContentAction::FailChecks => "content.auto_rejected",
            ContentAction::PassChecks => "content.review_requested",
            ContentAction::Approve => "content.approved",
            ContentAction::RequestChanges => "content.changes_requested",
            ContentAction::Reject => "content.rejected",
            ContentAction::Revise => "content.revised",
            ContentAction::Publish => "content.published",
            ContentAction::Archive => "content.archived",
        }
    }
}

/// A transition the state machine does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: ContentStatus,
    pub action: ContentAction,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed: Vec<&str> = ContentStatus::ALL
            .into_iter()
            .filter(|s| s.apply(self.action).is_ok())
            .map(ContentStatus::as_str)
            .collect();
        write!(
            f,
            "cannot {} content in state {}; only from {}",
            self.action.verb(),
            self.from,
            allowed.join(" or ")
        )
    }
}

/// How the actor relates to the piece and which roles they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub is_author: bool,
    pub is_advisor: bool,
    pub is_officer: bool,
    pub is_admin: bool,
}

/// Why an actor may not take an action (whatever the state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotPermitted(pub String);

impl fmt::Display for NotPermitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Actor {
    /// Whether this actor may take `action` on the piece (state aside).
    pub fn may(self, action: ContentAction) -> Result<(), NotPermitted> {
        let refuse = |why: &str| Err(NotPermitted(why.to_owned()));
        match action {
            ContentAction::Edit | ContentAction::Submit | ContentAction::Revise => {
                if self.is_author && self.is_advisor {
                    Ok(())
                } else if self.is_author {
                    refuse("this needs the ADVISOR role")
                } else {
                    refuse("only the author may do this")
                }
            }
            // The system takes these inside `submit`; nobody asks for them.
            ContentAction::FailChecks | ContentAction::PassChecks => {
                refuse("only the automated checks do this")
            }
            ContentAction::Approve | ContentAction::RequestChanges | ContentAction::Reject => {
                if !self.is_officer {
                    refuse("this needs the COMPLIANCE_OFFICER role")
                } else if self.is_author {
                    refuse("a compliance officer may not review content they authored")
                } else {
                    Ok(())
                }
            }
            ContentAction::Publish => {
                if (self.is_author && self.is_advisor) || self.is_officer {
                    Ok(())
                } else {
                    refuse("only the author or a compliance officer may publish")
                }
            }
            ContentAction::Archive => {
                if (self.is_author && self.is_advisor) || self.is_officer || self.is_admin {
                    Ok(())
                } else {
                    refuse("only the author, a compliance officer or an admin may archive")
                }
            }
        }
    }

    /// Whether this actor may see the piece at all (others get NOT_FOUND).
    pub fn may_see(self, status: ContentStatus) -> bool {
        self.is_author || self.is_officer || self.is_admin || status == ContentStatus::Published
    }

    /// Whether this actor may see the piece's review record: versions, findings,
    /// score and audit trail.
    pub fn may_see_record(self) -> bool {
        self.is_author || self.is_officer || self.is_admin
    }
}

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest body, in characters.
pub const MAX_BODY_CHARS: usize = 50_000;
/// Longest reviewer note or reason, in characters.
pub const MAX_NOTE_CHARS: usize = 4_000;

/// A title: trimmed, 1 to 200 characters.
pub fn normalize_title(title: &str) -> Result<String, String> {
    let title = title.trim();
    match title.chars().count() {
        0 => Err("must not be blank".into()),
        n if n > MAX_TITLE_CHARS => Err(format!("at most {MAX_TITLE_CHARS} characters")),
        _ => Ok(title.to_owned()),
    }
}

/// A body, kept exactly as written (spans of findings point into it): not blank, at
/// most 50 000 characters.
pub fn check_body(body: &str) -> Result<(), String> {
    if body.trim().is_empty() {
        Err("must not be blank".into())
    } else if body.chars().count() > MAX_BODY_CHARS {
        Err(format!("at most {MAX_BODY_CHARS} characters"))
    } else {
        Ok(())
    }
}

/// A topic such as `MARKET_COMMENTARY`: letters, digits and underscores, upper-cased,
/// with spaces and dashes read as underscores; 1 to 40 characters.
pub fn normalize_topic(topic: &str) -> Result<String, String> {
    let topic: String = topic
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    if topic.is_empty() || topic.len() > 40 {
        Err("1 to 40 characters".into())
    } else if !topic
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        Err("letters, digits, spaces, dashes and underscores only".into())
    } else {
        Ok(topic)
    }
}

/// A language tag such as `en` or `en-GB`: a 2 or 3 letter primary language (stored in
/// lower case) and optional subtags of 2 to 8 letters or digits; at most 16 characters.
pub fn normalize_language(language: &str) -> Result<String, String> {
    let language = language.trim().replace('_', "-");
    let mut parts = language.split('-');
    let primary = parts.next().unwrap_or_default();
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
    let rest: Vec<&str> = parts.collect();
    let rest_ok = rest
        .iter()
        .all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !primary_ok || !rest_ok || language.len() > 16 {
        return Err("a language tag such as `en` or `en-GB`".into());
    }
    let mut out = primary.to_ascii_lowercase();
    for part in rest {
        out.push('-');
        out.push_str(part);
    }
    Ok(out)
}

/// A reviewer's note or reason: trimmed; `required` refuses a blank one.
pub fn normalize_note(note: Option<&str>, required: bool) -> Result<Option<String>, String> {
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    match note {
        None if required => Err("must not be blank".into()),
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => {
            Err(format!("at most {MAX_NOTE_CHARS} characters"))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContentAction as A;
    use ContentStatus as S;

    #[test]
    fn the_happy_path_reaches_archived() {
        let mut status = S::Draft;
        for action in [
            A::Edit,
            A::Submit,
            A::PassChecks,
            A::RequestChanges,
            A::Edit,
            A::Submit,
            A::PassChecks,
            A::Approve,
            A::Publish,
            A::Archive,
        ] {
            status = status.apply(action).expect("legal step");
        }
        assert_eq!(status, S::Archived);
    }

    #[test]
    fn exactly_the_drawn_transitions_exist() {
        let legal: Vec<(S, A, S)> = S::ALL
            .into_iter()
            .flat_map(|s| A::ALL.into_iter().map(move |a| (s, a)))
            .filter_map(|(s, a)| s.apply(a).ok().map(|n| (s, a, n)))
            .collect();
        let expected = vec![
            (S::Draft, A::Edit, S::Draft),
            (S::Draft, A::Submit, S::Submitted),
            (S::Submitted, A::FailChecks, S::AutoRejected),
            (S::Submitted, A::PassChecks, S::InReview),
            (S::AutoRejected, A::Revise, S::Draft),
            (S::InReview, A::Approve, S::Approved),
            (S::InReview, A::RequestChanges, S::ChangesRequested),
            (S::InReview, A::Reject, S::Rejected),
            (S::ChangesRequested, A::Edit, S::ChangesRequested),
            (S::ChangesRequested, A::Submit, S::Submitted),
            (S::Approved, A::Revise, S::Draft),
            (S::Approved, A::Publish, S::Published),
            (S::Published, A::Archive, S::Archived),
        ];
        assert_eq!(legal, expected);
    }

    #[test]
    fn refusals_name_the_current_state() {
        let error = S::Published
            .apply(A::Edit)
            .expect_err("published is frozen");
        let text = error.to_string();
        assert!(text.contains("state PUBLISHED"), "{text}");
        assert!(text.contains("DRAFT or CHANGES_REQUESTED"), "{text}");
        let error = S::Rejected
            .apply(A::Publish)
            .expect_err("rejected is final");
        assert!(error.to_string().contains("REJECTED"));
    }

    #[test]
    fn final_states_allow_nothing() {
        assert!(S::Rejected.allowed_actions().is_empty());
        assert!(S::Archived.allowed_actions().is_empty());
    }

    #[test]
    fn only_draft_and_changes_requested_are_editable() {
        let editable: Vec<S> = S::ALL.into_iter().filter(|s| s.is_editable()).collect();
        assert_eq!(editable, vec![S::Draft, S::ChangesRequested]);
        for status in S::ALL {
            assert_eq!(status.is_editable(), status.apply(A::Edit).is_ok());
        }
    }

    #[test]
    fn names_round_trip() {
        for status in S::ALL {
            assert_eq!(status.as_str().parse::<S>(), Ok(status));
        }
        assert!("draft".parse::<S>().is_err());
    }

    #[test]
    fn four_eyes_officers_never_review_their_own_work() {
        let author_officer = Actor {
            is_author: true,
            is_advisor: true,
            is_officer: true,
            is_admin: false,
        };
        for action in [A::Approve, A::RequestChanges, A::Reject] {
            assert!(author_officer.may(action).is_err());
        }
        let officer = Actor {
            is_officer: true,
            ..Actor::default()
        };
        for action in [
            A::Approve,
            A::RequestChanges,
            A::Reject,
            A::Publish,
            A::Archive,
        ] {
            assert!(officer.may(action).is_ok(), "{action:?}");
        }
        for action in [A::Edit, A::Submit, A::Revise] {
            assert!(officer.may(action).is_err(), "{action:?}");
        }
    }

    #[test]
    fn authors_write_and_publish_but_never_review() {
        let author = Actor {
            is_author: true,
            is_advisor: true,
            ..Actor::default()
        };
        for action in [A::Edit, A::Submit, A::Revise, A::Publish, A::Archive] {
            assert!(author.may(action).is_ok(), "{action:?}");
        }
        for action in [A::Approve, A::RequestChanges, A::Reject, A::PassChecks] {
            assert!(author.may(action).is_err(), "{action:?}");
        }
        // An author who lost the ADVISOR role can no longer act on the piece.
        let former = Actor {
            is_author: true,
            ..Actor::default()
        };
        assert!(former.may(A::Edit).is_err());
        assert!(former.may(A::Publish).is_err());
    }

    #[test]
    fn strangers_see_only_published_content() {
        let stranger = Actor::default();
        for status in S::ALL {
            assert_eq!(stranger.may_see(status), status == S::Published);
        }
        assert!(!stranger.may_see_record());
        let admin = Actor {
            is_admin: true,
            ..Actor::default()
        };
        assert!(admin.may(A::Archive).is_ok());
        assert!(admin.may(A::Approve).is_err());
        assert!(S::ALL.into_iter().all(|s| admin.may_see(s)));
    }

    #[test]
    fn inputs_are_normalised_or_refused() {
        assert_eq!(normalize_title("  Weekly view "), Ok("Weekly view".into()));
        assert!(normalize_title("   ").is_err());
        assert!(normalize_title(&"x".repeat(201)).is_err());
        assert!(check_body(" \n ").is_err());
        assert!(check_body(" kept as is ").is_ok());
        assert_eq!(
            normalize_topic(" market commentary"),
            Ok("MARKET_COMMENTARY".into())
        );
        assert_eq!(normalize_topic("new-listings"), Ok("NEW_LISTINGS".into()));
        assert!(normalize_topic("crypto!").is_err());
        assert!(normalize_topic("").is_err());
        assert_eq!(normalize_language("EN-GB"), Ok("en-GB".into()));
        assert_eq!(normalize_language("de"), Ok("de".into()));
        assert!(normalize_language("english").is_err());
        assert!(normalize_language("e").is_err());
        assert_eq!(normalize_note(Some("  ok "), false), Ok(Some("ok".into())));
        assert_eq!(normalize_note(Some("  "), false), Ok(None));
        assert!(normalize_note(None, true).is_err());
        assert!(normalize_note(Some(" "), true).is_err());
    }
}
