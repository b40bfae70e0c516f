//! Validation of an order against its market, before anything touches the database.
//! Every refusal names the input field, so a client can point at it.

use rust_decimal::Decimal;

use super::ledger::fits_precision;
use super::matching::{Side, TimeInForce};

/// The kind of order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderType {
    Limit,
    Market,
    StopLimit,
}

/// What a market allows.
#[derive(Clone, Debug)]
pub struct MarketRules {
    pub tick_size: Decimal,
    pub lot_size: Decimal,
    pub min_notional: Decimal,
    pub base_precision: u32,
    pub quote_precision: u32,
}

/// The order as requested.
#[derive(Clone, Debug)]
pub struct OrderRequest {
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Option<Decimal>,
    pub price: Option<Decimal>,
    pub quote_quantity: Option<Decimal>,
    pub trigger_price: Option<Decimal>,
    pub time_in_force: TimeInForce,
    pub has_expire_at: bool,
    pub post_only: bool,
}

/// A refusal: the field at fault and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

fn is_multiple(value: Decimal, step: Decimal) -> bool {
    !step.is_zero() && value.checked_rem(step).is_some_and(|r| r.is_zero())
}

/// The largest price or quantity accepted: far beyond any real order, small enough that
/// products of two of them stay exact in a 96-bit decimal.
const MAX_VALUE: Decimal = Decimal::from_parts(0, 0x_0000_0010, 0, false, 0); // 2^36 ≈ 6.9e10

/// Checks an order against its market's rules.
pub fn validate(order: &OrderRequest, market: &MarketRules) -> Result<(), Invalid> {
    let field_check =
        |field: &'static str, value: Decimal, step: Decimal, precision: u32, what: &str| {
            if value <= Decimal::ZERO {
                return Err(invalid(field, format!("the {what} must be positive")));
            }
            if value > MAX_VALUE {
                return Err(invalid(field, format!("the {what} is too large")));
            }
            if !fits_precision(value, precision) {
                return Err(invalid(
                    field,
                    format!("the {what} has more than {precision} decimal places"),
                ));
            }
            if !is_multiple(value, step) {
                return Err(invalid(
                    field,
                    format!("the {what} must be a multiple of {}", step.normalize()),
                ));
            }
            Ok(())
        };
    match order.order_type {
        OrderType::Limit | OrderType::StopLimit => {
            let price = order.price.ok_or_else(|| {
                invalid(
                    "input.price",
                    "a price is required for LIMIT and STOP_LIMIT orders",
                )
            })?;
            field_check(
                "input.price",
                price,
                market.tick_size,
                market.quote_precision,
                "price",
            )?;
            if order.quote_quantity.is_some() {
                return Err(invalid(
                    "input.quoteQuantity",
                    "only a MARKET buy may give a quote quantity",
                ));
            }
        }
        OrderType::Market => {
            if order.price.is_some() {
                return Err(invalid("input.price", "a MARKET order takes no price"));
            }
            if order.post_only {
                return Err(invalid(
                    "input.postOnly",
                    "a MARKET order cannot be post-only",
                ));
            }
            if matches!(order.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd)
                && order.has_expire_at
            {
                return Err(invalid("input.expireAt", "a MARKET order never rests"));
            }
        }
    }
    match order.order_type {
        OrderType::StopLimit => {
            let trigger = order.trigger_price.ok_or_else(|| {
                invalid(
                    "input.triggerPrice",
                    "a STOP_LIMIT order needs a trigger price",
                )
            })?;
            field_check(
                "input.triggerPrice",
                trigger,
                market.tick_size,
                market.quote_precision,
                "trigger price",
            )?;
        }
        _ if order.trigger_price.is_some() => {
            return Err(invalid(
                "input.triggerPrice",
                "only STOP_LIMIT orders take a trigger price",
            ));
        }
        _ => {}
    }
    match (order.quantity, order.quote_quantity) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "input.quoteQuantity",
                "give either quantity or quoteQuantity, not both",
            ));
        }
        (None, None) => return Err(invalid("input.quantity", "a quantity is required")),
        (Some(quantity), None) => {
            field_check(
                "input.quantity",
                quantity,
                market.lot_size,
                market.base_precision,
                "quantity",
            )?;
        }
        (None, Some(quote)) => {
            if !(order.order_type == OrderType::Market && order.side == Side::Buy) {
                return Err(invalid(
                    "input.quoteQuantity",
                    "only a MARKET buy may give a quote quantity",
                ));
            }
            if quote <= Decimal::ZERO || quote > MAX_VALUE {
                return Err(invalid(
                    "input.quoteQuantity",
                    "the quote quantity must be positive and sane",
                ));
            }
            if !fits_precision(quote, market.quote_precision) {
                return Err(invalid(
                    "input.quoteQuantity",
                    format!(
                        "the quote quantity has more than {} decimal places",
                        market.quote_precision
                    ),
                ));
            }
            if order.time_in_force == TimeInForce::Fok {
                return Err(invalid(
                    "input.timeInForce",
                    "FOK needs a quantity, not a quote quantity",
                ));
            }
        }
    }
    if let (Some(price), Some(quantity)) = (order.price, order.quantity) {
        let notional = price
            .checked_mul(quantity)
            .ok_or_else(|| invalid("input.quantity", "the order value is too large"))?;
        if notional < market.min_notional {
            return Err(invalid(
                "input.quantity",
                format!(
                    "the order value {} is below the minimum of {}",
                    notional.normalize(),
                    market.min_notional.normalize()
                ),
            ));
        }
    }
    if let Some(quote) = order.quote_quantity {
        if quote < market.min_notional {
            return Err(invalid(
                "input.quoteQuantity",
                format!(
                    "below the minimum order value of {}",
                    market.min_notional.normalize()
                ),
            ));
        }
    }
    if order.time_in_force == TimeInForce::Gtd && !order.has_expire_at {
        return Err(invalid("input.expireAt", "GTD orders need expireAt"));
    }
    if order.time_in_force != TimeInForce::Gtd && order.has_expire_at {
        return Err(invalid("input.expireAt", "expireAt is only for GTD orders"));
    }
    if order.post_only && !matches!(order.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd) {
        return Err(invalid(
            "input.postOnly",
            "post-only orders must be GTC or GTD",
        ));
    }
    Ok(())
}

