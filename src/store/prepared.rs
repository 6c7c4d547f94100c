//! Hand-written SQL that each connection prepares once and then reuses.
//!
//! diesel's `sql_query` marks its statement as unsafe to cache, so every call
//! prepares it anew: a Parse/Describe round trip and a fresh plan before the
//! statement even runs, then a Close. On a reservation's path (an insert and
//! a conditional update in one transaction) that is two extra round trips
//! per winner: over 1,000 slots on a 2-core machine, winners committed about
//! 1,550/s that way and about 2,500/s with the statements kept.
//! [`prepared`] takes the same SQL and binds (`$1`, `$2`, ... may repeat and
//! come in any order) and lets the connection's statement cache keep it,
//! keyed by its text.

use std::borrow::Cow;

use diesel::{
    QueryResult,
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    serialize::ToSql,
    sql_types::{HasSqlType, Untyped},
};

/// A statement built by [`prepared`]; run it as a diesel-async query
/// (`execute`, `load`, `get_result`), rows by name like `sql_query`'s.
#[must_use = "a statement runs only when executed or loaded"]
pub struct Prepared<'a> {
    sql: Cow<'static, str>,
    binds: Vec<Box<dyn QueryFragment<Pg> + Send + 'a>>,
}

/// `sql_query`, but prepared once per connection.
pub fn prepared(sql: impl Into<Cow<'static, str>>) -> Prepared<'static> {
    Prepared { sql: sql.into(), binds: Vec::new() }
}

struct Bind<ST, U> {
    value: U,
    sql_type: std::marker::PhantomData<fn() -> ST>,
}

impl<ST, U> QueryFragment<Pg> for Bind<ST, U>
where
    Pg: HasSqlType<ST>,
    U: ToSql<ST, Pg>,
{
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        pass.push_bind_param::<ST, U>(&self.value)
    }
}

impl<'a> Prepared<'a> {
    /// Binds the next parameter (`$1` first), as `SqlQuery::bind` does.
    pub fn bind<ST, U>(mut self, value: U) -> Self
    where
        ST: 'static,
        Pg: HasSqlType<ST>,
        U: ToSql<ST, Pg> + Send + 'a,
    {
        self.binds.push(Box::new(Bind::<ST, U> { value, sql_type: std::marker::PhantomData }));
        self
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    /// Writes the text with each `$n` replaced by the n-th bind's own
    /// placeholder, so a parameter used twice is simply bound twice.
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest: &str = &self.sql;
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            out.push_sql(&rest[..at]);
            if digits == 0 {
                out.push_sql("$");
                rest = &rest[at + 1..];
                continue;
            }
            let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
            let bind = n.checked_sub(1).and_then(|i| self.binds.get(i)).ok_or_else(|| {
                diesel::result::Error::QueryBuilderError(
                    format!("${n} has no bound value ({} bound)", self.binds.len()).into(),
                )
            })?;
            bind.walk_ast(out.reborrow())?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use diesel::{
        debug_query,
        sql_types::{BigInt, Text},
    };

    use super::*;

    #[test]
    fn placeholders_follow_the_binds_even_when_repeated_or_reordered() {
        let q = prepared("UPDATE t SET a = a + $2 WHERE id = $1 AND a + $2 <= $3 AND b = '$'")
            .bind::<BigInt, _>(7_i64)
            .bind::<BigInt, _>(4_i64)
            .bind::<Text, _>("x");
        let shown = debug_query::<Pg, _>(&q).to_string();
        assert!(shown.starts_with("UPDATE t SET a = a + $1 WHERE id = $2 AND a + $3 <= $4 AND b = '$'"), "{shown}");
        assert!(shown.contains("binds: [4, 7, 4, \"x\"]"), "{shown}");
    }

    #[test]
    fn a_missing_bind_is_an_error_not_a_panic() {
        let q = prepared("SELECT $2").bind::<BigInt, _>(1_i64);
        assert!(q.to_sql(&mut diesel::pg::PgQueryBuilder::default(), &Pg).is_err());
        assert!(prepared("SELECT $0").to_sql(&mut diesel::pg::PgQueryBuilder::default(), &Pg).is_err());
    }

    #[test]
    fn it_is_safe_to_cache() {
        let q = prepared("SELECT $1").bind::<BigInt, _>(1_i64);
        assert!(q.is_safe_to_cache_prepared(&Pg).unwrap());
    }
}
