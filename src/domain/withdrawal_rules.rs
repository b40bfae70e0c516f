//! Withdrawal rules: the statuses a withdrawal moves through, daily limits per KYC tier,
//! and checks on what users type into the address book.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

/// Withdrawal statuses, stored as their GraphQL names.
pub mod status {
    pub const PENDING: &str = "PENDING";
    pub const PROCESSING: &str = "PROCESSING";
    pub const COMPLETED: &str = "COMPLETED";
    pub const CANCELLED: &str = "CANCELLED";
    pub const FAILED: &str = "FAILED";

    /// Statuses that still hold funds: they count against the daily limit, and only
    /// they may move on.
    pub const OPEN: [&str; 2] = [PENDING, PROCESSING];
    /// Statuses counted against the daily limit: money that left or may still leave.
    pub const COUNTED: [&str; 3] = [PENDING, PROCESSING, COMPLETED];
}

/// The statuses a withdrawal may be in for `target` to be reached: the user cancels only
/// before an operator picks it up; operators complete or fail it while it is open.
pub fn allowed_from(target: &str) -> &'static [&'static str] {
    match target {
        status::CANCELLED => &[status::PENDING],
        status::PROCESSING => &[status::PENDING],
        status::COMPLETED | status::FAILED => &status::OPEN,
        _ => &[],
    }
}

/// The KYC tiers in order, lowest first.
pub const TIERS: [&str; 4] = ["UNVERIFIED", "BASIC", "INTERMEDIATE", "ADVANCED"];

/// Parses `TIER:USD,...` (e.g. `UNVERIFIED:0,BASIC:1000`). A tier left out may not
/// withdraw at all.
pub fn parse_daily_limits(spec: &str) -> Result<BTreeMap<String, Decimal>, String> {
    let mut limits = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tier, usd) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not TIER:USD"))?;
        let tier = tier.trim().to_uppercase();
        if !TIERS.contains(&tier.as_str()) {
            return Err(format!("`{tier}` is not a KYC tier ({})", TIERS.join(", ")));
        }
        let usd = Decimal::from_str_exact(usd.trim())
            .ok()
            .filter(|v| !v.is_sign_negative())
            .ok_or_else(|| format!("`{usd}` is not an amount of USD"))?;
        limits.insert(tier, usd);
    }
    Ok(limits)
}

/// Why a withdrawal is over its tier's limit.
#[derive(Debug, PartialEq, Eq)]
pub enum LimitRefusal {
    /// The tier may not withdraw.
    NotAllowed,
    /// What is left of the day's limit, in USD.
    Exceeded { remaining: Decimal },
}

/// Checks a withdrawal worth `requested` USD against the tier's rolling 24-hour limit,
/// given `used` USD already withdrawn or pending in that window.
pub fn check_daily_limit(
    limits: &BTreeMap<String, Decimal>,
    tier: &str,
    used: Decimal,
    requested: Decimal,
) -> Result<(), LimitRefusal> {
    let limit = match limits.get(tier) {
        Some(limit) if !limit.is_zero() => *limit,
        _ => return Err(LimitRefusal::NotAllowed),
    };
    match used.checked_add(requested) {
        Some(total) if total <= limit => Ok(()),
        _ => Err(LimitRefusal::Exceeded {
            remaining: (limit - used).max(Decimal::ZERO),
        }),
    }
}

/// A destination address: 8 to 128 visible ASCII characters without spaces, which
/// covers the address formats of common chains (and memo-suffixed ones).
pub fn check_address(address: &str) -> Result<String, &'static str> {
    let address = address.trim();
    if !(8..=128).contains(&address.len()) {
        return Err("an address is 8 to 128 characters");
    }
    if !address.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an address holds only visible ASCII characters, no spaces");
    }
    Ok(address.to_owned())
}

/// A label: 1 to 64 printable characters.
pub fn check_label(label: &str) -> Result<String, &'static str> {
    let label = label.trim();
    let len = label.chars().count();
    if len == 0 || len > 64 || label.chars().any(char::is_control) {
        return Err("a label is 1 to 64 printable characters");
    }
    Ok(label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    #[test]
    fn limits_parse_and_unknown_tiers_are_refused() {
        let limits =
            parse_daily_limits("UNVERIFIED:0, basic:1000,ADVANCED:1000000").expect("valid");
        assert_eq!(limits.get("BASIC"), Some(&d("1000")));
        assert_eq!(limits.get("UNVERIFIED"), Some(&d("0")));
        assert!(parse_daily_limits("GOLD:5").is_err());
        assert!(parse_daily_limits("BASIC:-5").is_err());
        assert!(parse_daily_limits("BASIC").is_err());
    }

    #[test]
    fn daily_limits_count_what_was_used() {
        let limits = parse_daily_limits("UNVERIFIED:0,BASIC:1000").expect("valid");
        assert_eq!(
            check_daily_limit(&limits, "UNVERIFIED", d("0"), d("1")),
            Err(LimitRefusal::NotAllowed)
        );
        assert_eq!(
            check_daily_limit(&limits, "INTERMEDIATE", d("0"), d("1")),
            Err(LimitRefusal::NotAllowed)
        );
        assert_eq!(
            check_daily_limit(&limits, "BASIC", d("400"), d("600")),
            Ok(())
        );
        assert_eq!(
            check_daily_limit(&limits, "BASIC", d("400"), d("600.01")),
            Err(LimitRefusal::Exceeded {
                remaining: d("600")
            })
        );
    }

    #[test]
    fn only_open_withdrawals_move_on() {
        assert_eq!(allowed_from(status::CANCELLED), [status::PENDING]);
        assert!(allowed_from(status::COMPLETED).contains(&status::PROCESSING));
        assert!(allowed_from(status::PENDING).is_empty());
    }

    #[test]
    fn addresses_and_labels_are_checked() {
        assert!(check_address("bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh").is_ok());
        assert!(check_address("short").is_err());
        assert!(check_address("has a space in it").is_err());
        assert!(check_label("").is_err());
        assert_eq!(check_label("  cold wallet ").as_deref(), Ok("cold wallet"));
    }

    proptest! {
        /// However a day's withdrawals are split, their sum never passes the limit.
        #[test]
        fn accepted_withdrawals_never_exceed_the_limit(amounts in proptest::collection::vec(1u32..500, 1..30)) {
            let limits = parse_daily_limits("BASIC:1000").expect("valid");
            let mut used = Decimal::ZERO;
            for amount in amounts {
                let amount = Decimal::from(amount);
                if check_daily_limit(&limits, "BASIC", used, amount).is_ok() {
                    used += amount;
                }
                prop_assert!(used <= d("1000"));
            }
        }
    }
}
