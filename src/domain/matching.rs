//! The order-matching planner: given a taker order and the resting opposite orders in
//! price-time priority, decide which fills happen, which resting orders self-trade
//! prevention cancels, and what becomes of the taker's remainder.
//!
//! The service calls [`plan`] inside the transaction that locks the market's row and
//! then writes exactly what the returned [`MatchPlan`] says. The planner is pure and
//! total: no I/O, no floats, no panics on any input. Anything it cannot decide safely
//! becomes [`TakerOutcome::Rejected`], which always means that nothing happens at all.
//!
//! Every amount is computed exactly. `rust_decimal` silently rounds a result that needs
//! more than 28 decimal places or 96 bits of mantissa; a rounded fill would make the
//! ledger disagree with the trades, so such an order is rejected with
//! [`RejectReason::Unrepresentable`] instead. With sane tick and lot sizes this never
//! happens; it guards against absurd inputs.

use std::collections::HashSet;
use std::fmt;

use rust_decimal::Decimal;
use uuid::Uuid;

/// Which side of the book an order is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buys base, pays quote; matches against asks.
    Buy,
    /// Sells base, receives quote; matches against bids.
    Sell,
}

impl Side {
    /// The side an order of this side trades against.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// How long an order stays alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeInForce {
    /// Good till cancelled: a limit remainder rests on the book.
    Gtc,
    /// Immediate or cancel: whatever does not fill at once expires.
    Ioc,
    /// Fill or kill: fills in full at once, or is rejected with no fills.
    Fok,
    /// Good till date: rests like GTC; the service expires it at its date.
    Gtd,
}

/// What happens when a taker would trade with an order of its own owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SelfTradePrevention {
    /// Stop matching; fills so far stand and the taker's remainder expires.
    #[default]
    ExpireTaker,
    /// Cancel the resting order and keep matching past it.
    ExpireMaker,
    /// Cancel the resting order and expire the taker's remainder.
    ExpireBoth,
    /// Allow the self-trade.
    None,
}

/// The incoming order, as the service has parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taker {
    /// Who placed it; compared with each maker's owner for self-trade prevention.
    pub owner: Uuid,
    /// Buy or sell.
    pub side: Side,
    /// The worst acceptable price; `None` makes it a market order.
    pub limit_price: Option<Decimal>,
    /// Base quantity, a positive multiple of `lot_size`. `None` only for a market buy
    /// that gives `quote_quantity` instead.
    pub quantity: Option<Decimal>,
    /// For a market buy only: spend at most this much quote instead of buying a fixed
    /// base quantity.
    pub quote_quantity: Option<Decimal>,
    /// GTC, IOC, FOK or GTD. A market order never rests whatever this says.
    pub time_in_force: TimeInForce,
    /// Reject rather than take liquidity. Needs a GTC or GTD limit order.
    pub post_only: bool,
    /// What to do on meeting one's own resting order.
    pub self_trade_prevention: SelfTradePrevention,
    /// The market's lot size: every fill quantity is a multiple of it. Must be positive.
    pub lot_size: Decimal,
}

/// A resting order on the opposite side, as loaded by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maker {
    /// The resting order's id.
    pub order_id: Uuid,
    /// Its owner, for self-trade prevention.
    pub owner: Uuid,
    /// Its limit price; trades happen at this price.
    pub price: Decimal,
    /// Its unfilled base quantity, positive and a multiple of the lot size.
    pub remaining: Decimal,
}

/// One trade between the taker and one maker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// The resting order that traded.
    pub maker_order_id: Uuid,
    /// That order's owner, who is credited on the other leg of the trade.
    pub maker_owner: Uuid,
    /// The maker's price.
    pub price: Decimal,
    /// Base quantity traded, a positive multiple of the lot size.
    pub quantity: Decimal,
    /// `price * quantity`, exactly; post this rather than recomputing it.
    pub quote_amount: Decimal,
    /// The maker's remaining quantity after this fill; zero means it is fully filled.
    pub maker_remaining: Decimal,
}

/// Why a taker's remainder expired instead of resting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpireReason {
    /// An IOC limit order did not fill in full.
    ImmediateOrCancel,
    /// A market order ran out of resting orders.
    NoLiquidity,
    /// Self-trade prevention (EXPIRE_TAKER or EXPIRE_BOTH) stopped the taker.
    SelfTrade,
}

impl fmt::Display for ExpireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpireReason::ImmediateOrCancel => {
                "the immediate-or-cancel order's unfilled remainder was cancelled"
            }
            ExpireReason::NoLiquidity => {
                "the market order's unfilled remainder was cancelled: not enough resting orders"
            }
            ExpireReason::SelfTrade => {
                "the order's remainder was cancelled to prevent trading with your own order"
            }
        })
    }
}

/// Why a taker was refused. A rejected plan has no fills and no expired makers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The market's lot size is zero or negative.
    InvalidLotSize,
    /// The limit price is zero or negative.
    NonPositivePrice,
    /// The base quantity is zero or negative.
    NonPositiveQuantity,
    /// The quote quantity is zero or negative.
    NonPositiveQuoteQuantity,
    /// The base quantity is not a multiple of the lot size.
    QuantityNotLotMultiple,
    /// Neither a quantity nor a quote quantity was given.
    MissingQuantity,
    /// Both a quantity and a quote quantity were given.
    QuantityAndQuoteQuantity,
    /// A quote quantity was given on a sell or on a limit order.
    QuoteQuantityNotMarketBuy,
    /// Fill-or-kill with a quote quantity: "in full" has no exact meaning there.
    QuoteQuantityWithFillOrKill,
    /// Post-only on a market order, or with IOC or FOK: it could never rest.
    PostOnlyNotRestingLimit,
    /// The post-only order would trade on arrival.
    PostOnlyWouldTake,
    /// The fill-or-kill order cannot be filled in full right now.
    FillOrKillNotFillable,
    /// The quote quantity does not buy a single lot at the best price it may trade at.
    QuoteQuantityBelowOneLot,
    /// An amount would overflow or need rounding to be represented.
    Unrepresentable,
    /// A resting order has a non-positive price or remaining quantity.
    InvalidMaker {
        /// The offending resting order.
        order_id: Uuid,
    },
    /// A resting order's remaining quantity is not a multiple of the lot size.
    MakerNotLotMultiple {
        /// The offending resting order.
        order_id: Uuid,
    },
    /// A resting order came with a better price than the one before it.
    MakersOutOfOrder {
        /// The first resting order out of priority order.
        order_id: Uuid,
    },
    /// The same resting order was supplied twice.
    DuplicateMaker {
        /// The repeated resting order.
        order_id: Uuid,
    },
}

impl RejectReason {
    /// True when the fault lies in the resting orders the service supplied, not in the
    /// taker: a data-integrity bug to log and alert on, not a user error.
    pub fn is_book_fault(&self) -> bool {
        matches!(
            self,
            RejectReason::InvalidMaker { .. }
                | RejectReason::MakerNotLotMultiple { .. }
                | RejectReason::MakersOutOfOrder { .. }
                | RejectReason::DuplicateMaker { .. }
        )
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::InvalidLotSize => f.write_str("the market's lot size must be positive"),
            RejectReason::NonPositivePrice => f.write_str("the limit price must be positive"),
            RejectReason::NonPositiveQuantity => f.write_str("the quantity must be positive"),
            RejectReason::NonPositiveQuoteQuantity => {
                f.write_str("the quote quantity must be positive")
            }
            RejectReason::QuantityNotLotMultiple => {
                f.write_str("the quantity must be a multiple of the market's lot size")
            }
            RejectReason::MissingQuantity => {
                f.write_str("a quantity is required (or, for a market buy, a quote quantity)")
            }
            RejectReason::QuantityAndQuoteQuantity => {
                f.write_str("give either a quantity or a quote quantity, not both")
            }
            RejectReason::QuoteQuantityNotMarketBuy => {
                f.write_str("a quote quantity is only accepted on a market buy")
            }
            RejectReason::QuoteQuantityWithFillOrKill => {
                f.write_str("a fill-or-kill order needs a quantity, not a quote quantity")
            }
            RejectReason::PostOnlyNotRestingLimit => {
                f.write_str("post-only needs a limit order that can rest (GTC or GTD)")
            }
            RejectReason::PostOnlyWouldTake => {
                f.write_str("the post-only order would trade immediately")
            }
            RejectReason::FillOrKillNotFillable => {
                f.write_str("the fill-or-kill order cannot be filled in full")
            }
            RejectReason::QuoteQuantityBelowOneLot => {
                f.write_str("the quote quantity does not buy a single lot at the best price")
            }
            RejectReason::Unrepresentable => {
                f.write_str("an amount is too large or too precise to compute exactly")
            }
            RejectReason::InvalidMaker { order_id } => write!(
                f,
                "resting order {order_id} has a non-positive price or remaining quantity"
            ),
            RejectReason::MakerNotLotMultiple { order_id } => write!(
                f,
                "resting order {order_id} has a remaining quantity that is not a multiple \
                 of the lot size"
            ),
            RejectReason::MakersOutOfOrder { order_id } => {
                write!(f, "resting order {order_id} arrived out of price priority")
            }
            RejectReason::DuplicateMaker { order_id } => {
                write!(f, "resting order {order_id} was supplied twice")
            }
        }
    }
}

impl std::error::Error for RejectReason {}

