//! KYC rules: tiers and their limits, application statuses and who may move them,
//! the provider webhook's signature, and what an uploaded document really is.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use sha2::Sha256;

/// Verification levels, each unlocking more: ordered, so `>=` means "at least".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Unverified,
    /// E-mail and personal data.
    Basic,
    /// Identity and address documents.
    Intermediate,
    /// Source of funds.
    Advanced,
}

impl Tier {
    pub const ALL: [Tier; 4] = [
        Tier::Unverified,
        Tier::Basic,
        Tier::Intermediate,
        Tier::Advanced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Unverified => "UNVERIFIED",
            Tier::Basic => "BASIC",
            Tier::Intermediate => "INTERMEDIATE",
            Tier::Advanced => "ADVANCED",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The stored column; an unknown value is the least trusted tier, never more.
    pub fn from_column(s: &str) -> Tier {
        Tier::parse(s).unwrap_or(Tier::Unverified)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Documents an application for this tier must carry (identity and address for
    /// INTERMEDIATE, plus source of funds for ADVANCED).
    pub fn required_documents(self) -> usize {
        match self {
            Tier::Unverified | Tier::Basic => 0,
            Tier::Intermediate => 1,
            Tier::Advanced => 2,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one tier may do. `None` amounts are unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierLimits {
    pub can_trade: bool,
    pub daily_withdrawal_usd: Option<Decimal>,
    pub daily_deposit_usd: Option<Decimal>,
}

/// The limits of every tier, from configuration (`KYC_TIER_LIMITS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierLimitTable([TierLimits; 4]);

/// Keeps development open: an UNVERIFIED user may trade but not withdraw.
pub const DEFAULT_TIER_LIMITS: &str = "UNVERIFIED:trade:0:5000,BASIC:trade:2000:20000,\
INTERMEDIATE:trade:50000:250000,ADVANCED:trade:1000000:unlimited";

impl TierLimitTable {
    pub fn for_tier(&self, tier: Tier) -> &TierLimits {
        &self.0[tier.index()]
    }

    /// Whether some tier may not trade, so placing an order must look at the tier.
    pub fn restricts_trading(&self) -> bool {
        self.0.iter().any(|l| !l.can_trade)
    }

    /// Parses `TIER:TRADE:WITHDRAWAL:DEPOSIT,...` where TRADE is `trade` or `notrade` and
    /// the amounts are USD per UTC day or `unlimited`. Every tier must be listed once,
    /// and a higher tier may not allow less than a lower one.
    pub fn parse(spec: &str) -> Result<TierLimitTable, String> {
        let mut found: [Option<TierLimits>; 4] = Default::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split(':').map(str::trim).collect();
            let [tier, trade, withdrawal, deposit] = fields.as_slice() else {
                return Err(format!("`{part}` is not TIER:TRADE:WITHDRAWAL:DEPOSIT"));
            };
            let tier = Tier::parse(&tier.to_ascii_uppercase())
                .ok_or_else(|| format!("`{tier}` is not a KYC tier"))?;
            let can_trade = match trade.to_ascii_lowercase().as_str() {
                "trade" | "true" | "yes" => true,
                "notrade" | "false" | "no" => false,
                other => return Err(format!("`{other}` must be `trade` or `notrade`")),
            };
            let limits = TierLimits {
                can_trade,
                daily_withdrawal_usd: parse_limit(withdrawal)?,
                daily_deposit_usd: parse_limit(deposit)?,
            };
            if found[tier.index()].replace(limits).is_some() {
                return Err(format!("{tier} is listed twice"));
            }
        }
        let mut table = Vec::with_capacity(4);
        for tier in Tier::ALL {
            table.push(
                found[tier.index()]
                    .take()
                    .ok_or_else(|| format!("{tier} is missing"))?,
            );
        }
        let table: [TierLimits; 4] = table
            .try_into()
            .map_err(|_| "every tier must be listed".to_owned())?;
        for pair in table.windows(2) {
            let (lower, higher) = (&pair[0], &pair[1]);
            if (lower.can_trade && !higher.can_trade)
                || allows_less(higher.daily_withdrawal_usd, lower.daily_withdrawal_usd)
                || allows_less(higher.daily_deposit_usd, lower.daily_deposit_usd)
            {
                return Err("a higher tier may not allow less than a lower one".to_owned());
            }
        }
        Ok(TierLimitTable(table))
    }
}

impl Default for TierLimitTable {
    fn default() -> Self {
        match TierLimitTable::parse(DEFAULT_TIER_LIMITS) {
            Ok(table) => table,
            // The constant above is checked by a unit test; this arm never runs.
            Err(_) => TierLimitTable(std::array::from_fn(|_| TierLimits {
                can_trade: true,
                daily_withdrawal_usd: Some(Decimal::ZERO),
                daily_deposit_usd: Some(Decimal::ZERO),
            })),
        }
    }
}

fn parse_limit(raw: &str) -> Result<Option<Decimal>, String> {
    if raw.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    Decimal::from_str_exact(raw)
        .ok()
        .filter(|d| !d.is_sign_negative())
        .map(Some)
        .ok_or_else(|| format!("`{raw}` is not a USD amount or `unlimited`"))
}

fn allows_less(higher: Option<Decimal>, lower: Option<Decimal>) -> bool {
    match (higher, lower) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(h), Some(l)) => h < l,
    }
}

/// Why a movement was refused by the tier's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitRefusal {
    TradingNotAllowed {
        tier: Tier,
    },
    /// `remaining` is what is still allowed today.
    DailyLimitExceeded {
        tier: Tier,
        limit: Decimal,
        remaining: Decimal,
    },
}

impl fmt::Display for LimitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitRefusal::TradingNotAllowed { tier } => write!(
                f,
                "trading is not available at KYC tier {tier}: complete verification first"
            ),
            LimitRefusal::DailyLimitExceeded {
                tier,
                limit,
                remaining,
            } => write!(
                f,
                "above the daily limit of {limit} USD for KYC tier {tier}; \
                 {remaining} USD remains today"
            ),
        }
    }
}