/// The price in whole ticks, the book's exact sort key.
pub fn price_ticks(price: Decimal, tick_size: Decimal) -> Option<i64> {
    use rust_decimal::prelude::ToPrimitive;
    price.checked_div(tick_size)?.trunc().to_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    fn btc_usd() -> MarketRules {
        MarketRules {
            tick_size: d("0.01"),
            lot_size: d("0.00001"),
            min_notional: d("1"),
            base_precision: 8,
            quote_precision: 2,
        }
    }

    fn limit(side: Side, price: &str, quantity: &str) -> OrderRequest {
        OrderRequest {
            side,
            order_type: OrderType::Limit,
            quantity: Some(d(quantity)),
            price: Some(d(price)),
            quote_quantity: None,
            trigger_price: None,
            time_in_force: TimeInForce::Gtc,
            has_expire_at: false,
            post_only: false,
        }
    }

    fn field(order: &OrderRequest) -> Option<&'static str> {
        validate(order, &btc_usd()).err().map(|e| e.field)
    }

    #[test]
    fn valid_orders_pass() {
        assert_eq!(field(&limit(Side::Buy, "50000.01", "0.001")), None);
        let mut market = limit(Side::Buy, "1", "1");
        market.order_type = OrderType::Market;
        market.price = None;
        market.quantity = None;
        market.quote_quantity = Some(d("25.50"));
        market.time_in_force = TimeInForce::Ioc;
        assert_eq!(field(&market), None);
    }

    #[test]
    fn each_refusal_names_its_field() {
        assert_eq!(
            field(&limit(Side::Buy, "50000.015", "0.001")),
            Some("input.price")
        );
        assert_eq!(field(&limit(Side::Buy, "-1", "0.001")), Some("input.price"));
        assert_eq!(
            field(&limit(Side::Buy, "50000", "0.000015")),
            Some("input.quantity")
        );
        assert_eq!(
            field(&limit(Side::Buy, "50000", "0")),
            Some("input.quantity")
        );
        assert_eq!(
            field(&limit(Side::Buy, "10", "0.01")),
            Some("input.quantity"),
            "below min notional"
        );
        assert_eq!(
            field(&limit(Side::Buy, "1000000000000000000000000000", "1")),
            Some("input.price")
        );
        let mut no_price = limit(Side::Buy, "1", "1");
        no_price.price = None;
        assert_eq!(field(&no_price), Some("input.price"));
        let mut market_with_price = limit(Side::Sell, "100", "1");
        market_with_price.order_type = OrderType::Market;
        assert_eq!(field(&market_with_price), Some("input.price"));
        let mut gtd = limit(Side::Buy, "100", "1");
        gtd.time_in_force = TimeInForce::Gtd;
        assert_eq!(field(&gtd), Some("input.expireAt"));
        let mut post_ioc = limit(Side::Buy, "100", "1");
        post_ioc.post_only = true;
        post_ioc.time_in_force = TimeInForce::Ioc;
        assert_eq!(field(&post_ioc), Some("input.postOnly"));
        let mut stop = limit(Side::Buy, "100", "1");
        stop.order_type = OrderType::StopLimit;
        assert_eq!(field(&stop), Some("input.triggerPrice"));
        let mut quote_on_limit = limit(Side::Buy, "100", "1");
        quote_on_limit.quantity = None;
        quote_on_limit.quote_quantity = Some(d("100"));
        assert_eq!(field(&quote_on_limit), Some("input.quoteQuantity"));
    }

    #[test]
    fn ticks_are_exact() {
        assert_eq!(price_ticks(d("50000.01"), d("0.01")), Some(5_000_001));
        assert_eq!(price_ticks(d("0.00123"), d("0.00001")), Some(123));
    }
}