/// What becomes of the taker once matching is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakerOutcome {
    /// Nothing is left to do. For a market buy by quote quantity this also covers
    /// stopping because the rest of the budget cannot buy one more lot; see
    /// [`MatchPlan::unspent_quote`].
    Filled,
    /// A GTC or GTD limit order's remainder (base quantity) goes on the book.
    Rest {
        /// Unfilled base quantity.
        remaining: Decimal,
    },
    /// The remainder is cancelled.
    Expired {
        /// Unfilled base quantity. Always zero for a market buy by quote quantity,
        /// which has no base target: its leftover is [`MatchPlan::unspent_quote`].
        remaining: Decimal,
        /// Why it expired.
        reason: ExpireReason,
    },
    /// The order is refused and nothing happens: no fills, no expired makers.
    Rejected {
        /// Why, with a message via `Display`.
        reason: RejectReason,
    },
}

/// Everything the service must write for one taker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchPlan {
    /// Trades, in the order the makers were supplied.
    pub fills: Vec<Fill>,
    /// Resting orders cancelled by EXPIRE_MAKER or EXPIRE_BOTH, in the order met.
    /// None of them appears in `fills`.
    pub expired_makers: Vec<Uuid>,
    /// What becomes of the taker.
    pub outcome: TakerOutcome,
    /// Sum of the fills' quantities (base).
    pub filled_quantity: Decimal,
    /// Sum of the fills' `quote_amount`s.
    pub quote_amount: Decimal,
    /// For a market buy by quote quantity: `quote_quantity - quote_amount`, the part of
    /// the budget not spent, to release back to the buyer. Zero for every other order
    /// and for a rejected plan.
    pub unspent_quote: Decimal,
}

impl MatchPlan {
    fn rejected(reason: RejectReason) -> MatchPlan {
        MatchPlan {
            fills: Vec::new(),
            expired_makers: Vec::new(),
            outcome: TakerOutcome::Rejected { reason },
            filled_quantity: Decimal::ZERO,
            quote_amount: Decimal::ZERO,
            unspent_quote: Decimal::ZERO,
        }
    }
}

/// Matches `taker` against `makers` and says what must happen.
///
/// `makers` must be the resting orders on the opposite side in priority order: best
/// price first (lowest ask for a buy, highest bid for a sell), oldest first within a
/// price. They are pulled lazily and no further than needed: at most one maker past the
/// last one traded or expired, and none past a fill that completes the taker. A maker
/// that is out of price order, supplied twice, or has a non-positive or off-lot
/// quantity rejects the taker (see [`RejectReason::is_book_fault`]).
///
/// Rules, in short: a maker crosses when its price is at or better than the limit (any
/// price for a market order) and trades happen at the maker's price. A post-only order
/// is rejected if the best maker crosses, whoever owns it, and rests otherwise. Self-
/// trade prevention applies only to a crossing maker that would otherwise trade. A FOK
/// order either fills in full or is rejected, with STP-expired makers never counting
/// as liquidity; a rejected FOK expires no makers either. A market buy by quote
/// quantity takes whole lots it can afford and stops when not even one more lot is
/// affordable.
#[must_use]
pub fn plan(taker: &Taker, makers: impl IntoIterator<Item = Maker>) -> MatchPlan {
    match run(taker, makers.into_iter()) {
        Ok(plan) => plan,
        Err(reason) => MatchPlan::rejected(reason),
    }
}

/// Whether a stop order triggers at `last_price`: a buy stop at or above its trigger, a
/// sell stop at or below.
pub fn stop_triggered(side: Side, trigger_price: Decimal, last_price: Decimal) -> bool {
    match side {
        Side::Buy => last_price >= trigger_price,
        Side::Sell => last_price <= trigger_price,
    }
}

/// Whether amending a resting order keeps its place in the queue: only at the same
/// price and with a quantity that is lower (or unchanged, where nothing moves) but still
/// positive. Any price change or increase must go to the back of the queue, or amending
/// would let an order jump ahead of orders that were there first.
pub fn amend_keeps_priority(
    old_price: Decimal,
    old_quantity: Decimal,
    new_price: Decimal,
    new_quantity: Decimal,
) -> bool {
    new_price == old_price && new_quantity <= old_quantity && new_quantity > Decimal::ZERO
}

/// The fee on `notional` at `bps` basis points, `notional * bps / 10000`, exactly.
///
/// `None` when the exact fee cannot be represented (it would overflow or need more than
/// 28 decimal places); the service must not round it silently, so it decides (reject,
/// or round in the exchange's favour by policy).
pub fn fee(notional: Decimal, bps: u32) -> Option<Decimal> {
    // Multiplying by 0.0001 only moves the decimal point, so it stays exact.
    exact::mul(
        exact::mul(notional, Decimal::from(bps))?,
        Decimal::new(1, 4),
    )
}

/// Exact decimal arithmetic on `(mantissa, scale)` pairs in `i128`, failing rather than
/// rounding. Inputs are normalised first so trailing zeros do not waste headroom.
mod exact {
    use rust_decimal::Decimal;

    fn parts(x: Decimal) -> (i128, u32) {
        let n = x.normalize();
        (n.mantissa(), n.scale())
    }

    fn build(mut mantissa: i128, mut scale: u32) -> Option<Decimal> {
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Decimal::try_from_i128_with_scale(mantissa, scale).ok()
    }

    fn align(a: Decimal, b: Decimal) -> Option<(i128, i128)> {
        let (ma, sa) = parts(a);
        let (mb, sb) = parts(b);
        let scale = sa.max(sb);
        Some((
            ma.checked_mul(10i128.checked_pow(scale - sa)?)?,
            mb.checked_mul(10i128.checked_pow(scale - sb)?)?,
        ))
    }

    fn aligned_scale(a: Decimal, b: Decimal) -> u32 {
        parts(a).1.max(parts(b).1)
    }

    pub fn add(a: Decimal, b: Decimal) -> Option<Decimal> {
        let (ma, mb) = align(a, b)?;
        build(ma.checked_add(mb)?, aligned_scale(a, b))
    }

    pub fn sub(a: Decimal, b: Decimal) -> Option<Decimal> {
        let (ma, mb) = align(a, b)?;
        build(ma.checked_sub(mb)?, aligned_scale(a, b))
    }

    pub fn mul(a: Decimal, b: Decimal) -> Option<Decimal> {
        let (ma, sa) = parts(a);
        let (mb, sb) = parts(b);
        build(ma.checked_mul(mb)?, sa + sb)
    }

    /// `floor(a / b)` as a whole number, for `a >= 0` and `b > 0`.
    pub fn div_floor(a: Decimal, b: Decimal) -> Option<i128> {
        let (ma, mb) = align(a, b)?;
        if ma < 0 || mb <= 0 {
            return None;
        }
        ma.checked_div(mb)
    }

    pub fn whole(n: i128) -> Option<Decimal> {
        build(n, 0)
    }

    pub fn is_multiple(x: Decimal, unit: Decimal) -> Option<bool> {
        let (mx, mu) = align(x, unit)?;
        Some(mx.checked_rem(mu)? == 0)
    }
}

fn exact_or_reject(value: Option<Decimal>) -> Result<Decimal, RejectReason> {
    value.ok_or(RejectReason::Unrepresentable)
}

/// What the taker still has to trade.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// Base quantity left.
    Base(Decimal),
    /// Quote left to spend (market buy by quote quantity).
    Quote(Decimal),
}

impl Budget {
    fn is_spent(self) -> bool {
        match self {
            Budget::Base(left) | Budget::Quote(left) => left <= Decimal::ZERO,
        }
    }
}

fn validate(taker: &Taker) -> Result<Budget, RejectReason> {
    if taker.lot_size <= Decimal::ZERO {
        return Err(RejectReason::InvalidLotSize);
    }
    if let Some(price) = taker.limit_price {
        if price <= Decimal::ZERO {
            return Err(RejectReason::NonPositivePrice);
        }
    }
    let is_market = taker.limit_price.is_none();
    let can_rest = matches!(taker.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd);
    if taker.post_only && (is_market || !can_rest) {
        return Err(RejectReason::PostOnlyNotRestingLimit);
    }
    match (taker.quantity, taker.quote_quantity) {
        (Some(_), Some(_)) => Err(RejectReason::QuantityAndQuoteQuantity),
        (None, None) => Err(RejectReason::MissingQuantity),
        (Some(quantity), None) => {
            if quantity <= Decimal::ZERO {
                return Err(RejectReason::NonPositiveQuantity);
            }
            match exact::is_multiple(quantity, taker.lot_size) {
                Some(true) => Ok(Budget::Base(quantity)),
                Some(false) => Err(RejectReason::QuantityNotLotMultiple),
                None => Err(RejectReason::Unrepresentable),
            }
        }
        (None, Some(quote)) => {
            if !is_market || taker.side != Side::Buy {
                return Err(RejectReason::QuoteQuantityNotMarketBuy);
            }
            if taker.time_in_force == TimeInForce::Fok {
                return Err(RejectReason::QuoteQuantityWithFillOrKill);
            }
            if quote <= Decimal::ZERO {
                return Err(RejectReason::NonPositiveQuoteQuantity);
            }
            Ok(Budget::Quote(quote))
        }
    }
}

fn crosses(side: Side, limit: Option<Decimal>, maker_price: Decimal) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => maker_price <= limit,
        (Side::Sell, Some(limit)) => maker_price >= limit,
    }
}

