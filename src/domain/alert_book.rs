//! The alert book: which price alerts a move of the last trade price fires.
//!
//! Thresholds live in integer ticks. A move is the previous last price followed by the
//! prices of the trades one transaction made, in order. An ABOVE alert at `t` fires
//! when some step goes from below `t` to `t` or higher; a BELOW alert when some step
//! goes from above `t` to `t` or lower. The steps of a move reduce to a few disjoint
//! tick ranges per direction ([`crossed_ranges`]), so the database reads only the
//! alerts inside them (an index range scan) and never the alerts that stay quiet.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// Which way the price must cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Fires when the price rises to the threshold or above it.
    Above,
    /// Fires when the price falls to the threshold or below it.
    Below,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Above => "ABOVE",
            Condition::Below => "BELOW",
        }
    }

    pub fn parse(value: &str) -> Option<Condition> {
        match value {
            "ABOVE" => Some(Condition::Above),
            "BELOW" => Some(Condition::Below),
            _ => None,
        }
    }
}

/// Thresholds (inclusive tick range) of one direction that a move crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossed {
    pub condition: Condition,
    pub from: i64,
    pub to: i64,
}

impl Crossed {
    pub fn contains(&self, ticks: i64) -> bool {
        (self.from..=self.to).contains(&ticks)
    }
}

/// A price as a threshold in ticks: the smallest tick price that reaches it for ABOVE
/// (rounded up), the largest for BELOW (rounded down), so an alert never fires before
/// its price is really reached. `None` for a price out of range.
pub fn threshold_ticks(condition: Condition, price: Decimal, tick_size: Decimal) -> Option<i64> {
    let ratio = price.checked_div(tick_size)?;
    let rounded = match condition {
        Condition::Above => ratio.ceil(),
        Condition::Below => ratio.floor(),
    };
    rounded.to_i64()
}

/// Whether one step from `from` to `to` fires an alert at `threshold`.
pub fn step_fires(condition: Condition, threshold: i64, from: i64, to: i64) -> bool {
    match condition {
        Condition::Above => from < threshold && threshold <= to,
        Condition::Below => from > threshold && threshold >= to,
    }
}

/// The disjoint threshold ranges, per direction, that the move from `previous` through
/// `path` crossed. Without a previous price (the market's first trade) the first trade
/// only sets the starting point.
pub fn crossed_ranges(previous: Option<i64>, path: &[i64]) -> Vec<Crossed> {
    let mut ups: Vec<(i64, i64)> = Vec::new();
    let mut downs: Vec<(i64, i64)> = Vec::new();
    let mut prices = previous.into_iter().chain(path.iter().copied());
    let Some(mut last) = prices.next() else {
        return Vec::new();
    };
    for price in prices {
        if price > last {
            ups.push((last + 1, price));
        } else if price < last {
            downs.push((price, last - 1));
        }
        last = price;
    }
    let mut crossed: Vec<Crossed> = merge(ups)
        .into_iter()
        .map(|(from, to)| Crossed {
            condition: Condition::Above,
            from,
            to,
        })
        .collect();
    crossed.extend(merge(downs).into_iter().map(|(from, to)| Crossed {
        condition: Condition::Below,
        from,
        to,
    }));
    crossed
}

/// Merges overlapping or touching inclusive ranges.
fn merge(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// The index in `path` of the trade that first fired an alert at `threshold`, if any.
pub fn firing_trade(
    condition: Condition,
    threshold: i64,
    previous: Option<i64>,
    path: &[i64],
) -> Option<usize> {
    let mut last = previous;
    for (index, price) in path.iter().copied().enumerate() {
        if let Some(from) = last {
            if step_fires(condition, threshold, from, price) {
                return Some(index);
            }
        }
        last = Some(price);
    }
    None
}

/// What an alert looks like after firing at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfterFiring {
    pub armed: bool,
    pub cooldown_until: Option<DateTime<Utc>>,
}

