//! Double-entry rules: which accounts exist, and what makes a journal entry valid.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use uuid::Uuid;

/// The owner of system accounts (fee income, external clearing).
pub const SYSTEM_OWNER: Uuid = Uuid::nil();

/// The owner id of a market's fee-income accounts: a name-based UUID of the market
/// symbol, stable across processes and restarts, that no user id (random or
/// time-ordered) can equal.
pub fn fee_income_owner(market: &str) -> Uuid {
    Uuid::new_v5(&FEE_INCOME_NAMESPACE, market.as_bytes())
}

/// The namespace of [`fee_income_owner`] ids.
const FEE_INCOME_NAMESPACE: Uuid = Uuid::from_u128(0x7472_6164_6567_7261_7068_2d66_6565_7321);

/// The kind of a ledger account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKind {
    /// A user's spendable funds.
    Available,
    /// A user's funds held for open orders and pending withdrawals.
    Locked,
    /// Fees the exchange has earned.
    FeeIncome,
    /// The world outside the exchange: deposits come from it, withdrawals go to it.
    /// Its balance is the negative of everything held on the exchange.
    External,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Available => "AVAILABLE",
            AccountKind::Locked => "LOCKED",
            AccountKind::FeeIncome => "FEE_INCOME",
            AccountKind::External => "EXTERNAL",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            AccountKind::Available,
            AccountKind::Locked,
            AccountKind::FeeIncome,
            AccountKind::External,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
    }

    /// Only the clearing account may go below zero: a user can never spend more than
    /// they hold, and the exchange never owes fees back.
    pub fn may_go_negative(self) -> bool {
        self == AccountKind::External
    }
}

/// Identifies a ledger account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountRef {
    pub owner: Uuid,
    pub asset: String,
    pub kind: AccountKind,
}

impl AccountRef {
    pub fn user(owner: Uuid, asset: &str, kind: AccountKind) -> Self {
        AccountRef {
            owner,
            asset: asset.to_owned(),
            kind,
        }
    }

    pub fn system(asset: &str, kind: AccountKind) -> Self {
        AccountRef {
            owner: SYSTEM_OWNER,
            asset: asset.to_owned(),
            kind,
        }
    }

    /// The account that collects one market's trading fees in `asset`. Each market has
    /// its own, so trades in different markets never wait for each other on a shared
    /// fee row; the exchange's fee income in an asset is the sum over its markets.
    pub fn fee_income(market: &str, asset: &str) -> Self {
        AccountRef {
            owner: fee_income_owner(market),
            asset: asset.to_owned(),
            kind: AccountKind::FeeIncome,
        }
    }
}

/// One signed change to one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub account: AccountRef,
    pub amount: Decimal,
}

/// Why a set of legs is not a valid journal entry.
#[derive(Debug, PartialEq, Eq)]
pub enum LedgerError {
    Empty,
    ZeroLeg,
    Unbalanced { asset: String, sum: Decimal },
    Overflow,
}

/// Checks that legs are non-zero and sum to zero per asset, so that no entry can
/// create or destroy money.
pub fn check_balanced(legs: &[Leg]) -> Result<(), LedgerError> {
    if legs.is_empty() {
        return Err(LedgerError::Empty);
    }
    let mut sums: BTreeMap<&str, Decimal> = BTreeMap::new();
    for leg in legs {
        if leg.amount.is_zero() {
            return Err(LedgerError::ZeroLeg);
        }
        let sum = sums.entry(leg.account.asset.as_str()).or_default();
        *sum = sum.checked_add(leg.amount).ok_or(LedgerError::Overflow)?;
    }
    match sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
        Some((asset, sum)) => Err(LedgerError::Unbalanced {
            asset: asset.to_owned(),
            sum,
        }),
        None => Ok(()),
    }
}

