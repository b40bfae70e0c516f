//! Many rows in few round trips: PostgreSQL statements assembled from parts.
//!
//! On a busy market the time an order takes is mostly the round trips its transaction
//! makes while it holds the market's lock, not the work PostgreSQL does for each. Writes
//! that are decided in this process can instead go out together: each kind of row as
//! one multi-row part, and all the parts as one statement (`WITH w0 AS (…), w1 AS (…)
//! SELECT 1`). PostgreSQL runs every data-modifying part exactly once and checks
//! foreign keys at the end of the statement, so one part may insert rows that another
//! part's rows refer to. Two parts must never change the same row.

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, Value};

use crate::error::ApiError;

/// PostgreSQL's limit on bind parameters in one statement is 65,535; a statement is
/// closed well before it.
const MAX_PARAMS: usize = 30_000;

/// Rows per part for callers that write long lists: keeps any single part far below
/// [`MAX_PARAMS`] even for wide rows.
pub const ROWS_PER_PART: usize = 500;

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
}

/// Data-modifying parts, sent as few statements as the parameter limit allows.
#[derive(Default)]
pub struct Bulk {
    done: Vec<(Params, Vec<String>)>,
    params: Params,
    parts: Vec<String>,
}

impl Bulk {
    /// Adds one part. `part` binds its values and returns its SQL; it runs again, on a
    /// fresh statement, when the current one would exceed the parameter limit.
    pub fn add(&mut self, mut part: impl FnMut(&mut Params) -> String) {
        let mark = self.params.0.len();
        let sql = part(&mut self.params);
        if self.params.0.len() > MAX_PARAMS && mark > 0 {
            self.params.0.truncate(mark);
            self.done.push((
                std::mem::take(&mut self.params),
                std::mem::take(&mut self.parts),
            ));
            let sql = part(&mut self.params);
            self.parts.push(sql);
        } else {
            self.parts.push(sql);
        }
    }

    /// Adds `rows` as parts of at most [`ROWS_PER_PART`] rows each.
    pub fn add_rows<T>(&mut self, rows: &[T], mut part: impl FnMut(&mut Params, &[T]) -> String) {
        for chunk in rows.chunks(ROWS_PER_PART) {
            self.add(|p| part(p, chunk));
        }
    }

    /// Runs every part, in as few statements as the parameter limit allows.
    pub async fn run(mut self, txn: &DatabaseTransaction) -> Result<(), ApiError> {
        if !self.parts.is_empty() {
            self.done.push((self.params, self.parts));
        }
        for (params, parts) in self.done {
            let sql = match parts.as_slice() {
                [only] => only.clone(),
                _ => {
                    let with: Vec<String> = parts
                        .iter()
                        .enumerate()
                        .map(|(i, part)| format!("w{i} AS ({part})"))
                        .collect();
                    format!("WITH {} SELECT 1", with.join(", "))
                }
            };
            txn.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                sql,
                params.into_values(),
            ))
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_on_from_the_statement_so_far() {
        let mut bulk = Bulk::default();
        bulk.add(|p| format!("INSERT INTO t VALUES ({})", p.bind(1i64, "bigint")));
        bulk.add(|p| {
            format!(
                "INSERT INTO u VALUES ({}, {})",
                p.bind(2i64, "bigint"),
                p.bind("x", "text")
            )
        });
        assert_eq!(bulk.parts[1], "INSERT INTO u VALUES ($2::bigint, $3::text)");
        assert_eq!(bulk.params.0.len(), 3);
        assert!(bulk.done.is_empty());
    }

    #[test]
    fn a_part_that_would_pass_the_limit_starts_a_new_statement_and_is_bound_afresh() {
        let mut bulk = Bulk::default();
        let rows: Vec<i64> = (0..(MAX_PARAMS as i64 - 10)).collect();
        bulk.add(|p| {
            let placeholders: Vec<String> = rows.iter().map(|r| p.bind(*r, "bigint")).collect();
            placeholders.join(",")
        });
        bulk.add(|p| format!("{},{}", p.bind(0i64, "bigint"), p.bind(1i64, "bigint")));
        assert!(bulk.done.is_empty(), "still under the limit");
        let mut calls = 0;
        bulk.add(|p| {
            calls += 1;
            (0..20)
                .map(|i| p.bind(i as i64, "bigint"))
                .collect::<Vec<_>>()
                .join(",")
        });
        assert_eq!(calls, 2, "bound once, then again on a fresh statement");
        assert_eq!(bulk.done.len(), 1);
        assert_eq!(bulk.done[0].0 .0.len(), MAX_PARAMS - 8);
        assert_eq!(bulk.params.0.len(), 20);
        assert!(bulk.parts[0].starts_with("$1::bigint,$2::bigint"));
    }

    #[test]
    fn long_row_lists_are_split_into_parts() {
        let mut bulk = Bulk::default();
        let rows: Vec<i64> = (0..(ROWS_PER_PART as i64 * 2 + 1)).collect();
        let mut sizes = Vec::new();
        bulk.add_rows(&rows, |p, chunk| {
            sizes.push(chunk.len());
            chunk
                .iter()
                .map(|r| p.bind(*r, "bigint"))
                .collect::<Vec<_>>()
                .join(",")
        });
        assert_eq!(sizes, vec![ROWS_PER_PART, ROWS_PER_PART, 1]);
        assert_eq!(bulk.parts.len(), 3);
    }
}
