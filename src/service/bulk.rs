//! Many rows in few round trips: PostgreSQL statements assembled from parts.
//!
//! On a busy market the time an order takes is mostly the round trips its transaction
//! makes while it holds the market's lock, not the work PostgreSQL does for each. Writes
//! that are decided in this process can instead go out together: each kind of row as
//! one part, and all the parts as one statement (`WITH w0 AS (…), w1 AS (…) SELECT 1`).
//! PostgreSQL runs every data-modifying part exactly once and checks foreign keys at the
//! end of the statement, so one part may insert rows that another part's rows refer to.
//! Two parts must never change the same row.
//!
//! Rows travel as [`Columns`]: one text array per column, turned back into rows by
//! `unnest`. The statement's text then does not depend on how many rows there are, so
//! each connection prepares it once; a `VALUES` list would be a new statement, kept
//! prepared by the connection and by the server, for every count of rows.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, Value};
use uuid::Uuid;

use crate::error::ApiError;

/// Numbered parameters for a statement assembled from parts.
#[derive(Default)]
pub struct Params(Vec<Value>);

impl Params {
    /// Binds `value` and returns its placeholder, with a type cast: `$3::numeric`.
    pub fn bind(&mut self, value: impl Into<Value>, cast: &str) -> String {
        self.0.push(value.into());
        format!("${}::{cast}", self.0.len())
    }

    pub fn into_values(self) -> Vec<Value> {
        self.0
    }

    /// The PostgreSQL statement `sql`, its placeholders bound to these values.
    pub fn into_statement(self, sql: impl Into<String>) -> Statement {
        Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, self.0)
    }
}

/// One value of a row, as text; `None` is SQL `NULL`.
pub trait Cell {
    fn cell(&self) -> Option<String>;
}

impl Cell for Uuid {
    fn cell(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Cell for Decimal {
    fn cell(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Cell for i64 {
    fn cell(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Cell for bool {
    fn cell(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Cell for str {
    fn cell(&self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl Cell for String {
    fn cell(&self) -> Option<String> {
        Some(self.clone())
    }
}

impl Cell for DateTime<Utc> {
    fn cell(&self) -> Option<String> {
        // PostgreSQL keeps microseconds, as it does from a bound timestamp.
        Some(self.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

impl Cell for entity::Amount {
    fn cell(&self) -> Option<String> {
        self.0.cell()
    }
}

impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> Option<String> {
        self.as_ref().and_then(Cell::cell)
    }
}

/// Rows as one text array per column. A column's type is a PostgreSQL type to cast to
/// (`""` for text); a trailing `?` marks a column that may be `NULL`, sent as an empty
/// string (none of those columns ever holds one).
pub struct Columns {
    columns: &'static [(&'static str, &'static str)],
    values: Vec<Vec<String>>,
}

impl Columns {
    pub fn new(columns: &'static [(&'static str, &'static str)]) -> Self {
        Columns {
            columns,
            values: vec![Vec::new(); columns.len()],
        }
    }

    /// Adds a row: one cell per column, in order.
    pub fn push<const N: usize>(&mut self, row: [Option<String>; N]) {
        debug_assert_eq!(N, self.columns.len(), "a row has one cell per column");
        for (column, cell) in self.values.iter_mut().zip(row) {
            column.push(cell.unwrap_or_default());
        }
    }

    /// `SELECT <column> [, …] FROM unnest(<arrays>) AS <alias> (<columns>)`, with each
    /// column cast to its type.
    pub fn select(self, p: &mut Params, alias: &str) -> String {
        let mut arrays = Vec::with_capacity(self.columns.len());
        let mut names = Vec::with_capacity(self.columns.len());
        let mut exprs = Vec::with_capacity(self.columns.len());
        for ((name, kind), values) in self.columns.iter().zip(self.values) {
            arrays.push(p.bind(values, "text[]"));
            names.push(*name);
            let (kind, nullable) = match kind.strip_suffix('?') {
                Some(kind) => (kind, true),
                None => (*kind, false),
            };
            let value = if nullable {
                format!("NULLIF({alias}.{name}, '')")
            } else {
                format!("{alias}.{name}")
            };
            exprs.push(match kind {
                "" => format!("{value} AS {name}"),
                kind => format!("{value}::{kind} AS {name}"),
            });
        }
        format!(
            "SELECT {} FROM unnest({}) AS {alias} ({})",
            exprs.join(", "),
            arrays.join(", "),
            names.join(", ")
        )
    }
}

/// Data-modifying parts, sent as one statement.
#[derive(Default)]
pub struct Bulk {
    params: Params,
    parts: Vec<String>,
}

impl Bulk {
    /// Adds one part: `part` binds its values and returns its SQL.
    pub fn add(&mut self, part: impl FnOnce(&mut Params) -> String) {
        let sql = part(&mut self.params);
        self.parts.push(sql);
    }

    /// Runs every part.
    pub async fn run(self, txn: &DatabaseTransaction) -> Result<(), ApiError> {
        let sql = match self.parts.as_slice() {
            [] => return Ok(()),
            [only] => only.clone(),
            parts => {
                let with: Vec<String> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| format!("w{i} AS ({part})"))
                    .collect();
                format!("WITH {} SELECT 1", with.join(", "))
            }
        };
        txn.execute_raw(self.params.into_statement(sql)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_travel_as_one_array_per_column_whatever_their_number() {
        const COLUMNS: &[(&str, &str)] = &[("id", "uuid"), ("note", "?"), ("amount", "numeric?")];
        let statement = |rows: usize| {
            let mut columns = Columns::new(COLUMNS);
            for n in 0..rows {
                columns.push([
                    Uuid::nil().cell(),
                    (n % 2 == 0).then(|| format!("row {n}")).cell(),
                    Some(Decimal::new(n as i64, 2)).cell(),
                ]);
            }
            let mut p = Params::default();
            let sql = columns.select(&mut p, "r");
            (sql, p.into_values())
        };
        let (one, one_values) = statement(1);
        let (many, many_values) = statement(50);
        assert_eq!(one, many, "the text does not depend on the number of rows");
        assert_eq!(
            many,
            "SELECT r.id::uuid AS id, NULLIF(r.note, '') AS note, \
             NULLIF(r.amount, '')::numeric AS amount \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS r (id, note, amount)"
        );
        assert_eq!((one_values.len(), many_values.len()), (3, 3));
        let Value::Array(_, Some(notes)) = &many_values[1] else {
            panic!("an array: {:?}", many_values[1]);
        };
        assert_eq!(notes[0], Value::from("row 0"));
        assert_eq!(notes[1], Value::from(""), "NULL travels as an empty string");
    }

    #[test]
    fn cells_keep_exact_decimals_and_microseconds() {
        assert_eq!(Decimal::new(1_000, 4).cell().as_deref(), Some("0.1000"));
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:11:12.123456789Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(at.cell().as_deref(), Some("2026-11-22T10:11:12.123456Z"));
        assert_eq!(None::<Uuid>.cell(), None);
    }

    #[test]
    fn parts_become_one_statement_in_order() {
        let mut bulk = Bulk::default();
        bulk.add(|p| format!("INSERT INTO t VALUES ({})", p.bind(1i64, "bigint")));
        bulk.add(|p| format!("DELETE FROM u WHERE id = {}", p.bind(2i64, "bigint")));
        assert_eq!(bulk.parts[1], "DELETE FROM u WHERE id = $2::bigint");
        assert_eq!(bulk.params.0.len(), 2);
    }
}
