//! Returns over a period: time-weighted (TWR) and money-weighted (XIRR).
//!
//! TWR measures the investments, not the timing of the owner's deposits: the period is
//! cut at each valuation point, each piece's growth is `value_end / (value_start + net
//! flow)`, with a flow counted at the start of the piece it falls in, and the pieces are
//! chained. XIRR is the one annual rate at which every deposit, withdrawal, the starting
//! value and the ending value discount to zero: it weights each unit of money by how long
//! it was invested. A deposit just before a rise lifts XIRR but not TWR; that is why both
//! are shown, with the net deposits.
//!
//! Rates are not money, but they are still computed in exact decimals (`rust_decimal`'s
//! `exp`/`ln`), to ten decimal places.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, MathematicalOps};

/// Decimal places of the rates returned.
pub const RATE_DP: u32 = 10;

/// The portfolio's value at one point, and the net deposits (deposits minus
/// withdrawals, valued when they happened) since the previous point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub value: Decimal,
    pub net_flow: Decimal,
}

/// Chains the growth of each piece; `None` when no piece had money in it.
pub fn time_weighted(points: &[Period]) -> Option<Decimal> {
    let mut growth = Decimal::ONE;
    let mut any = false;
    for pair in points.windows(2) {
        let base = pair[0].value + pair[1].net_flow;
        if base <= Decimal::ZERO {
            continue;
        }
        let factor = pair[1].value.checked_div(base)?;
        growth = growth.checked_mul(factor)?;
        any = true;
    }
    any.then(|| (growth - Decimal::ONE).round_dp(RATE_DP))
}

/// A cash flow from the owner's side: negative when money goes in (a deposit, or the
/// value at the start), positive when it comes out (a withdrawal, the value at the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub at: DateTime<Utc>,
    pub amount: Decimal,
}

fn years_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
    Decimal::from((to - from).num_seconds()) / Decimal::from(365 * 86_400)
}

/// Net present value of `flows` at `rate`, discounted to the first flow.
fn npv(flows: &[Flow], rate: Decimal) -> Option<Decimal> {
    let start = flows.first()?.at;
    let log = (Decimal::ONE + rate).checked_ln()?;
    let mut total = Decimal::ZERO;
    for flow in flows {
        let t = years_between(start, flow.at);
        let discount = t.checked_mul(log)?.checked_exp()?;
        total = total.checked_add(flow.amount.checked_div(discount)?)?;
    }
    Some(total)
}

/// The annual rate that makes the flows' net present value zero (as spreadsheets'
/// XIRR, 365-day years), by bisection between -99.99 % and +10,000 %. `None` when the
/// flows do not change sign or no rate in that range fits.
pub fn xirr(flows: &[Flow]) -> Option<Decimal> {
    let mut flows = flows.to_vec();
    flows.sort_by_key(|f| f.at);
    let has_in = flows.iter().any(|f| f.amount < Decimal::ZERO);
    let has_out = flows.iter().any(|f| f.amount > Decimal::ZERO);
    if !has_in || !has_out {
        return None;
    }
    let (mut lo, mut hi) = (Decimal::new(-9999, 4), Decimal::from(100));
    let f_lo = npv(&flows, lo)?;
    let f_hi = npv(&flows, hi)?;
    if f_lo.is_zero() {
        return Some(lo.round_dp(RATE_DP));
    }
    if f_lo.is_sign_positive() == f_hi.is_sign_positive() {
        return None;
    }
    let epsilon = Decimal::new(1, 12);
    for _ in 0..200 {
        let mid = (lo + hi) / Decimal::TWO;
        let f_mid = npv(&flows, mid)?;
        if f_mid.is_zero() || hi - lo < epsilon {
            return Some(mid.round_dp(RATE_DP));
        }
        if f_mid.is_sign_positive() == f_lo.is_sign_positive() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(((lo + hi) / Decimal::TWO).round_dp(RATE_DP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    fn date(y: i32, m: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, day, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn twr_ignores_a_mid_period_deposit() {
        // 1000 grows 10 %, then 1000 is deposited and the 2100 grows 10 % again.
        let points = [
            Period {
                value: d("1000"),
                net_flow: d("0"),
            },
            Period {
                value: d("1100"),
                net_flow: d("0"),
            },
            Period {
                value: d("2310"),
                net_flow: d("1000"),
            },
        ];
        assert_eq!(time_weighted(&points), Some(d("0.21")));
        // Nothing invested: no return to speak of.
        let empty = [
            Period {
                value: d("0"),
                net_flow: d("0"),
            },
            Period {
                value: d("0"),
                net_flow: d("0"),
            },
        ];
        assert_eq!(time_weighted(&empty), None);
    }

    #[test]
    fn twr_starts_when_the_first_deposit_arrives() {
        let points = [
            Period {
                value: d("0"),
                net_flow: d("0"),
            },
            Period {
                value: d("550"),
                net_flow: d("500"),
            },
            Period {
                value: d("495"),
                net_flow: d("0"),
            },
        ];
        // +10 %, then -10 %: -1 %.
        assert_eq!(time_weighted(&points), Some(d("-0.01")));
    }

    #[test]
    fn xirr_matches_the_spreadsheet_example() {
        // The classic XIRR example: 37.3362535 %.
        let flows = [
            Flow {
                at: date(2008, 1, 1),
                amount: d("-10000"),
            },
            Flow {
                at: date(2008, 3, 1),
                amount: d("2750"),
            },
            Flow {
                at: date(2008, 10, 30),
                amount: d("4250"),
            },
            Flow {
                at: date(2009, 2, 15),
                amount: d("3250"),
            },
            Flow {
                at: date(2009, 4, 1),
                amount: d("2750"),
            },
        ];
        let rate = xirr(&flows).unwrap_or_default();
        assert!((rate - d("0.373362535")).abs() < d("0.000001"), "{rate}");
    }

    #[test]
    fn xirr_weights_a_mid_period_deposit_by_time() {
        // 1000 at the start, 1000 more half way, 2100 at the end of a 365-day year.
        // Solve 1000(1+r) + 1000(1+r)^0.5 = 2100 by hand: (1+r)^0.5 = x, x² + x - 2.1 = 0,
        // x = (-1 + √9.4) / 2 = 1.0329709..., r = x² - 1 = 0.0670290...
        let flows = [
            Flow {
                at: date(2025, 1, 1),
                amount: d("-1000"),
            },
            Flow {
                at: date(2025, 1, 1) + chrono::Duration::seconds(365 * 43_200),
                amount: d("-1000"),
            },
            Flow {
                at: date(2026, 1, 1),
                amount: d("2100"),
            },
        ];
        let rate = xirr(&flows).unwrap_or_default();
        assert!((rate - d("0.0670290")).abs() < d("0.0000001"), "{rate}");
        // TWR of the same story depends on the values around the deposit, not on it.
        assert_eq!(xirr(&flows[..2]), None);
    }

    #[test]
    fn a_simple_year_is_its_growth() {
        let flows = [
            Flow {
                at: date(2025, 1, 1),
                amount: d("-1000"),
            },
            Flow {
                at: date(2026, 1, 1),
                amount: d("1100"),
            },
        ];
        let rate = xirr(&flows).unwrap_or_default();
        assert!((rate - d("0.1")).abs() < d("0.0000001"), "{rate}");
    }
}