pub fn check_trading(table: &TierLimitTable, tier: Tier) -> Result<(), LimitRefusal> {
    if table.for_tier(tier).can_trade {
        Ok(())
    } else {
        Err(LimitRefusal::TradingNotAllowed { tier })
    }
}

/// Whether `amount_usd` more fits under a daily `limit` of which `used_today` is spent.
pub fn check_daily(
    tier: Tier,
    limit: Option<Decimal>,
    used_today: Decimal,
    amount_usd: Decimal,
) -> Result<(), LimitRefusal> {
    let Some(limit) = limit else { return Ok(()) };
    if used_today + amount_usd <= limit {
        Ok(())
    } else {
        Err(LimitRefusal::DailyLimitExceeded {
            tier,
            limit,
            remaining: (limit - used_today).max(Decimal::ZERO),
        })
    }
}

/// Where an application stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the provider's verification.
    Pending,
    /// Held for a compliance officer (a screening hit, or a provider result on a held
    /// application).
    InReview,
    Approved,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::InReview => "IN_REVIEW",
            Status::Approved => "APPROVED",
            Status::Rejected => "REJECTED",
        }
    }

    pub fn from_column(s: &str) -> Status {
        match s {
            "IN_REVIEW" => Status::InReview,
            "APPROVED" => Status::Approved,
            "REJECTED" => Status::Rejected,
            _ => Status::Pending,
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::InReview)
    }
}

/// The status a new application starts in.
pub fn initial_status(screening_hit: bool, country_blocked: bool) -> Status {
    if country_blocked {
        Status::Rejected
    } else if screening_hit {
        Status::InReview
    } else {
        Status::Pending
    }
}

/// What the provider's verdict does to an application in `current`. A held application
/// stays held: only an officer clears a screening hit. A decided one does not change.
pub fn after_provider(current: Status, verified: bool) -> Option<Status> {
    match (current, verified) {
        (Status::Pending, true) => Some(Status::Approved),
        (Status::Pending, false) | (Status::InReview, false) => Some(Status::Rejected),
        (Status::InReview, true) => None,
        (Status::Approved | Status::Rejected, _) => None,
    }
}

/// The tier a user holds after `requested` is approved: never lower than before, and
/// never above UNVERIFIED for a blocked country.
pub fn tier_after_approval(current: Tier, requested: Tier, country_blocked: bool) -> Tier {
    if country_blocked {
        return current.min(Tier::Unverified);
    }
    current.max(requested)
}

/// Whether a provider event that happened at `occurred_at` may still act: an event
/// older than (or as old as) the newest decision would undo it.
pub fn is_newer(occurred_at: DateTime<Utc>, last_decision_at: Option<DateTime<Utc>>) -> bool {
    last_decision_at.is_none_or(|last| occurred_at > last)
}

