//! `Amount`: an exact decimal column that reads back exactly on SQLite too.
//!
//! PostgreSQL stores amounts as `NUMERIC`. SQLite has no decimal type, and the ORM's
//! stock decoding of a SQLite decimal goes through `f64`, which would silently round
//! money. So amount columns are `TEXT` on SQLite (the migrations pick the type per
//! backend) and this type decodes them from their string form. Writing binds a decimal,
//! which becomes `NUMERIC` on PostgreSQL and its exact text on SQLite.
//!
//! Never order or sum `Amount` columns in SQL: on SQLite they compare as text. Order
//! books sort on integer tick columns instead, and sums happen in Rust.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::{ColIdx, QueryResult, TryGetError, TryGetable, Value};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub Decimal);

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);
}

impl From<Decimal> for Amount {
    fn from(value: Decimal) -> Self {
        Amount(value)
    }
}

impl From<Amount> for Decimal {
    fn from(value: Amount) -> Self {
        value.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.normalize().fmt(f)
    }
}

impl From<Amount> for Value {
    fn from(value: Amount) -> Self {
        Value::Decimal(Some(value.0.normalize()))
    }
}

impl Nullable for Amount {
    fn null() -> Value {
        Value::Decimal(None)
    }
}

impl ValueType for Amount {
    fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
        match value {
            Value::Decimal(Some(d)) => Ok(Amount(d)),
            Value::String(Some(s)) => Decimal::from_str_exact(&s)
                .map(Amount)
                .map_err(|_| ValueTypeErr),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "Amount".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::Decimal
    }

    fn column_type() -> ColumnType {
        ColumnType::Decimal(None)
    }
}

impl TryGetable for Amount {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        // PostgreSQL hands back a NUMERIC, decoded exactly. Asking it for text first
        // would fail on every value, and build (and drop) an error message each time:
        // a book read decodes thousands of amounts.
        if res.try_as_pg_row().is_some() {
            return Decimal::try_get_by(res, index).map(Amount);
        }
        // SQLite hands back the stored text. Try the text form first: it is the only one
        // that can be lossy if decoded any other way.
        if let Ok(text) = String::try_get_by(res, index) {
            return Decimal::from_str(&text).map(Amount).map_err(|error| {
                TryGetError::DbErr(sea_orm::DbErr::Type(format!(
                    "column {index:?} holds `{text}`, not a decimal: {error}"
                )))
            });
        }
        Decimal::try_get_by(res, index).map(Amount)
    }
}