/// A one-shot alert disarms; a recurring one stays armed but quiet for its cool-down.
pub fn after_firing(recurring: bool, cooldown_seconds: i32, now: DateTime<Utc>) -> AfterFiring {
    if recurring {
        AfterFiring {
            armed: true,
            cooldown_until: Some(now + Duration::seconds(i64::from(cooldown_seconds.max(0)))),
        }
    } else {
        AfterFiring {
            armed: false,
            cooldown_until: None,
        }
    }
}

/// Whether an armed alert may fire at `now` (not cooling down).
pub fn ready(cooldown_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    cooldown_until.is_none_or(|until| until <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    #[test]
    fn thresholds_round_towards_firing_later() {
        let tick = d("0.5");
        assert_eq!(threshold_ticks(Condition::Above, d("10.2"), tick), Some(21));
        assert_eq!(threshold_ticks(Condition::Below, d("10.2"), tick), Some(20));
        assert_eq!(threshold_ticks(Condition::Above, d("10.5"), tick), Some(21));
        assert_eq!(threshold_ticks(Condition::Below, d("10.5"), tick), Some(21));
        assert_eq!(
            threshold_ticks(Condition::Above, d("1"), Decimal::ZERO),
            None
        );
    }

    #[test]
    fn a_rise_crosses_above_thresholds_only() {
        assert_eq!(
            crossed_ranges(Some(100), &[101, 103]),
            vec![Crossed {
                condition: Condition::Above,
                from: 101,
                to: 103
            }]
        );
        assert!(crossed_ranges(Some(100), &[100, 100]).is_empty());
    }

    #[test]
    fn a_dip_and_recovery_crosses_both_ways() {
        let ranges = crossed_ranges(Some(100), &[95, 97]);
        assert!(ranges.contains(&Crossed {
            condition: Condition::Below,
            from: 95,
            to: 99
        }));
        assert!(ranges.contains(&Crossed {
            condition: Condition::Above,
            from: 96,
            to: 97
        }));
    }

    #[test]
    fn the_first_trade_of_a_market_crosses_nothing() {
        assert!(crossed_ranges(None, &[100]).is_empty());
        assert_eq!(crossed_ranges(None, &[100, 90]).len(), 1);
    }

    #[test]
    fn touching_the_threshold_fires_and_staying_there_does_not() {
        assert!(step_fires(Condition::Above, 100, 99, 100));
        assert!(!step_fires(Condition::Above, 100, 100, 101));
        assert!(step_fires(Condition::Below, 100, 101, 100));
        assert!(!step_fires(Condition::Below, 100, 100, 99));
    }

    #[test]
    fn the_firing_trade_is_the_first_that_crosses() {
        assert_eq!(
            firing_trade(Condition::Above, 105, Some(100), &[103, 106, 110]),
            Some(1)
        );
        assert_eq!(firing_trade(Condition::Above, 105, Some(100), &[103]), None);
    }

    #[test]
    fn recurring_alerts_cool_down_and_one_shots_disarm() {
        let now = Utc::now();
        let recurring = after_firing(true, 60, now);
        assert!(recurring.armed);
        assert!(!ready(recurring.cooldown_until, now));
        assert!(ready(recurring.cooldown_until, now + Duration::seconds(60)));
        assert!(!after_firing(false, 60, now).armed);
    }

    proptest! {
        /// The ranges hold exactly the thresholds some step crosses, each once.
        #[test]
        fn ranges_match_a_step_by_step_check(
            previous in proptest::option::of(0i64..40),
            path in proptest::collection::vec(0i64..40, 0..8),
            threshold in -2i64..42,
        ) {
            let ranges = crossed_ranges(previous, &path);
            for condition in [Condition::Above, Condition::Below] {
                let hits = ranges
                    .iter()
                    .filter(|r| r.condition == condition && r.contains(threshold))
                    .count();
                let expected = firing_trade(condition, threshold, previous, &path).is_some();
                prop_assert_eq!(hits, usize::from(expected));
            }
        }
    }
}