/// The maker iterator with the integrity checks the matching loop relies on: stopping at
/// the first non-crossing maker is only right if prices never improve further down.
struct Book<I> {
    makers: I,
    taker_side: Side,
    lot_size: Decimal,
    last_price: Option<Decimal>,
    seen: HashSet<Uuid>,
}

impl<I: Iterator<Item = Maker>> Book<I> {
    fn new(makers: I, taker_side: Side, lot_size: Decimal) -> Self {
        Book {
            makers,
            taker_side,
            lot_size,
            last_price: None,
            seen: HashSet::new(),
        }
    }

    fn next(&mut self) -> Result<Option<Maker>, RejectReason> {
        let Some(maker) = self.makers.next() else {
            return Ok(None);
        };
        let order_id = maker.order_id;
        if maker.price <= Decimal::ZERO || maker.remaining <= Decimal::ZERO {
            return Err(RejectReason::InvalidMaker { order_id });
        }
        match exact::is_multiple(maker.remaining, self.lot_size) {
            Some(true) => {}
            Some(false) => return Err(RejectReason::MakerNotLotMultiple { order_id }),
            None => return Err(RejectReason::Unrepresentable),
        }
        if let Some(last) = self.last_price {
            let improves = match self.taker_side {
                Side::Buy => maker.price < last,
                Side::Sell => maker.price > last,
            };
            if improves {
                return Err(RejectReason::MakersOutOfOrder { order_id });
            }
        }
        if !self.seen.insert(order_id) {
            return Err(RejectReason::DuplicateMaker { order_id });
        }
        self.last_price = Some(maker.price);
        Ok(Some(maker))
    }
}

/// Why the matching loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing left to trade, or (quote budget) not even one more lot is affordable.
    Done,
    BookExhausted,
    NoCross,
    SelfTrade,
}

fn run(taker: &Taker, makers: impl Iterator<Item = Maker>) -> Result<MatchPlan, RejectReason> {
    let mut budget = validate(taker)?;
    let mut book = Book::new(makers, taker.side, taker.lot_size);
    if taker.post_only {
        return post_only(taker, budget, &mut book);
    }

    let mut fills = Vec::new();
    let mut expired_makers = Vec::new();
    let mut filled_quantity = Decimal::ZERO;
    let mut quote_amount = Decimal::ZERO;

    let stop = loop {
        if budget.is_spent() {
            break Stop::Done;
        }
        let Some(maker) = book.next()? else {
            break Stop::BookExhausted;
        };
        if !crosses(taker.side, taker.limit_price, maker.price) {
            break Stop::NoCross;
        }
        let quantity = match budget {
            Budget::Base(left) => left.min(maker.remaining),
            Budget::Quote(left) => affordable(maker.price, maker.remaining, left, taker.lot_size)?,
        };
        // Makers further down are no cheaper, so one lot unaffordable here is
        // unaffordable everywhere; checked before STP so an own order the taker could
        // not have reached is not cancelled for nothing.
        if quantity <= Decimal::ZERO {
            break Stop::Done;
        }
        if maker.owner == taker.owner {
            match taker.self_trade_prevention {
                SelfTradePrevention::ExpireTaker => break Stop::SelfTrade,
                SelfTradePrevention::ExpireMaker => {
                    expired_makers.push(maker.order_id);
                    continue;
                }
                SelfTradePrevention::ExpireBoth => {
                    expired_makers.push(maker.order_id);
                    break Stop::SelfTrade;
                }
                SelfTradePrevention::None => {}
            }
        }

        let cost = exact_or_reject(exact::mul(maker.price, quantity))?;
        let maker_remaining = exact_or_reject(exact::sub(maker.remaining, quantity))?;
        filled_quantity = exact_or_reject(exact::add(filled_quantity, quantity))?;
        quote_amount = exact_or_reject(exact::add(quote_amount, cost))?;
        budget = match budget {
            Budget::Base(left) => Budget::Base(exact_or_reject(exact::sub(left, quantity))?),
            Budget::Quote(left) => Budget::Quote(exact_or_reject(exact::sub(left, cost))?),
        };
        fills.push(Fill {
            maker_order_id: maker.order_id,
            maker_owner: maker.owner,
            price: maker.price,
            quantity,
            quote_amount: cost,
            maker_remaining,
        });
        // A maker left partly filled means the taker ran out: for a base quantity that
        // is the top-of-loop check, but a quote budget may keep dust that cannot buy
        // another lot at this price or any later one, so stop without pulling more.
        if maker_remaining > Decimal::ZERO {
            break Stop::Done;
        }
    };

    let (remaining, unspent_quote) = match budget {
        Budget::Base(left) => (left, Decimal::ZERO),
        Budget::Quote(left) => (Decimal::ZERO, left),
    };
    let is_market = taker.limit_price.is_none();
    let outcome = if taker.time_in_force == TimeInForce::Fok {
        if remaining > Decimal::ZERO {
            return Err(RejectReason::FillOrKillNotFillable);
        }
        TakerOutcome::Filled
    } else {
        match stop {
            Stop::Done if remaining > Decimal::ZERO => {
                // Only reachable for a base order via a partially filled maker, which
                // implies the taker's remainder is zero; kept total all the same.
                TakerOutcome::Expired {
                    remaining,
                    reason: ExpireReason::NoLiquidity,
                }
            }
            Stop::Done if fills.is_empty() => {
                return Err(RejectReason::QuoteQuantityBelowOneLot);
            }
            Stop::Done => TakerOutcome::Filled,
            Stop::SelfTrade => TakerOutcome::Expired {
                remaining,
                reason: ExpireReason::SelfTrade,
            },
            Stop::BookExhausted | Stop::NoCross if is_market => TakerOutcome::Expired {
                remaining,
                reason: ExpireReason::NoLiquidity,
            },
            Stop::BookExhausted | Stop::NoCross => match taker.time_in_force {
                TimeInForce::Gtc | TimeInForce::Gtd => TakerOutcome::Rest { remaining },
                TimeInForce::Ioc | TimeInForce::Fok => TakerOutcome::Expired {
                    remaining,
                    reason: ExpireReason::ImmediateOrCancel,
                },
            },
        }
    };

    Ok(MatchPlan {
        fills,
        expired_makers,
        outcome,
        filled_quantity,
        quote_amount,
        unspent_quote,
    })
}

/// The base quantity a quote budget buys from one maker: the whole maker if affordable,
/// else as many whole lots as the budget covers (possibly none).
fn affordable(
    price: Decimal,
    maker_remaining: Decimal,
    budget: Decimal,
    lot_size: Decimal,
) -> Result<Decimal, RejectReason> {
    if let Some(whole_cost) = exact::mul(price, maker_remaining) {
        if whole_cost <= budget {
            return Ok(maker_remaining);
        }
    }
    let lot_cost = exact_or_reject(exact::mul(price, lot_size))?;
    let lots = exact::div_floor(budget, lot_cost).ok_or(RejectReason::Unrepresentable)?;
    let quantity = exact_or_reject(exact::mul(exact_or_reject(exact::whole(lots))?, lot_size))?;
    // Reached only when the whole maker is unaffordable (or its cost unrepresentable),
    // so the lots fit inside it; min() keeps that true even if the cost overflowed.
    Ok(quantity.min(maker_remaining))
}