type HmacSha256 = Hmac<Sha256>;

/// The provider's signature: hex HMAC-SHA256 keyed with the shared secret over
/// `timestamp + "." + body`.
pub fn webhook_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a webhook's signature in constant time (`sha256=` prefix optional).
pub fn verify_webhook_signature(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let given = signature.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Whether a webhook timestamp (unix seconds) is within `tolerance_secs` of `now`, so a
/// captured request cannot be replayed later.
pub fn timestamp_is_fresh(now: DateTime<Utc>, timestamp: &str, tolerance_secs: u64) -> bool {
    let Ok(seconds) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    (now.timestamp() - seconds).unsigned_abs() <= tolerance_secs
}

/// The document types accepted, recognised by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentType {
    Png,
    Jpeg,
    Pdf,
}

impl DocumentType {
    pub fn mime(self) -> &'static str {
        match self {
            DocumentType::Png => "image/png",
            DocumentType::Jpeg => "image/jpeg",
            DocumentType::Pdf => "application/pdf",
        }
    }
}

/// What the bytes are, whatever the client claimed: PNG, JPEG or PDF, else `None`.
pub fn sniff(head: &[u8]) -> Option<DocumentType> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    const JPEG: &[u8] = b"\xff\xd8\xff";
    const PDF: &[u8] = b"%PDF-";
    if head.starts_with(PNG) {
        Some(DocumentType::Png)
    } else if head.starts_with(JPEG) {
        Some(DocumentType::Jpeg)
    } else if head.starts_with(PDF) {
        Some(DocumentType::Pdf)
    } else {
        None
    }
}

