//! Fee tiers: lower fees for users who trade more.
//!
//! A tier names a 30-day traded volume (in the market's quote asset) and the discount,
//! in percent, it earns off the market's maker and taker fees. The highest tier reached
//! applies.

use rust_decimal::Decimal;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeTier {
    pub min_volume: Decimal,
    pub discount_percent: u32,
}

/// Parses `VOLUME:PERCENT,...`, e.g. `100000:10,1000000:25`.
pub fn parse_tiers(spec: &str) -> Result<Vec<FeeTier>, String> {
    let mut tiers = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (volume, percent) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not VOLUME:PERCENT"))?;
        let min_volume = Decimal::from_str_exact(volume.trim())
            .ok()
            .filter(|v| !v.is_sign_negative())
            .ok_or_else(|| format!("`{volume}` is not a volume"))?;
        let discount_percent = percent
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| format!("`{percent}` is not a percentage from 0 to 100"))?;
        tiers.push(FeeTier {
            min_volume,
            discount_percent,
        });
    }
    tiers.sort_by_key(|t| t.min_volume);
    Ok(tiers)
}

/// The fee in basis points for a user with `volume` traded in 30 days. Rounds down, in
/// the user's favour.
pub fn discounted_bps(base_bps: u32, volume: Decimal, tiers: &[FeeTier]) -> u32 {
    let discount = tiers
        .iter()
        .filter(|t| volume >= t.min_volume)
        .map(|t| t.discount_percent)
        .max()
        .unwrap_or(0)
        .min(100);
    base_bps * (100 - discount) / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_sort_and_apply() {
        let tiers = parse_tiers("1000000:25, 100000:10").expect("valid");
        assert_eq!(tiers[0].discount_percent, 10);
        assert_eq!(discounted_bps(20, Decimal::from(99_999), &tiers), 20);
        assert_eq!(discounted_bps(20, Decimal::from(100_000), &tiers), 18);
        assert_eq!(discounted_bps(20, Decimal::from(5_000_000), &tiers), 15);
        assert_eq!(discounted_bps(10, Decimal::from(5_000_000), &[]), 10);
        assert!(parse_tiers("").expect("empty is no tiers").is_empty());
    }

    #[test]
    fn bad_tiers_are_refused() {
        for bad in ["100", "x:10", "100:101", "-5:10", "100:-1"] {
            assert!(parse_tiers(bad).is_err(), "{bad}");
        }
    }
}
