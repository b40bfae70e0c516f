//! Column definitions shared by migrations written after this module existed (released
//! migrations keep their own copies: they are never edited).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// An exact amount column: NUMERIC on PostgreSQL, TEXT on SQLite (whose arithmetic
/// would turn decimals into binary floats; sums are made in Rust there).
pub(crate) fn amount(manager: &SchemaManager, col: impl IntoIden, nullable: bool) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    match manager.get_database_backend() {
        DatabaseBackend::Sqlite => def.text(),
        _ => def.decimal(),
    };
    if nullable {
        def.null();
    } else {
        def.not_null();
    }
    def.to_owned()
}
