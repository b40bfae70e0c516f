//! Transaction monitoring: rules run on every deposit and withdrawal, each a pure
//! function of the new transfer and the user's recent ones, and the risk score their
//! hits add up to.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Deposit,
    Withdrawal,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Deposit => "DEPOSIT",
            Direction::Withdrawal => "WITHDRAWAL",
        }
    }

    pub fn from_column(s: &str) -> Direction {
        if s == "WITHDRAWAL" {
            Direction::Withdrawal
        } else {
            Direction::Deposit
        }
    }
}

/// A deposit or withdrawal valued in USD (`None`: no USD price for the asset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub direction: Direction,
    pub asset: String,
    pub amount: Decimal,
    pub usd: Option<Decimal>,
    pub at: DateTime<Utc>,
}

/// Thresholds of the rules (from configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A single transfer at or above this many USD is large.
    pub large_usd: Decimal,
    /// A withdrawal within this window after deposits...
    pub rapid_window: Duration,
    /// ...taking out at least this fraction of what came in, is rapid in-and-out.
    pub rapid_fraction: Decimal,
    /// Amounts within this fraction below `large_usd` are "just under" it...
    pub structuring_band: Decimal,
    /// ...and this many of them (the new one included) within the window is structuring.
    pub structuring_count: usize,
    pub structuring_window: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            large_usd: Decimal::from(10_000),
            rapid_window: Duration::hours(24),
            rapid_fraction: Decimal::new(8, 1),
            structuring_band: Decimal::new(1, 1),
            structuring_count: 3,
            structuring_window: Duration::days(7),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    LargeAmount,
    RapidInOut,
    Structuring,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::LargeAmount => "LARGE_AMOUNT",
            Rule::RapidInOut => "RAPID_IN_OUT",
            Rule::Structuring => "STRUCTURING",
        }
    }

    /// What a hit adds to the user's risk score.
    pub fn score(self) -> u32 {
        match self {
            Rule::LargeAmount => 20,
            Rule::RapidInOut => 35,
            Rule::Structuring => 45,
        }
    }
}

/// A rule that fired, with what made it fire.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub rule: Rule,
    pub evidence: serde_json::Value,
}