/// Merges legs on the same account, so each account is touched once per entry.
pub fn net_legs(legs: Vec<Leg>) -> Result<Vec<Leg>, LedgerError> {
    let mut netted: BTreeMap<AccountRef, Decimal> = BTreeMap::new();
    for leg in legs {
        let sum = netted.entry(leg.account).or_default();
        *sum = sum.checked_add(leg.amount).ok_or(LedgerError::Overflow)?;
    }
    Ok(netted
        .into_iter()
        .filter(|(_, amount)| !amount.is_zero())
        .map(|(account, amount)| Leg { account, amount })
        .collect())
}

/// Whether an amount fits an asset's precision (no more decimal places than allowed).
pub fn fits_precision(amount: Decimal, precision: u32) -> bool {
    amount.normalize().scale() <= precision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    fn leg(owner: u128, asset: &str, kind: AccountKind, amount: &str) -> Leg {
        Leg {
            account: AccountRef::user(Uuid::from_u128(owner), asset, kind),
            amount: d(amount),
        }
    }

    #[test]
    fn balanced_entries_pass_and_unbalanced_fail() {
        let deposit = [
            leg(1, "BTC", AccountKind::Available, "1.5"),
            Leg {
                account: AccountRef::system("BTC", AccountKind::External),
                amount: d("-1.5"),
            },
        ];
        assert_eq!(check_balanced(&deposit), Ok(()));
        let broken = [leg(1, "BTC", AccountKind::Available, "1.5")];
        assert_eq!(
            check_balanced(&broken),
            Err(LedgerError::Unbalanced {
                asset: "BTC".into(),
                sum: d("1.5")
            })
        );
        assert_eq!(check_balanced(&[]), Err(LedgerError::Empty));
        let zero = [leg(1, "BTC", AccountKind::Available, "0")];
        assert_eq!(check_balanced(&zero), Err(LedgerError::ZeroLeg));
    }

    #[test]
    fn assets_balance_separately() {
        let trade = [
            leg(1, "BTC", AccountKind::Available, "1"),
            leg(2, "BTC", AccountKind::Available, "-1"),
            leg(1, "USD", AccountKind::Available, "-100"),
            leg(2, "USD", AccountKind::Available, "99"),
        ];
        assert!(matches!(
            check_balanced(&trade),
            Err(LedgerError::Unbalanced { asset, .. }) if asset == "USD"
        ));
    }

    #[test]
    fn netting_merges_and_drops_zero_legs() {
        let legs = vec![
            leg(1, "USD", AccountKind::Available, "-10"),
            leg(1, "USD", AccountKind::Locked, "10"),
            leg(1, "USD", AccountKind::Locked, "-10"),
            leg(1, "USD", AccountKind::Available, "10"),
            leg(2, "USD", AccountKind::Available, "5"),
            leg(1, "USD", AccountKind::Available, "-5"),
        ];
        let netted = net_legs(legs).expect("nets");
        assert_eq!(netted.len(), 2);
        assert_eq!(check_balanced(&netted), Ok(()));
    }

    #[test]
    fn precision_is_checked_on_normalised_amounts() {
        assert!(fits_precision(d("1.50"), 1));
        assert!(fits_precision(d("100"), 0));
        assert!(!fits_precision(d("0.123"), 2));
    }

    proptest! {
        #[test]
        fn any_transfer_set_is_balanced_after_netting(
            moves in proptest::collection::vec((0u128..4, 0u128..4, 1i64..1_000_000, 0u32..8), 1..20)
        ) {
            let mut legs = Vec::new();
            for (from, to, units, scale) in moves {
                let amount = Decimal::new(units, scale);
                legs.push(leg(from, "ETH", AccountKind::Available, &(-amount).to_string()));
                legs.push(leg(to, "ETH", AccountKind::Available, &amount.to_string()));
            }
            prop_assert_eq!(check_balanced(&legs), Ok(()));
            let netted = net_legs(legs).expect("nets");
            if !netted.is_empty() {
                prop_assert_eq!(check_balanced(&netted), Ok(()));
            }
        }
    }
}
