//! What the demo bot quotes: a random walk for each market's mid price and a ladder of
//! resting orders around it, kept on the market's tick and lot grid and above its
//! minimum notional, so every order it sends is one the exchange accepts.

use rand::Rng;
use rust_decimal::{Decimal, RoundingStrategy};

/// A market's grid, as the bot needs it.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub tick: Decimal,
    pub lot: Decimal,
    pub min_notional: Decimal,
}

/// One order of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub buy: bool,
    pub price: Decimal,
    pub quantity: Decimal,
}

/// How far apart the ladder's levels sit, as a fraction of the mid.
const LEVEL_STEP: Decimal = Decimal::from_parts(5, 0, 0, false, 4); // 0.0005
/// The largest move of the mid in one step, in hundredths of a percent of it.
const MAX_STEP_BPS: i64 = 20;

fn to_grid(value: Decimal, step: Decimal, strategy: RoundingStrategy) -> Decimal {
    if step <= Decimal::ZERO {
        return value;
    }
    ((value / step).round_dp_with_strategy(0, strategy) * step).normalize()
}

/// The next mid: a small random step, never below ten ticks.
pub fn next_mid(mid: Decimal, grid: Grid, rng: &mut impl Rng) -> Decimal {
    let fraction = Decimal::new(rng.gen_range(-MAX_STEP_BPS..=MAX_STEP_BPS), 4);
    let change = fraction * mid;
    let floor = grid.tick * Decimal::TEN;
    to_grid(
        mid + change,
        grid.tick,
        RoundingStrategy::MidpointNearestEven,
    )
    .max(floor)
}

/// `levels` bids below and asks above `mid`, each worth 20 to 200 times the minimum
/// notional (a book that looks like one, yet stays small against the bot's float).
pub fn ladder(mid: Decimal, grid: Grid, levels: u32, rng: &mut impl Rng) -> Vec<Quote> {
    let mut quotes = Vec::with_capacity(levels as usize * 2);
    for level in 1..=levels {
        let offset = (mid * LEVEL_STEP * Decimal::from(level)).max(grid.tick);
        for buy in [true, false] {
            let price = if buy {
                to_grid(
                    mid - offset,
                    grid.tick,
                    RoundingStrategy::ToNegativeInfinity,
                )
            } else {
                to_grid(
                    mid + offset,
                    grid.tick,
                    RoundingStrategy::ToPositiveInfinity,
                )
            };
            if price <= Decimal::ZERO {
                continue;
            }
            let quantity = sized(price, grid, rng.gen_range(20..=200));
            quotes.push(Quote {
                buy,
                price,
                quantity,
            });
        }
    }
    quotes
}

/// The smallest lot multiple whose value at `price` reaches the minimum notional.
pub fn smallest_quantity(price: Decimal, grid: Grid) -> Decimal {
    let needed = if price > Decimal::ZERO {
        grid.min_notional / price
    } else {
        grid.lot
    };
    to_grid(needed, grid.lot, RoundingStrategy::ToPositiveInfinity).max(grid.lot)
}

/// A taker's order size: worth 10 to 100 times the minimum notional.
pub fn taker_quantity(price: Decimal, grid: Grid, rng: &mut impl Rng) -> Decimal {
    sized(price, grid, rng.gen_range(10..=100))
}

/// The smallest lot multiple worth `times` the minimum notional at `price`.
fn sized(price: Decimal, grid: Grid, times: u32) -> Decimal {
    let target = Grid {
        min_notional: grid.min_notional * Decimal::from(times),
        ..grid
    };
    smallest_quantity(price, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rust_decimal::prelude::ToPrimitive;

    fn lots(amount: Decimal, grid: Grid) -> Option<u64> {
        (amount / grid.lot).to_u64()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    fn grids() -> impl Strategy<Value = (Grid, Decimal)> {
        prop_oneof![
            Just((
                Grid {
                    tick: d("0.01"),
                    lot: d("0.00001"),
                    min_notional: d("1")
                },
                d("50000")
            )),
            Just((
                Grid {
                    tick: d("0.01"),
                    lot: d("0.01"),
                    min_notional: d("1")
                },
                d("150")
            )),
            Just((
                Grid {
                    tick: d("0.00001"),
                    lot: d("0.001"),
                    min_notional: d("0.0001")
                },
                d("0.06")
            )),
        ]
    }

    proptest! {
        #[test]
        fn every_quote_is_on_the_grid_and_above_the_minimum((grid, start) in grids(), seed in any::<u64>(), steps in 0usize..200) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut mid = start;
            for _ in 0..steps {
                mid = next_mid(mid, grid, &mut rng);
            }
            prop_assert!(mid >= grid.tick * Decimal::TEN);
            prop_assert_eq!(mid % grid.tick, Decimal::ZERO);
            let quotes = ladder(mid, grid, 5, &mut rng);
            prop_assert_eq!(quotes.len(), 10);
            for quote in &quotes {
                prop_assert_eq!(quote.price % grid.tick, Decimal::ZERO);
                prop_assert_eq!(quote.quantity % grid.lot, Decimal::ZERO);
                prop_assert!(quote.price * quote.quantity >= grid.min_notional);
                // Bids strictly below the mid, asks strictly above: the ladder never
                // trades with itself.
                if quote.buy { prop_assert!(quote.price < mid) } else { prop_assert!(quote.price > mid) }
            }
        }

        #[test]
        fn the_mid_moves_at_most_a_fifth_of_a_percent_plus_a_tick((grid, start) in grids(), seed in any::<u64>()) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let next = next_mid(start, grid, &mut rng);
            let bound = start * d("0.002") + grid.tick;
            prop_assert!((next - start).abs() <= bound, "{} -> {}", start, next);
        }
    }

    #[test]
    fn the_smallest_quantity_meets_the_minimum_notional_by_whole_lots() {
        let grid = Grid {
            tick: d("0.01"),
            lot: d("0.00001"),
            min_notional: d("1"),
        };
        let quantity = smallest_quantity(d("50000"), grid);
        assert_eq!(quantity, d("0.00002"));
        assert_eq!(lots(quantity, grid), Some(2));
    }
}