/// An ISO 3166-1 alpha-2 code, upper-cased, or `None`.
pub fn country_code(raw: &str) -> Option<String> {
    let code = raw.trim().to_ascii_uppercase();
    (code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase())).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap_or_default()
    }

    #[test]
    fn default_limits_parse_and_keep_development_open() {
        let table = TierLimitTable::parse(DEFAULT_TIER_LIMITS).expect("default parses");
        assert_eq!(table, TierLimitTable::default());
        let unverified = table.for_tier(Tier::Unverified);
        assert!(unverified.can_trade);
        assert_eq!(unverified.daily_withdrawal_usd, Some(Decimal::ZERO));
        assert!(!table.restricts_trading());
        assert_eq!(
            table.for_tier(Tier::Advanced).daily_deposit_usd,
            None,
            "unlimited"
        );
    }

    #[test]
    fn limit_specs_are_validated() {
        for bad in [
            "",
            "UNVERIFIED:trade:0:0",
            "UNVERIFIED:trade:0:0,BASIC:trade:0:0,INTERMEDIATE:trade:0:0,ADVANCED:trade:0",
            "UNVERIFIED:maybe:0:0,BASIC:trade:0:0,INTERMEDIATE:trade:0:0,ADVANCED:trade:0:0",
            "UNVERIFIED:trade:-1:0,BASIC:trade:0:0,INTERMEDIATE:trade:0:0,ADVANCED:trade:0:0",
            "UNVERIFIED:trade:0:0,UNVERIFIED:trade:0:0,INTERMEDIATE:trade:0:0,ADVANCED:trade:0:0",
            // A higher tier allowing less than a lower one.
            "UNVERIFIED:trade:100:0,BASIC:trade:50:0,INTERMEDIATE:trade:100:0,ADVANCED:trade:100:0",
            "UNVERIFIED:trade:0:0,BASIC:notrade:0:0,INTERMEDIATE:trade:0:0,ADVANCED:trade:0:0",
        ] {
            assert!(TierLimitTable::parse(bad).is_err(), "{bad}");
        }
        let strict = TierLimitTable::parse(
            "unverified:notrade:0:0, BASIC:trade:10:100, INTERMEDIATE:trade:10:unlimited, \
             ADVANCED:trade:unlimited:unlimited",
        )
        .expect("valid");
        assert!(strict.restricts_trading());
        assert_eq!(
            check_trading(&strict, Tier::Unverified),
            Err(LimitRefusal::TradingNotAllowed {
                tier: Tier::Unverified
            })
        );
        assert_eq!(check_trading(&strict, Tier::Basic), Ok(()));
    }

    #[test]
    fn each_tier_enforces_its_daily_limits() {
        let table = TierLimitTable::default();
        for tier in Tier::ALL {
            let limits = table.for_tier(tier);
            match limits.daily_withdrawal_usd {
                Some(limit) => {
                    assert_eq!(check_daily(tier, Some(limit), Decimal::ZERO, limit), Ok(()));
                    let over = check_daily(tier, Some(limit), Decimal::ZERO, limit + dec("0.01"));
                    assert!(matches!(over, Err(LimitRefusal::DailyLimitExceeded { .. })));
                }
                None => assert_eq!(check_daily(tier, None, dec("1e12"), dec("1e12")), Ok(())),
            }
        }
        assert_eq!(
            check_daily(Tier::Basic, Some(dec("2000")), dec("1500"), dec("600")),
            Err(LimitRefusal::DailyLimitExceeded {
                tier: Tier::Basic,
                limit: dec("2000"),
                remaining: dec("500"),
            })
        );
        assert_eq!(
            check_daily(
                Tier::Unverified,
                Some(Decimal::ZERO),
                Decimal::ZERO,
                dec("0.01")
            )
            .map_err(|e| e.to_string())
            .expect_err("over the limit"),
            "above the daily limit of 0 USD for KYC tier UNVERIFIED; 0 USD remains today"
        );
    }

    #[test]
    fn provider_results_never_release_a_held_application() {
        assert_eq!(
            after_provider(Status::Pending, true),
            Some(Status::Approved)
        );
        assert_eq!(
            after_provider(Status::Pending, false),
            Some(Status::Rejected)
        );
        assert_eq!(after_provider(Status::InReview, true), None);
        assert_eq!(
            after_provider(Status::InReview, false),
            Some(Status::Rejected)
        );
        assert_eq!(after_provider(Status::Approved, false), None);
        assert_eq!(initial_status(true, false), Status::InReview);
        assert_eq!(initial_status(false, true), Status::Rejected);
        assert_eq!(initial_status(false, false), Status::Pending);
    }

    #[test]
    fn approval_never_lowers_a_tier_and_blocked_countries_stay_unverified() {
        assert_eq!(
            tier_after_approval(Tier::Intermediate, Tier::Basic, false),
            Tier::Intermediate
        );
        assert_eq!(
            tier_after_approval(Tier::Basic, Tier::Advanced, false),
            Tier::Advanced
        );
        assert_eq!(
            tier_after_approval(Tier::Unverified, Tier::Basic, true),
            Tier::Unverified
        );
    }

    #[test]
    fn older_events_do_not_override_newer_decisions() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
        assert!(is_newer(t(10), None));
        assert!(is_newer(t(11), Some(t(10))));
        assert!(!is_newer(t(10), Some(t(10))));
        assert!(!is_newer(t(9), Some(t(10))));
    }

    #[test]
    fn webhook_signatures_verify_only_with_the_secret_and_body() {
        let sig = webhook_signature(b"secret", "1700000000", b"{\"a\":1}");
        assert!(verify_webhook_signature(
            b"secret",
            "1700000000",
            b"{\"a\":1}",
            &sig
        ));
        assert!(verify_webhook_signature(
            b"secret",
            "1700000000",
            b"{\"a\":1}",
            &format!("sha256={sig}")
        ));
        assert!(!verify_webhook_signature(
            b"other",
            "1700000000",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_webhook_signature(
            b"secret",
            "1700000001",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_webhook_signature(
            b"secret",
            "1700000000",
            b"{\"a\":2}",
            &sig
        ));
        assert!(!verify_webhook_signature(
            b"secret",
            "1700000000",
            b"{\"a\":1}",
            "zz"
        ));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert!(timestamp_is_fresh(now, "1700000000", 300));
        assert!(timestamp_is_fresh(now, "1699999700", 300));
        assert!(!timestamp_is_fresh(now, "1699999699", 300));
        assert!(!timestamp_is_fresh(now, "1700000301", 300));
        assert!(!timestamp_is_fresh(now, "soon", 300));
    }

    #[test]
    fn documents_are_recognised_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(DocumentType::Png));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0JFIF"), Some(DocumentType::Jpeg));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(DocumentType::Pdf));
        for bad in [
            &b""[..],
            b"GIF89a",
            b"<html>",
            b"MZ\x90\x00",
            b"\x89PNG",
            b"PK\x03\x04",
        ] {
            assert_eq!(sniff(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn country_codes_are_two_letters() {
        assert_eq!(country_code(" de "), Some("DE".to_owned()));
        assert_eq!(country_code("DEU"), None);
        assert_eq!(country_code("1A"), None);
    }
}
