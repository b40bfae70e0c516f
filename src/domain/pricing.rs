//! Prices of one asset in another from markets' last trade prices: the direct market
//! (ASSET-QUOTE), its inverse (QUOTE-ASSET), or a cross rate through one intermediate
//! asset (e.g. ETH-BTC × BTC-USD). Display rounding is half-even to the quote asset's
//! precision and happens only at the edge, never in between.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places kept for a rate derived by inversion or crossing (a direct market's
/// price is kept exact). Values are computed from the rate before any display rounding.
pub const DERIVED_RATE_DP: u32 = 18;

/// Last prices by (base, quote).
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    direct: BTreeMap<(String, String), Decimal>,
}

impl PriceTable {
    pub fn insert(&mut self, base: &str, quote: &str, price: Decimal) {
        if price > Decimal::ZERO {
            self.direct
                .insert((base.to_owned(), quote.to_owned()), price);
        }
    }

    /// One hop: a market either way round.
    fn hop(&self, from: &str, to: &str) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        if let Some(price) = self.direct.get(&(from.to_owned(), to.to_owned())) {
            return Some(*price);
        }
        self.direct
            .get(&(to.to_owned(), from.to_owned()))
            .and_then(|p| Decimal::ONE.checked_div(*p))
            .map(|p| p.round_dp(DERIVED_RATE_DP))
    }

    /// The price of one `asset` in `quote`; `None` when no market connects them in at
    /// most two hops. Among several crosses the intermediate asset first in symbol order
    /// wins, so the answer does not depend on map order.
    pub fn price(&self, asset: &str, quote: &str) -> Option<Decimal> {
        if let Some(price) = self.hop(asset, quote) {
            return Some(price);
        }
        let mut middles: Vec<&str> = self
            .direct
            .keys()
            .flat_map(|(b, q)| [b.as_str(), q.as_str()])
            .filter(|m| *m != asset && *m != quote)
            .collect();
        middles.sort_unstable();
        middles.dedup();
        middles.into_iter().find_map(|middle| {
            let first = self.hop(asset, middle)?;
            let second = self.hop(middle, quote)?;
            first
                .checked_mul(second)
                .map(|p| p.round_dp(DERIVED_RATE_DP))
        })
    }
}

/// Rounds an amount for display: half-even (banker's rounding) to `precision` places.
pub fn display(amount: Decimal, precision: u32) -> Decimal {
    amount.round_dp_with_strategy(precision, RoundingStrategy::MidpointNearestEven)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    fn table() -> PriceTable {
        let mut t = PriceTable::default();
        t.insert("BTC", "USD", d("50000"));
        t.insert("ETH", "BTC", d("0.05"));
        t.insert("SOL", "ETH", d("0.1"));
        t
    }

    #[test]
    fn direct_inverse_and_cross_rates() {
        let t = table();
        assert_eq!(t.price("BTC", "USD"), Some(d("50000")));
        assert_eq!(t.price("USD", "USD"), Some(d("1")));
        assert_eq!(t.price("USD", "BTC"), Some(d("0.00002")));
        assert_eq!(t.price("ETH", "USD"), Some(d("2500")));
        assert_eq!(t.price("BTC", "ETH"), Some(d("20")));
        // Three hops away: unpriced, not zero.
        assert_eq!(t.price("SOL", "USD"), None);
        assert_eq!(t.price("DOGE", "USD"), None);
    }

    #[test]
    fn display_rounds_half_to_even() {
        assert_eq!(display(d("1.005"), 2), d("1.00"));
        assert_eq!(display(d("1.015"), 2), d("1.02"));
        assert_eq!(display(d("-2.125"), 2), d("-2.12"));
        assert_eq!(display(d("2.1251"), 2), d("2.13"));
    }
}