fn post_only(
    taker: &Taker,
    budget: Budget,
    book: &mut Book<impl Iterator<Item = Maker>>,
) -> Result<MatchPlan, RejectReason> {
    // validate() already guarantees both; matched again so no branch can misbehave.
    let Budget::Base(quantity) = budget else {
        return Err(RejectReason::QuoteQuantityNotMarketBuy);
    };
    let Some(limit) = taker.limit_price else {
        return Err(RejectReason::PostOnlyNotRestingLimit);
    };
    // The book is in priority order, so if the best maker does not cross none does.
    if let Some(best) = book.next()? {
        if crosses(taker.side, Some(limit), best.price) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
    }
    Ok(MatchPlan {
        fills: Vec::new(),
        expired_makers: Vec::new(),
        outcome: TakerOutcome::Rest {
            remaining: quantity,
        },
        filled_quantity: Decimal::ZERO,
        quote_amount: Decimal::ZERO,
        unspent_quote: Decimal::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::str::FromStr;

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::*;

    const ME: Uuid = Uuid::from_u128(0xA);
    const OTHER: Uuid = Uuid::from_u128(0xB);

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal literal")
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(0x1000 + n)
    }

    fn maker(n: u128, owner: Uuid, price: &str, remaining: &str) -> Maker {
        Maker {
            order_id: id(n),
            owner,
            price: d(price),
            remaining: d(remaining),
        }
    }

    fn limit(side: Side, price: &str, quantity: &str, time_in_force: TimeInForce) -> Taker {
        Taker {
            owner: ME,
            side,
            limit_price: Some(d(price)),
            quantity: Some(d(quantity)),
            quote_quantity: None,
            time_in_force,
            post_only: false,
            self_trade_prevention: SelfTradePrevention::ExpireTaker,
            lot_size: d("1"),
        }
    }

    fn market(side: Side, quantity: &str) -> Taker {
        Taker {
            limit_price: None,
            time_in_force: TimeInForce::Ioc,
            ..limit(side, "1", quantity, TimeInForce::Ioc)
        }
    }

    fn market_quote(quote: &str, lot_size: &str) -> Taker {
        Taker {
            quantity: None,
            quote_quantity: Some(d(quote)),
            lot_size: d(lot_size),
            ..market(Side::Buy, "1")
        }
    }

    /// Plans while counting how many makers were pulled, to check laziness.
    fn plan_counted(taker: &Taker, makers: &[Maker]) -> (MatchPlan, usize) {
        let pulled = Cell::new(0usize);
        let result = plan(
            taker,
            makers
                .iter()
                .cloned()
                .inspect(|_| pulled.set(pulled.get() + 1)),
        );
        (result, pulled.get())
    }

    /// Plans, checks every invariant, and returns the plan and the number pulled.
    fn checked(taker: &Taker, makers: &[Maker]) -> (MatchPlan, usize) {
        let (result, pulled) = plan_counted(taker, makers);
        if let Err(e) = check(taker, makers, &result, pulled) {
            panic!("invariant broken: {e}\ntaker: {taker:?}\nmakers: {makers:?}\nplan: {result:?}");
        }
        (result, pulled)
    }

    fn fill_summary(plan: &MatchPlan) -> Vec<(Uuid, Decimal, Decimal)> {
        plan.fills
            .iter()
            .map(|f| (f.maker_order_id, f.price, f.quantity))
            .collect()
    }

    fn rejected(reason: RejectReason) -> TakerOutcome {
        TakerOutcome::Rejected { reason }
    }

    fn expired(remaining: &str, reason: ExpireReason) -> TakerOutcome {
        TakerOutcome::Expired {
            remaining: d(remaining),
            reason,
        }
    }

    fn rest(remaining: &str) -> TakerOutcome {
        TakerOutcome::Rest {
            remaining: d(remaining),
        }
    }

    /// The crossing rule, restated independently of the planner's own helper.
    fn crosses_ref(taker: &Taker, maker_price: Decimal) -> bool {
        match taker.limit_price {
            None => true,
            Some(limit) if taker.side == Side::Buy => maker_price <= limit,
            Some(limit) => maker_price >= limit,
        }
    }

    /// Every property the service relies on, for any taker and book. Used by the unit
    /// tests and the property tests alike.
    fn check(
        taker: &Taker,
        makers: &[Maker],
        plan: &MatchPlan,
        pulled: usize,
    ) -> Result<(), TestCaseError> {
        prop_assert!(pulled <= makers.len());
        if let TakerOutcome::Rejected { .. } = plan.outcome {
            prop_assert!(plan.fills.is_empty());
            prop_assert!(plan.expired_makers.is_empty());
            prop_assert_eq!(plan.filled_quantity, Decimal::ZERO);
            prop_assert_eq!(plan.quote_amount, Decimal::ZERO);
            prop_assert_eq!(plan.unspent_quote, Decimal::ZERO);
            return Ok(());
        }
        let stp = taker.self_trade_prevention;
        let lot = taker.lot_size;
        let index_of = |order_id: Uuid| makers.iter().position(|m| m.order_id == order_id);

        // (index into the book, left partly filled)
        let mut touched: Vec<(usize, bool)> = Vec::new();
        let mut sum_quantity = Decimal::ZERO;
        let mut sum_quote = Decimal::ZERO;
        let mut last_fill_index = None;
        for fill in &plan.fills {
            let i = index_of(fill.maker_order_id);
            prop_assert!(i.is_some(), "fill of an unknown maker");
            let i = i.unwrap_or_default();
            let m = &makers[i];
            prop_assert!(last_fill_index < Some(i), "fills out of book order");
            last_fill_index = Some(i);
            prop_assert!(fill.quantity > Decimal::ZERO);
            prop_assert_eq!(exact::is_multiple(fill.quantity, lot), Some(true));
            prop_assert!(fill.quantity <= m.remaining);
            prop_assert_eq!(fill.price, m.price);
            prop_assert_eq!(fill.maker_owner, m.owner);
            prop_assert_eq!(
                Some(fill.maker_remaining),
                exact::sub(m.remaining, fill.quantity)
            );
            prop_assert_eq!(
                Some(fill.quote_amount),
                exact::mul(fill.price, fill.quantity)
            );
            prop_assert!(crosses_ref(taker, fill.price));
            if m.owner == taker.owner {
                prop_assert_eq!(stp, SelfTradePrevention::None, "own order traded");
            }
            let q = exact::add(sum_quantity, fill.quantity);
            let a = exact::add(sum_quote, fill.quote_amount);
            prop_assert!(q.is_some() && a.is_some());
            sum_quantity = q.unwrap_or_default();
            sum_quote = a.unwrap_or_default();
            touched.push((i, fill.maker_remaining > Decimal::ZERO));
        }
        prop_assert_eq!(sum_quantity, plan.filled_quantity);
        prop_assert_eq!(sum_quote, plan.quote_amount);

        let mut last_expired_index = None;
        for &order_id in &plan.expired_makers {
            let i = index_of(order_id);
            prop_assert!(i.is_some(), "expired an unknown maker");
            let i = i.unwrap_or_default();
            prop_assert!(last_expired_index < Some(i), "expired out of book order");
            last_expired_index = Some(i);
            prop_assert_eq!(makers[i].owner, taker.owner, "expired someone else's order");
            prop_assert!(crosses_ref(taker, makers[i].price));
            prop_assert!(matches!(
                stp,
                SelfTradePrevention::ExpireMaker | SelfTradePrevention::ExpireBoth
            ));
            touched.push((i, false));
        }
        if stp == SelfTradePrevention::ExpireBoth {
            prop_assert!(plan.expired_makers.len() <= 1);
        }

        // Touched makers are exactly a prefix of the book, each touched once: makers
        // are used in the given order with none skipped except by STP.
        touched.sort_unstable();
        for (k, &(i, partial)) in touched.iter().enumerate() {
            prop_assert_eq!(i, k, "a maker was skipped or touched twice");
            if partial {
                prop_assert_eq!(k + 1, touched.len(), "partly filled maker is not the last");
            }
        }
        let n_touched = touched.len();
        let partial_last = touched.last().is_some_and(|t| t.1);
        let untouched = &makers[n_touched..];
        // The planner cannot see disorder in makers it never pulls, so what lies beyond
        // the last one pulled says something only about a book in priority order.
        let in_priority_order = makers.windows(2).all(|w| match taker.side {
            Side::Buy => w[0].price <= w[1].price,
            Side::Sell => w[0].price >= w[1].price,
        });
        let none_cross =
            !in_priority_order || untouched.iter().all(|m| !crosses_ref(taker, m.price));
        prop_assert!(pulled <= n_touched + 1, "looked further than needed");

        if taker.post_only {
            prop_assert!(plan.fills.is_empty() && plan.expired_makers.is_empty());
            prop_assert!(pulled <= 1);
        }

        match (taker.quantity, taker.quote_quantity) {
            (Some(quantity), _) => {
                prop_assert_eq!(plan.unspent_quote, Decimal::ZERO);
                prop_assert!(plan.filled_quantity <= quantity);
                let left = exact::sub(quantity, plan.filled_quantity).unwrap_or(Decimal::MIN);
                prop_assert!(left >= Decimal::ZERO);
                if taker.time_in_force == TimeInForce::Fok {
                    prop_assert_eq!(&plan.outcome, &TakerOutcome::Filled);
                }
                match plan.outcome {
                    TakerOutcome::Filled => {
                        prop_assert_eq!(left, Decimal::ZERO);
                        prop_assert_eq!(pulled, n_touched, "pulled past the completing fill");
                    }
                    TakerOutcome::Rest { remaining } => {
                        prop_assert_eq!(remaining, left);
                        prop_assert!(left > Decimal::ZERO);
                        prop_assert!(taker.limit_price.is_some());
                        prop_assert!(matches!(
                            taker.time_in_force,
                            TimeInForce::Gtc | TimeInForce::Gtd
                        ));
                        prop_assert!(none_cross, "a resting taker would cross the book");
                        prop_assert!(!partial_last);
                    }
                    TakerOutcome::Expired { remaining, reason } => {
                        prop_assert_eq!(remaining, left);
                        prop_assert!(left > Decimal::ZERO);
                        match reason {
                            ExpireReason::ImmediateOrCancel => {
                                prop_assert!(taker.limit_price.is_some());
                                prop_assert_eq!(taker.time_in_force, TimeInForce::Ioc);
                                prop_assert!(none_cross);
                            }
                            ExpireReason::NoLiquidity => {
                                prop_assert!(taker.limit_price.is_none());
                                prop_assert!(untouched.is_empty());
                            }
                            ExpireReason::SelfTrade => {
                                check_self_trade_stop(taker, untouched, plan, pulled, n_touched)?
                            }
                        }
                    }
                    TakerOutcome::Rejected { .. } => {}
                }
            }
            (None, Some(quote)) => {
                prop_assert!(plan.quote_amount <= quote);
                prop_assert_eq!(
                    exact::add(plan.quote_amount, plan.unspent_quote),
                    Some(quote)
                );
                prop_assert!(plan.unspent_quote >= Decimal::ZERO);
                match plan.outcome {
                    TakerOutcome::Filled => {
                        prop_assert!(!plan.fills.is_empty());
                        if plan.unspent_quote > Decimal::ZERO {
                            // It stopped because one more lot was unaffordable, either at
                            // the partly filled maker or at the next one.
                            let next_price = if partial_last {
                                plan.fills.last().map(|f| f.price)
                            } else {
                                untouched.first().map(|m| m.price)
                            };
                            prop_assert!(next_price.is_some());
                            let lot_cost =
                                exact::mul(next_price.unwrap_or_default(), lot).unwrap_or_default();
                            prop_assert!(plan.unspent_quote < lot_cost);
                        }
                    }
                    TakerOutcome::Expired { remaining, reason } => {
                        prop_assert_eq!(remaining, Decimal::ZERO);
                        match reason {
                            ExpireReason::NoLiquidity => prop_assert!(untouched.is_empty()),
                            ExpireReason::SelfTrade => {
                                check_self_trade_stop(taker, untouched, plan, pulled, n_touched)?
                            }
                            ExpireReason::ImmediateOrCancel => {
                                prop_assert!(false, "a market order expired as IOC")
                            }
                        }
                    }
                    TakerOutcome::Rest { .. } => prop_assert!(false, "a market order rested"),
                    TakerOutcome::Rejected { .. } => {}
                }
            }
            (None, None) => prop_assert!(false, "an order without quantity was accepted"),
        }
        Ok(())
    }

    fn check_self_trade_stop(
        taker: &Taker,
        untouched: &[Maker],
        plan: &MatchPlan,
        pulled: usize,
        n_touched: usize,
    ) -> Result<(), TestCaseError> {
        match taker.self_trade_prevention {
            SelfTradePrevention::ExpireTaker => {
                let stopper = untouched.first();
                prop_assert!(
                    stopper.is_some_and(|m| m.owner == taker.owner && crosses_ref(taker, m.price))
                );
                prop_assert_eq!(pulled, n_touched + 1);
            }
            SelfTradePrevention::ExpireBoth => {
                prop_assert_eq!(plan.expired_makers.len(), 1);
                prop_assert_eq!(pulled, n_touched);
            }
            other => prop_assert!(false, "self-trade expiry under {:?}", other),
        }
        Ok(())
    }

    // ---- crossing and execution price ----

    #[test]
    fn buy_crosses_asks_at_or_below_its_limit_and_stops_at_the_first_that_does_not() {
        let book = [
            maker(1, OTHER, "9", "1"),
            maker(2, OTHER, "10", "1"),
            maker(3, OTHER, "11", "1"),
            maker(4, OTHER, "12", "1"),
        ];
        let (p, pulled) = checked(&limit(Side::Buy, "10", "5", TimeInForce::Gtc), &book);
        assert_eq!(
            fill_summary(&p),
            vec![(id(1), d("9"), d("1")), (id(2), d("10"), d("1"))]
        );
        assert_eq!(p.outcome, rest("3"));
        assert_eq!(pulled, 3, "the first non-crossing ask ends the search");
    }

    #[test]
    fn sell_crosses_bids_at_or_above_its_limit() {
        let book = [
            maker(1, OTHER, "11", "1"),
            maker(2, OTHER, "10", "1"),
            maker(3, OTHER, "9", "1"),
        ];
        let (p, _) = checked(&limit(Side::Sell, "10", "5", TimeInForce::Gtc), &book);
        assert_eq!(
            fill_summary(&p),
            vec![(id(1), d("11"), d("1")), (id(2), d("10"), d("1"))]
        );
        assert_eq!(p.outcome, rest("3"));
    }

    #[test]
    fn trades_happen_at_the_maker_price_not_the_limit() {
        let (p, _) = checked(
            &limit(Side::Buy, "12", "1", TimeInForce::Gtc),
            &[maker(1, OTHER, "10", "1")],
        );
        assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("1"))]);
        assert_eq!(p.quote_amount, d("10"));
        let (p, _) = checked(
            &limit(Side::Sell, "8", "1", TimeInForce::Gtc),
            &[maker(1, OTHER, "10", "1")],
        );
        assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("1"))]);
        assert_eq!(p.outcome, TakerOutcome::Filled);
    }

    #[test]
    fn partial_fills_across_makers_and_price_levels() {
        let book = [
            maker(1, OTHER, "10", "2"),
            maker(2, OTHER, "10", "2"),
            maker(3, OTHER, "11", "3"),
            maker(4, OTHER, "11", "3"),
        ];
        let (p, pulled) = checked(&limit(Side::Buy, "11", "5", TimeInForce::Gtc), &book);
        assert_eq!(
            fill_summary(&p),
            vec![
                (id(1), d("10"), d("2")),
                (id(2), d("10"), d("2")),
                (id(3), d("11"), d("1")),
            ]
        );
        let left: Vec<Decimal> = p.fills.iter().map(|f| f.maker_remaining).collect();
        assert_eq!(left, vec![d("0"), d("0"), d("2")]);
        assert_eq!(p.filled_quantity, d("5"));
        assert_eq!(p.quote_amount, d("51"));
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(pulled, 3, "nothing is pulled once the taker is filled");
    }

    #[test]
    fn fractional_lots_fill_exactly() {
        let taker = Taker {
            lot_size: d("0.001"),
            ..limit(Side::Buy, "30000.5", "0.75", TimeInForce::Gtc)
        };
        let book = [
            maker(1, OTHER, "30000.25", "0.333"),
            maker(2, OTHER, "30000.5", "1.000"),
        ];
        let (p, _) = checked(&taker, &book);
        assert_eq!(
            fill_summary(&p),
            vec![
                (id(1), d("30000.25"), d("0.333")),
                (id(2), d("30000.5"), d("0.417")),
            ]
        );
        assert_eq!(p.quote_amount, d("9990.08325") + d("12510.2085"));
        assert_eq!(p.outcome, TakerOutcome::Filled);
    }

    // ---- time in force ----

    #[test]
    fn gtc_and_gtd_remainders_rest() {
        let book = [maker(1, OTHER, "10", "2"), maker(2, OTHER, "11", "1")];
        for tif in [TimeInForce::Gtc, TimeInForce::Gtd] {
            let (p, _) = checked(&limit(Side::Buy, "10", "5", tif), &book);
            assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("2"))]);
            assert_eq!(p.outcome, rest("3"));
        }
        let (p, pulled) = checked(&limit(Side::Buy, "10", "5", TimeInForce::Gtc), &[]);
        assert_eq!((p.outcome, pulled), (rest("5"), 0));
    }

    #[test]
    fn ioc_remainder_expires() {
        let book = [maker(1, OTHER, "10", "3"), maker(2, OTHER, "11", "3")];
        let (p, _) = checked(&limit(Side::Buy, "10", "5", TimeInForce::Ioc), &book);
        assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("3"))]);
        assert_eq!(p.outcome, expired("2", ExpireReason::ImmediateOrCancel));
        let (p, _) = checked(&limit(Side::Buy, "9", "5", TimeInForce::Ioc), &book);
        assert!(p.fills.is_empty());
        assert_eq!(p.outcome, expired("5", ExpireReason::ImmediateOrCancel));
    }

    #[test]
    fn fok_fills_in_full_when_it_can() {
        let book = [
            maker(1, OTHER, "10", "3"),
            maker(2, OTHER, "11", "3"),
            maker(3, OTHER, "11", "3"),
        ];
        let (p, pulled) = checked(&limit(Side::Buy, "11", "5", TimeInForce::Fok), &book);
        assert_eq!(
            fill_summary(&p),
            vec![(id(1), d("10"), d("3")), (id(2), d("11"), d("2"))]
        );
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(pulled, 2);
    }

    #[test]
    fn fok_is_rejected_without_fills_when_it_cannot_fill_in_full() {
        let book = [maker(1, OTHER, "10", "3"), maker(2, OTHER, "11", "3")];
        // Price limit cuts it short.
        let (p, _) = checked(&limit(Side::Buy, "10", "5", TimeInForce::Fok), &book);
        assert_eq!(p.outcome, rejected(RejectReason::FillOrKillNotFillable));
        // The book runs out.
        let (p, _) = checked(&limit(Side::Buy, "11", "7", TimeInForce::Fok), &book);
        assert_eq!(p.outcome, rejected(RejectReason::FillOrKillNotFillable));
        // Exactly enough.
        let (p, _) = checked(&limit(Side::Buy, "11", "6", TimeInForce::Fok), &book);
        assert_eq!(p.outcome, TakerOutcome::Filled);
        // A market FOK too.
        let fok_market = Taker {
            time_in_force: TimeInForce::Fok,
            ..market(Side::Buy, "7")
        };
        let (p, _) = checked(&fok_market, &book);
        assert_eq!(p.outcome, rejected(RejectReason::FillOrKillNotFillable));
    }

    // ---- post-only ----

    #[test]
    fn post_only_is_rejected_when_it_would_take() {
        let taker = Taker {
            post_only: true,
            ..limit(Side::Buy, "10", "1", TimeInForce::Gtc)
        };
        let (p, pulled) = checked(&taker, &[maker(1, OTHER, "10", "1")]);
        assert_eq!(p.outcome, rejected(RejectReason::PostOnlyWouldTake));
        assert_eq!(pulled, 1);
        // Even against one's own order, and without expiring it.
        let taker = Taker {
            self_trade_prevention: SelfTradePrevention::ExpireMaker,
            ..taker
        };
        let (p, _) = checked(
            &taker,
            &[maker(1, ME, "9", "1"), maker(2, OTHER, "11", "1")],
        );
        assert_eq!(p.outcome, rejected(RejectReason::PostOnlyWouldTake));
    }

    #[test]
    fn post_only_rests_when_it_would_not_take() {
        let taker = Taker {
            post_only: true,
            ..limit(Side::Sell, "10", "4", TimeInForce::Gtd)
        };
        let book = [maker(1, OTHER, "9", "1"), maker(2, OTHER, "8", "1")];
        let (p, pulled) = checked(&taker, &book);
        assert_eq!(p.outcome, rest("4"));
        assert_eq!(pulled, 1, "only the best bid matters");
        let (p, _) = checked(&taker, &[]);
        assert_eq!(p.outcome, rest("4"));
    }

    #[test]
    fn post_only_needs_a_resting_limit_order() {
        for tif in [TimeInForce::Ioc, TimeInForce::Fok] {
            let taker = Taker {
                post_only: true,
                ..limit(Side::Buy, "10", "1", tif)
            };
            let (p, pulled) = checked(&taker, &[maker(1, OTHER, "11", "1")]);
            assert_eq!(p.outcome, rejected(RejectReason::PostOnlyNotRestingLimit));
            assert_eq!(pulled, 0);
        }
        let taker = Taker {
            post_only: true,
            time_in_force: TimeInForce::Gtc,
            ..market(Side::Buy, "1")
        };
        let (p, _) = checked(&taker, &[]);
        assert_eq!(p.outcome, rejected(RejectReason::PostOnlyNotRestingLimit));
    }

    // ---- self-trade prevention ----

    fn stp_book() -> [Maker; 3] {
        [
            maker(1, OTHER, "10", "1"),
            maker(2, ME, "10", "1"),
            maker(3, OTHER, "11", "5"),
        ]
    }

    fn stp_taker(mode: SelfTradePrevention, tif: TimeInForce) -> Taker {
        Taker {
            self_trade_prevention: mode,
            ..limit(Side::Buy, "11", "4", tif)
        }
    }

    #[test]
    fn stp_expire_taker_keeps_earlier_fills_and_expires_the_rest() {
        let (p, pulled) = checked(
            &stp_taker(SelfTradePrevention::ExpireTaker, TimeInForce::Gtc),
            &stp_book(),
        );
        assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("1"))]);
        assert!(p.expired_makers.is_empty());
        assert_eq!(p.outcome, expired("3", ExpireReason::SelfTrade));
        assert_eq!(pulled, 2);
    }

    #[test]
    fn stp_default_is_expire_taker() {
        assert_eq!(
            SelfTradePrevention::default(),
            SelfTradePrevention::ExpireTaker
        );
    }

    #[test]
    fn stp_expire_maker_cancels_own_order_and_continues() {
        let (p, _) = checked(
            &stp_taker(SelfTradePrevention::ExpireMaker, TimeInForce::Gtc),
            &stp_book(),
        );
        assert_eq!(
            fill_summary(&p),
            vec![(id(1), d("10"), d("1")), (id(3), d("11"), d("3"))]
        );
        assert_eq!(p.expired_makers, vec![id(2)]);
        assert_eq!(p.outcome, TakerOutcome::Filled);
    }

    #[test]
    fn stp_expire_both_cancels_own_order_and_expires_taker() {
        let (p, _) = checked(
            &stp_taker(SelfTradePrevention::ExpireBoth, TimeInForce::Gtc),
            &stp_book(),
        );
        assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("1"))]);
        assert_eq!(p.expired_makers, vec![id(2)]);
        assert_eq!(p.outcome, expired("3", ExpireReason::SelfTrade));
    }

    #[test]
    fn stp_none_trades_with_own_order() {
        let (p, _) = checked(
            &stp_taker(SelfTradePrevention::None, TimeInForce::Gtc),
            &stp_book(),
        );
        assert_eq!(
            fill_summary(&p),
            vec![
                (id(1), d("10"), d("1")),
                (id(2), d("10"), d("1")),
                (id(3), d("11"), d("2")),
            ]
        );
        assert_eq!(p.outcome, TakerOutcome::Filled);
    }

    #[test]
    fn stp_ignores_own_orders_that_do_not_cross() {
        let book = [maker(1, OTHER, "10", "1"), maker(2, ME, "11", "1")];
        let (p, _) = checked(&limit(Side::Buy, "10", "3", TimeInForce::Gtc), &book);
        assert_eq!(p.outcome, rest("2"));
        assert!(p.expired_makers.is_empty());
    }

    #[test]
    fn stp_counts_in_the_fok_fillability_check() {
        use SelfTradePrevention as Stp;
        let fok = |mode| stp_taker(mode, TimeInForce::Fok);
        // The own order stops the taker before it has 4.
        let (p, _) = checked(&fok(Stp::ExpireTaker), &stp_book());
        assert_eq!(p.outcome, rejected(RejectReason::FillOrKillNotFillable));
        let (p, _) = checked(&fok(Stp::ExpireBoth), &stp_book());
        assert_eq!(p.outcome, rejected(RejectReason::FillOrKillNotFillable));
        assert!(
            p.expired_makers.is_empty(),
            "a rejected FOK expires nothing"
        );
        // Skipped own orders are no liquidity: 1 + 5 = 6 available, not 7.
        let (p, _) = checked(
            &Taker {
                quantity: Some(d("7")),
                ..fok(Stp::ExpireMaker)
            },
            &stp_book(),
        );
        assert_eq!(p.outcome, rejected(RejectReason::FillOrKillNotFillable));
        let (p, _) = checked(
            &Taker {
                quantity: Some(d("6")),
                ..fok(Stp::ExpireMaker)
            },
            &stp_book(),
        );
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(p.expired_makers, vec![id(2)]);
        let (p, _) = checked(&fok(Stp::None), &stp_book());
        assert_eq!(p.outcome, TakerOutcome::Filled);
    }

    // ---- market orders ----

    #[test]
    fn market_order_on_an_empty_book_expires_in_full() {
        let (p, _) = checked(&market(Side::Sell, "5"), &[]);
        assert!(p.fills.is_empty());
        assert_eq!(p.outcome, expired("5", ExpireReason::NoLiquidity));
        let (p, _) = checked(&market_quote("100", "1"), &[]);
        assert_eq!(p.outcome, expired("0", ExpireReason::NoLiquidity));
        assert_eq!(p.unspent_quote, d("100"));
    }

    #[test]
    fn market_order_takes_any_price_and_never_rests() {
        let book = [maker(1, OTHER, "10", "1"), maker(2, OTHER, "1000000", "1")];
        for tif in [TimeInForce::Gtc, TimeInForce::Gtd, TimeInForce::Ioc] {
            let taker = Taker {
                time_in_force: tif,
                ..market(Side::Buy, "3")
            };
            let (p, _) = checked(&taker, &book);
            assert_eq!(p.filled_quantity, d("2"));
            assert_eq!(p.quote_amount, d("1000010"));
            assert_eq!(p.outcome, expired("1", ExpireReason::NoLiquidity));
        }
        let (p, _) = checked(&market(Side::Buy, "2"), &book);
        assert_eq!(p.outcome, TakerOutcome::Filled);
    }

    #[test]
    fn market_buy_by_quote_takes_whole_lots_it_can_afford() {
        let book = [
            maker(1, OTHER, "10", "1.0"),
            maker(2, OTHER, "12", "2.0"),
            maker(3, OTHER, "12", "5.0"),
        ];
        let (p, pulled) = checked(&market_quote("25", "0.1"), &book);
        // 1.0 for 10, then 15 left buys floor(15 / 1.2) = 12 lots = 1.2 for 14.4.
        assert_eq!(
            fill_summary(&p),
            vec![(id(1), d("10"), d("1")), (id(2), d("12"), d("1.2"))]
        );
        assert_eq!(p.quote_amount, d("24.4"));
        assert_eq!(p.unspent_quote, d("0.6"));
        assert_eq!(p.filled_quantity, d("2.2"));
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(pulled, 2, "a budget-limited partial fill ends the search");
    }

    #[test]
    fn market_buy_by_quote_stops_when_the_next_lot_is_unaffordable() {
        let book = [maker(1, OTHER, "10", "1"), maker(2, OTHER, "20", "1")];
        let (p, pulled) = checked(&market_quote("25", "1"), &book);
        assert_eq!(fill_summary(&p), vec![(id(1), d("10"), d("1"))]);
        assert_eq!(p.unspent_quote, d("15"));
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(pulled, 2);
    }

    #[test]
    fn market_buy_by_quote_spending_exactly_stops_pulling() {
        let book = [maker(1, OTHER, "10", "1"), maker(2, OTHER, "10", "5")];
        let (p, pulled) = checked(&market_quote("10", "1"), &book);
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(p.unspent_quote, d("0"));
        assert_eq!(pulled, 1);
    }

    #[test]
    fn market_buy_by_quote_reports_unspent_quote_when_the_book_runs_out() {
        let (p, _) = checked(&market_quote("100", "1"), &[maker(1, OTHER, "10", "1")]);
        assert_eq!(p.outcome, expired("0", ExpireReason::NoLiquidity));
        assert_eq!(p.quote_amount, d("10"));
        assert_eq!(p.unspent_quote, d("90"));
    }

    #[test]
    fn market_buy_by_quote_below_one_lot_is_rejected() {
        let (p, _) = checked(&market_quote("0.5", "0.1"), &[maker(1, OTHER, "10", "1")]);
        assert_eq!(p.outcome, rejected(RejectReason::QuoteQuantityBelowOneLot));
    }

    #[test]
    fn market_buy_by_quote_honours_stp() {
        let book = [
            maker(1, ME, "10", "1"),
            maker(2, OTHER, "10", "1"),
            maker(3, ME, "100", "1"),
        ];
        let taker = Taker {
            self_trade_prevention: SelfTradePrevention::ExpireMaker,
            ..market_quote("50", "1")
        };
        let (p, _) = checked(&taker, &book);
        assert_eq!(fill_summary(&p), vec![(id(2), d("10"), d("1"))]);
        // The 100 order is unaffordable anyway, so it is left alone.
        assert_eq!(p.expired_makers, vec![id(1)]);
        assert_eq!(p.outcome, TakerOutcome::Filled);
        assert_eq!(p.unspent_quote, d("40"));
        let (p, _) = checked(&market_quote("50", "1"), &book);
        assert_eq!(p.outcome, expired("0", ExpireReason::SelfTrade));
        assert_eq!(p.unspent_quote, d("50"));
    }

    // ---- invalid input ----

    #[test]
    fn invalid_takers_are_rejected_before_looking_at_the_book() {
        use RejectReason as R;
        let base = limit(Side::Buy, "10", "1", TimeInForce::Gtc);
        let cases = [
            (
                Taker {
                    lot_size: d("0"),
                    ..base.clone()
                },
                R::InvalidLotSize,
            ),
            (
                Taker {
                    lot_size: d("-1"),
                    ..base.clone()
                },
                R::InvalidLotSize,
            ),
            (
                Taker {
                    limit_price: Some(d("0")),
                    ..base.clone()
                },
                R::NonPositivePrice,
            ),
            (
                Taker {
                    limit_price: Some(d("-5")),
                    ..base.clone()
                },
                R::NonPositivePrice,
            ),
            (
                Taker {
                    quantity: Some(d("0")),
                    ..base.clone()
                },
                R::NonPositiveQuantity,
            ),
            (
                Taker {
                    quantity: Some(d("-1")),
                    ..base.clone()
                },
                R::NonPositiveQuantity,
            ),
            (
                Taker {
                    quantity: Some(d("1.5")),
                    ..base.clone()
                },
                R::QuantityNotLotMultiple,
            ),
            (
                Taker {
                    quantity: None,
                    ..base.clone()
                },
                R::MissingQuantity,
            ),
            (
                Taker {
                    quote_quantity: Some(d("10")),
                    ..base.clone()
                },
                R::QuantityAndQuoteQuantity,
            ),
            (
                Taker {
                    quantity: None,
                    quote_quantity: Some(d("10")),
                    ..base.clone()
                },
                R::QuoteQuantityNotMarketBuy,
            ),
            (
                Taker {
                    side: Side::Sell,
                    ..market_quote("10", "1")
                },
                R::QuoteQuantityNotMarketBuy,
            ),
            (
                Taker {
                    time_in_force: TimeInForce::Fok,
                    ..market_quote("10", "1")
                },
                R::QuoteQuantityWithFillOrKill,
            ),
            (market_quote("0", "1"), R::NonPositiveQuoteQuantity),
            (market_quote("-3", "1"), R::NonPositiveQuoteQuantity),
            (market_quote("10", "0"), R::InvalidLotSize),
        ];
        for (taker, reason) in cases {
            let (p, pulled) = checked(&taker, &[maker(1, OTHER, "10", "1")]);
            assert_eq!(p.outcome, rejected(reason), "{taker:?}");
            assert_eq!(pulled, 0, "{taker:?}");
            assert!(!reason.to_string().is_empty());
            assert!(!reason.is_book_fault());
        }
    }

    #[test]
    fn a_corrupt_book_rejects_the_taker_as_a_book_fault() {
        use RejectReason as R;
        let taker = limit(Side::Buy, "20", "10", TimeInForce::Gtc);
        let good = maker(1, OTHER, "10", "1");
        let cases = [
            (
                maker(2, OTHER, "0", "1"),
                R::InvalidMaker { order_id: id(2) },
            ),
            (
                maker(2, OTHER, "10", "0"),
                R::InvalidMaker { order_id: id(2) },
            ),
            (
                maker(2, OTHER, "10", "-1"),
                R::InvalidMaker { order_id: id(2) },
            ),
            (
                maker(2, OTHER, "10", "1.5"),
                R::MakerNotLotMultiple { order_id: id(2) },
            ),
            (
                maker(2, OTHER, "9", "1"),
                R::MakersOutOfOrder { order_id: id(2) },
            ),
            (
                maker(1, OTHER, "10", "1"),
                R::DuplicateMaker { order_id: id(1) },
            ),
        ];
        for (bad, reason) in cases {
            let (p, _) = checked(&taker, &[good.clone(), bad.clone()]);
            assert_eq!(p.outcome, rejected(reason), "{bad:?}");
            assert!(reason.is_book_fault());
            assert!(reason.to_string().contains(&bad.order_id.to_string()));
        }
        // Out of order for a sell taker means a higher bid after a lower one.
        let (p, _) = checked(
            &limit(Side::Sell, "1", "10", TimeInForce::Gtc),
            &[maker(1, OTHER, "10", "1"), maker(2, OTHER, "11", "1")],
        );
        assert_eq!(p.outcome, rejected(R::MakersOutOfOrder { order_id: id(2) }));
    }

    #[test]
    fn absurd_values_never_panic_and_never_round() {
        let tiny = "0.0000000000000000000000000001";
        let max = Decimal::MAX.to_string();
        let max = max.as_str();
        let cases: Vec<(Taker, Vec<Maker>)> = vec![
            // Product overflows.
            (
                limit(Side::Buy, max, max, TimeInForce::Gtc),
                vec![maker(1, OTHER, max, max)],
            ),
            // Product needs 56 decimal places.
            (
                Taker {
                    lot_size: d(tiny),
                    ..limit(Side::Buy, tiny, tiny, TimeInForce::Gtc)
                },
                vec![maker(1, OTHER, tiny, tiny)],
            ),
            // A quantity of 1e28 lots of 1e-28 cannot be counted in lots.
            (
                Taker {
                    lot_size: d(tiny),
                    ..limit(
                        Side::Buy,
                        "1",
                        "10000000000000000000000000000",
                        TimeInForce::Gtc,
                    )
                },
                vec![maker(1, OTHER, "1", "1")],
            ),
            // The exact product has more digits than a Decimal holds.
            (
                Taker {
                    lot_size: d("0.001"),
                    ..limit(Side::Buy, "2", "1234567890123456.789", TimeInForce::Ioc)
                },
                vec![maker(1, OTHER, "1.0000000000001", "1234567890123456.789")],
            ),
            // A huge budget at a tiny price.
            (
                Taker {
                    lot_size: d(tiny),
                    ..market_quote(max, tiny)
                },
                vec![maker(1, OTHER, tiny, max)],
            ),
            (
                market_quote(max, "1"),
                vec![maker(1, OTHER, tiny, max), maker(2, OTHER, max, "1")],
            ),
            // Huge but exact: it must go through.
            (
                limit(
                    Side::Sell,
                    "1",
                    "79228162514264337593543950335",
                    TimeInForce::Ioc,
                ),
                vec![maker(1, OTHER, "1", "79228162514264337593543950335")],
            ),
        ];
        for (taker, book) in &cases {
            let (p, _) = checked(taker, book);
            if let TakerOutcome::Rejected { reason } = p.outcome {
                assert_eq!(reason, RejectReason::Unrepresentable, "{taker:?}");
            }
        }
        assert_eq!(
            plan(&cases[0].0, cases[0].1.clone()).outcome,
            rejected(RejectReason::Unrepresentable)
        );
        assert_eq!(
            plan(&cases[1].0, cases[1].1.clone()).outcome,
            rejected(RejectReason::Unrepresentable)
        );
        assert_eq!(
            plan(&cases[3].0, cases[3].1.clone()).outcome,
            rejected(RejectReason::Unrepresentable)
        );
        assert_eq!(
            plan(&cases[6].0, cases[6].1.clone()).outcome,
            TakerOutcome::Filled
        );
    }

    // ---- helpers ----

    #[test]
    fn exact_arithmetic_refuses_to_round() {
        assert_eq!(exact::add(d("0.1"), d("0.2")), Some(d("0.3")));
        assert_eq!(exact::sub(d("1"), d("0.0001")), Some(d("0.9999")));
        assert_eq!(exact::mul(d("1.5"), d("0.02")), Some(d("0.03")));
        assert_eq!(exact::mul(Decimal::MAX, d("2")), None);
        assert_eq!(
            exact::mul(d("0.00000000000001"), d("0.000000000000001")),
            None
        );
        assert_eq!(
            exact::add(d("100000000000000000000"), d("0.00000000000000000001")),
            None
        );
        assert_eq!(exact::div_floor(d("15"), d("1.2")), Some(12));
        assert_eq!(exact::div_floor(d("1"), d("0")), None);
        assert_eq!(exact::is_multiple(d("0.75"), d("0.25")), Some(true));
        assert_eq!(exact::is_multiple(d("0.7"), d("0.25")), Some(false));
        // Trailing zeros do not count against the precision budget.
        assert_eq!(
            exact::mul(
                d("1.0000000000000000000000000000"),
                d("1.0000000000000000000000000000")
            ),
            Some(d("1"))
        );
    }

    #[test]
    fn stop_triggers_at_or_through_the_trigger() {
        assert!(stop_triggered(Side::Buy, d("100"), d("100")));
        assert!(stop_triggered(Side::Buy, d("100"), d("101")));
        assert!(!stop_triggered(Side::Buy, d("100"), d("99.99")));
        assert!(stop_triggered(Side::Sell, d("100"), d("100")));
        assert!(stop_triggered(Side::Sell, d("100"), d("99")));
        assert!(!stop_triggered(Side::Sell, d("100"), d("100.01")));
    }

    #[test]
    fn only_shrinking_at_the_same_price_keeps_priority() {
        assert!(amend_keeps_priority(d("10"), d("5"), d("10"), d("3")));
        assert!(amend_keeps_priority(d("10"), d("5"), d("10.00"), d("5")));
        assert!(!amend_keeps_priority(d("10"), d("5"), d("10"), d("6")));
        assert!(!amend_keeps_priority(d("10"), d("5"), d("9"), d("3")));
        assert!(!amend_keeps_priority(d("10"), d("5"), d("11"), d("5")));
        assert!(!amend_keeps_priority(d("10"), d("5"), d("10"), d("0")));
    }

    #[test]
    fn fee_is_exact() {
        assert_eq!(fee(d("100"), 10), Some(d("0.1")));
        assert_eq!(fee(d("1.23456789"), 7), Some(d("0.000864197523")));
        assert_eq!(fee(d("12345.67"), 0), Some(d("0")));
        assert_eq!(fee(d("0"), 25), Some(d("0")));
        assert_eq!(fee(d("1"), 10000), Some(d("1")));
        assert_eq!(fee(Decimal::MAX, u32::MAX), None);
        // 28 places plus the 4 of the basis point cannot be held exactly.
        assert_eq!(fee(d("0.0000000000000000000000000003"), 1), None);
    }

    #[test]
    fn reasons_have_messages() {
        for reason in [
            ExpireReason::ImmediateOrCancel,
            ExpireReason::NoLiquidity,
            ExpireReason::SelfTrade,
        ] {
            assert!(!reason.to_string().is_empty());
        }
        assert_eq!(
            RejectReason::PostOnlyWouldTake.to_string(),
            "the post-only order would trade immediately"
        );
        assert_eq!(Side::Buy.opposite(), Side::Sell);
        assert_eq!(Side::Sell.opposite(), Side::Buy);
    }

    // ---- properties ----

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            // Regression files would land in the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Books sorted into priority order for the taker, with a quarter of the makers
    /// the taker's own, on a half-unit tick, in whole lots.
    fn arb_case() -> impl Strategy<Value = (Taker, Vec<Maker>)> {
        let lot = prop::sample::select(vec![(1i64, 0u32), (5, 1), (1, 2)]);
        let tif = prop::sample::select(vec![
            TimeInForce::Gtc,
            TimeInForce::Ioc,
            TimeInForce::Fok,
            TimeInForce::Gtd,
        ]);
        let stp = prop::sample::select(vec![
            SelfTradePrevention::ExpireTaker,
            SelfTradePrevention::ExpireMaker,
            SelfTradePrevention::ExpireBoth,
            SelfTradePrevention::None,
        ]);
        let book = prop::collection::vec((1i64..=20, 1i64..=10, prop::bool::weighted(0.25)), 0..8);
        (
            any::<bool>(),
            prop::option::weighted(0.75, 1i64..=20),
            1i64..=30,
            prop::option::weighted(0.4, 1i64..=400),
            tif,
            prop::bool::weighted(0.15),
            stp,
            lot,
            book,
        )
            .prop_map(
                |(buy, limit_ticks, lots, quote, tif, post_only, stp, (lm, ls), book)| {
                    let side = if buy { Side::Buy } else { Side::Sell };
                    let lot_size = Decimal::new(lm, ls);
                    let tick = Decimal::new(5, 1);
                    let limit_price = limit_ticks.map(|t| Decimal::from(t) * tick);
                    let market_buy = limit_price.is_none() && side == Side::Buy;
                    let (quantity, quote_quantity) = match quote {
                        Some(q) if market_buy => {
                            (None, Some(Decimal::new(q, 2) * Decimal::from(25)))
                        }
                        _ => (Some(Decimal::from(lots) * lot_size), None),
                    };
                    let taker = Taker {
                        owner: ME,
                        side,
                        limit_price,
                        quantity,
                        quote_quantity,
                        time_in_force: tif,
                        post_only,
                        self_trade_prevention: stp,
                        lot_size,
                    };
                    let mut book = book;
                    // Stable sorts keep generation order as time priority within a price.
                    match side {
                        Side::Buy => book.sort_by_key(|m| m.0),
                        Side::Sell => book.sort_by_key(|m| std::cmp::Reverse(m.0)),
                    }
                    let makers = book
                        .into_iter()
                        .enumerate()
                        .map(|(i, (ticks, lots, own))| Maker {
                            order_id: id(i as u128),
                            owner: if own { ME } else { OTHER },
                            price: Decimal::from(ticks) * tick,
                            remaining: Decimal::from(lots) * lot_size,
                        })
                        .collect();
                    (taker, makers)
                },
            )
    }

    /// How much a FOK could get, computed independently of the planner.
    fn fok_available(taker: &Taker, makers: &[Maker]) -> Decimal {
        let mut available = Decimal::ZERO;
        for m in makers {
            if !crosses_ref(taker, m.price) {
                break;
            }
            if m.owner == taker.owner {
                match taker.self_trade_prevention {
                    SelfTradePrevention::ExpireTaker | SelfTradePrevention::ExpireBoth => break,
                    SelfTradePrevention::ExpireMaker => continue,
                    SelfTradePrevention::None => {}
                }
            }
            available += m.remaining;
        }
        available
    }

    /// Any decimal at all, biased towards the extremes.
    fn arb_decimal() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (1i64..1000, 0u32..4).prop_map(|(m, s)| Decimal::new(m, s)),
            (any::<u128>(), 0u32..=28).prop_filter_map("in range", |(m, s)| {
                Decimal::try_from_i128_with_scale((m % (1u128 << 96)) as i128, s).ok()
            }),
            Just(Decimal::MAX),
            Just(Decimal::MIN),
            Just(Decimal::ZERO),
            Just(Decimal::new(1, 28)),
            Just(Decimal::ONE),
        ]
    }

    proptest! {
        #![proptest_config(config(3000))]

        #[test]
        fn plans_keep_every_invariant((taker, makers) in arb_case()) {
            let (p, pulled) = plan_counted(&taker, &makers);
            check(&taker, &makers, &p, pulled)?;
            let book_fault = matches!(p.outcome, TakerOutcome::Rejected { reason } if reason.is_book_fault());
            prop_assert!(!book_fault, "a well-formed book was called faulty");
            if taker.time_in_force == TimeInForce::Fok && !taker.post_only {
                if let Some(quantity) = taker.quantity {
                    let fillable = fok_available(&taker, &makers) >= quantity;
                    prop_assert_eq!(fillable, p.outcome == TakerOutcome::Filled);
                    if !fillable {
                        prop_assert_eq!(&p.outcome, &rejected(RejectReason::FillOrKillNotFillable));
                    }
                }
            }
            if taker.post_only && taker.limit_price.is_some()
                && matches!(taker.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd)
            {
                let takes = makers.first().is_some_and(|m| crosses_ref(&taker, m.price));
                if takes {
                    prop_assert_eq!(&p.outcome, &rejected(RejectReason::PostOnlyWouldTake));
                } else {
                    let rests = matches!(p.outcome, TakerOutcome::Rest { .. });
                    prop_assert!(rests, "a post-only order that does not take must rest");
                }
            }
        }

        #[test]
        fn the_same_input_gives_the_same_plan((taker, makers) in arb_case()) {
            prop_assert_eq!(plan(&taker, makers.clone()), plan(&taker, makers));
        }

        #[test]
        fn fee_times_ten_thousand_is_notional_times_bps(cents in 0i64..1_000_000_000, bps in 0u32..100_000) {
            let notional = Decimal::new(cents, 2);
            let f = fee(notional, bps);
            prop_assert!(f.is_some());
            prop_assert_eq!(f.unwrap_or_default() * Decimal::from(10_000), notional * Decimal::from(bps));
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn arbitrary_decimals_never_panic(
            buy in any::<bool>(),
            limit_price in prop::option::of(arb_decimal()),
            quantity in prop::option::of(arb_decimal()),
            quote_quantity in prop::option::weighted(0.3, arb_decimal()),
            lot_size in arb_decimal(),
            tif in prop::sample::select(vec![TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok]),
            book in prop::collection::vec((arb_decimal(), arb_decimal(), any::<bool>()), 0..5),
            sorted in any::<bool>(),
        ) {
            let side = if buy { Side::Buy } else { Side::Sell };
            let taker = Taker {
                owner: ME,
                side,
                limit_price,
                quantity,
                quote_quantity,
                time_in_force: tif,
                post_only: false,
                self_trade_prevention: SelfTradePrevention::ExpireMaker,
                lot_size,
            };
            let mut makers: Vec<Maker> = book
                .into_iter()
                .enumerate()
                .map(|(i, (price, remaining, own))| Maker {
                    order_id: id(i as u128),
                    owner: if own { ME } else { OTHER },
                    price,
                    remaining,
                })
                .collect();
            if sorted {
                match side {
                    Side::Buy => makers.sort_by_key(|m| m.price),
                    Side::Sell => makers.sort_by_key(|m| std::cmp::Reverse(m.price)),
                }
            }
            let (p, pulled) = plan_counted(&taker, &makers);
            check(&taker, &makers, &p, pulled)?;
        }
    }
}