/// Every rule, on `current` against the user's earlier transfers (`history`, any order).
pub fn evaluate(rules: &Rules, current: &Transfer, history: &[Transfer]) -> Vec<Hit> {
    [
        large_amount(rules, current),
        rapid_in_out(rules, current, history),
        structuring(rules, current, history),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One transfer at or above the reporting threshold.
pub fn large_amount(rules: &Rules, current: &Transfer) -> Option<Hit> {
    let usd = current.usd?;
    (usd >= rules.large_usd).then(|| Hit {
        rule: Rule::LargeAmount,
        evidence: json!({
            "transfer": current.id,
            "direction": current.direction.as_str(),
            "asset": current.asset,
            "amount": current.amount.to_string(),
            "usd": usd.to_string(),
            "thresholdUsd": rules.large_usd.to_string(),
        }),
    })
}

/// A withdrawal that takes out most of what was deposited shortly before: money
/// passing through rather than being used to trade.
pub fn rapid_in_out(rules: &Rules, current: &Transfer, history: &[Transfer]) -> Option<Hit> {
    if current.direction != Direction::Withdrawal {
        return None;
    }
    let usd = current.usd?;
    let since = current.at - rules.rapid_window;
    let deposits: Vec<&Transfer> = history
        .iter()
        .filter(|t| t.direction == Direction::Deposit && t.at >= since && t.at <= current.at)
        .collect();
    let deposited: Decimal = deposits.iter().filter_map(|t| t.usd).sum();
    if deposited.is_zero() || usd < deposited * rules.rapid_fraction {
        return None;
    }
    Some(Hit {
        rule: Rule::RapidInOut,
        evidence: json!({
            "withdrawal": current.id,
            "withdrawnUsd": usd.to_string(),
            "depositedUsd": deposited.to_string(),
            "deposits": deposits.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            "windowHours": rules.rapid_window.num_hours(),
        }),
    })
}

/// Several transfers in the same direction each just under the reporting threshold:
/// the pattern of splitting one large amount to stay below it.
pub fn structuring(rules: &Rules, current: &Transfer, history: &[Transfer]) -> Option<Hit> {
    let floor = rules.large_usd * (Decimal::ONE - rules.structuring_band);
    let just_under = |t: &Transfer| {
        t.direction == current.direction && t.usd.is_some_and(|u| u >= floor && u < rules.large_usd)
    };
    if !just_under(current) {
        return None;
    }
    let since = current.at - rules.structuring_window;
    let mut matched: Vec<&Transfer> = history
        .iter()
        .filter(|t| t.id != current.id && t.at >= since && t.at <= current.at && just_under(t))
        .collect();
    matched.push(current);
    if matched.len() < rules.structuring_count {
        return None;
    }
    Some(Hit {
        rule: Rule::Structuring,
        evidence: json!({
            "direction": current.direction.as_str(),
            "transfers": matched.iter().map(|t| json!({
                "id": t.id,
                "usd": t.usd.map(|u| u.to_string()),
                "at": t.at.to_rfc3339(),
            })).collect::<Vec<_>>(),
            "bandUsd": [floor.to_string(), rules.large_usd.to_string()],
            "windowDays": rules.structuring_window.num_days(),
        }),
    })
}

/// The user's risk score, 0 to 100: the scores of their alerts still open or escalated
/// over the last 90 days, added up. Dismissed alerts count for nothing.
pub fn risk_score(alerts: &[(u32, DateTime<Utc>)], now: DateTime<Utc>) -> u32 {
    let since = now - Duration::days(90);
    alerts
        .iter()
        .filter(|(_, at)| *at >= since)
        .map(|(score, _)| *score)
        .sum::<u32>()
        .min(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + hours * 3600, 0).unwrap_or_default()
    }

    fn transfer(id: &str, direction: Direction, usd: i64, hours: i64) -> Transfer {
        Transfer {
            id: id.to_owned(),
            direction,
            asset: "USD".to_owned(),
            amount: Decimal::from(usd),
            usd: Some(Decimal::from(usd)),
            at: at(hours),
        }
    }

    use Direction::{Deposit, Withdrawal};

    #[test]
    fn large_amounts_fire_at_the_threshold() {
        let rules = Rules::default();
        assert!(large_amount(&rules, &transfer("a", Deposit, 9_999, 0)).is_none());
        let hit = large_amount(&rules, &transfer("a", Deposit, 10_000, 0)).expect("hit");
        assert_eq!(hit.rule, Rule::LargeAmount);
        assert_eq!(hit.evidence["usd"], "10000");
        assert!(large_amount(&rules, &transfer("w", Withdrawal, 50_000, 0)).is_some());
        let mut unpriced = transfer("u", Deposit, 50_000, 0);
        unpriced.usd = None;
        assert!(large_amount(&rules, &unpriced).is_none());
    }

    #[test]
    fn rapid_in_out_needs_a_recent_deposit_mostly_withdrawn() {
        let rules = Rules::default();
        let history = vec![
            transfer("d1", Deposit, 1_000, 0),
            transfer("d2", Deposit, 1_000, 1),
        ];
        let hit = rapid_in_out(&rules, &transfer("w", Withdrawal, 1_600, 5), &history)
            .expect("80% out within a day");
        assert_eq!(hit.evidence["depositedUsd"], "2000");
        assert_eq!(hit.evidence["deposits"], json!(["d1", "d2"]));
        assert!(rapid_in_out(&rules, &transfer("w", Withdrawal, 1_500, 5), &history).is_none());
        // Deposits older than the window do not count.
        assert!(rapid_in_out(&rules, &transfer("w", Withdrawal, 1_900, 30), &history).is_none());
        // Only withdrawals can be the "out".
        assert!(rapid_in_out(&rules, &transfer("d3", Deposit, 5_000, 2), &history).is_none());
        assert!(rapid_in_out(&rules, &transfer("w", Withdrawal, 100, 2), &[]).is_none());
    }

    #[test]
    fn structuring_counts_amounts_just_under_the_threshold() {
        let rules = Rules::default();
        let history = vec![
            transfer("d1", Deposit, 9_500, 0),
            transfer("d2", Deposit, 9_900, 20),
            transfer("d3", Deposit, 5_000, 30),
            transfer("w1", Withdrawal, 9_800, 31),
        ];
        let hit = structuring(&rules, &transfer("d4", Deposit, 9_000, 40), &history)
            .expect("three just under 10 000 in a week");
        assert_eq!(hit.evidence["transfers"].as_array().map(Vec::len), Some(3));
        // At or above the threshold is "large", not "just under".
        assert!(structuring(&rules, &transfer("d4", Deposit, 10_000, 40), &history).is_none());
        // Below the band.
        assert!(structuring(&rules, &transfer("d4", Deposit, 8_999, 40), &history).is_none());
        // Outside the window the earlier ones no longer count.
        assert!(structuring(&rules, &transfer("d4", Deposit, 9_000, 24 * 8), &history).is_none());
        // Withdrawals are counted among withdrawals only.
        assert!(structuring(&rules, &transfer("w2", Withdrawal, 9_100, 40), &history).is_none());
    }

    #[test]
    fn evaluate_runs_every_rule() {
        let rules = Rules::default();
        let history = vec![
            transfer("d1", Deposit, 9_500, 0),
            transfer("d2", Deposit, 9_600, 1),
        ];
        let hits = evaluate(&rules, &transfer("d3", Deposit, 9_700, 2), &history);
        assert_eq!(
            hits.iter().map(|h| h.rule).collect::<Vec<_>>(),
            vec![Rule::Structuring]
        );
        let hits = evaluate(&rules, &transfer("w", Withdrawal, 20_000, 3), &history);
        assert_eq!(
            hits.iter().map(|h| h.rule).collect::<Vec<_>>(),
            vec![Rule::LargeAmount, Rule::RapidInOut]
        );
    }

    #[test]
    fn risk_scores_add_up_recent_alerts_and_cap_at_100() {
        let now = at(24 * 100);
        assert_eq!(risk_score(&[], now), 0);
        assert_eq!(risk_score(&[(20, at(24 * 99)), (35, at(24 * 50))], now), 55);
        assert_eq!(risk_score(&[(20, at(0))], now), 0, "older than 90 days");
        assert_eq!(risk_score(&[(45, now), (45, now), (45, now)], now), 100);
    }
}
