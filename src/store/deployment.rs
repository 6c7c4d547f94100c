//! The deployment a database belongs to: its id and the Redis namespace its
//! gate keeps counters in. A server whose namespace is not the database's
//! would give seats back to, and read them from, counters no other replica
//! uses: it is refused at start. Moving to another namespace is an explicit
//! step ([`move_namespace`], `slotgate move-namespace`).

use diesel::{QueryableByName, sql_types::Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{StoreError, prepared::prepared};

/// The database's deployment, as a server starting up finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub deployment_id: Uuid,
    /// Whether this start recorded it (the database's first).
    pub first: bool,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    deployment_id: Uuid,
    #[diesel(sql_type = Text)]
    redis_namespace: String,
}

/// Records `namespace` and a new deployment id if the database has none,
/// and returns the database's deployment if its namespace is `namespace`;
/// otherwise the error says which namespace the database belongs to.
pub async fn bind(conn: &mut AsyncPgConnection, namespace: &str) -> Result<Bound, StoreError> {
    let inserted: Vec<Row> = prepared(
        "INSERT INTO deployment (redis_namespace) VALUES ($1) ON CONFLICT (singleton) DO NOTHING \
         RETURNING deployment_id, redis_namespace",
    )
    .bind::<Text, _>(namespace)
    .load(conn)
    .await?;
    let first = !inserted.is_empty();
    let row = match inserted.into_iter().next() {
        Some(row) => row,
        None => prepared("SELECT deployment_id, redis_namespace FROM deployment").get_result(conn).await?,
    };
    if row.redis_namespace != namespace {
        return Err(StoreError::Mismatch(format!(
            "this database belongs to deployment {} with the Redis namespace {:?}, not {namespace:?}: start with \
             --redis-namespace {}, or move the deployment to {namespace:?} first with `slotgate move-namespace --from {} \
             --to {namespace}`",
            row.deployment_id, row.redis_namespace, row.redis_namespace, row.redis_namespace
        )));
    }
    Ok(Bound { deployment_id: row.deployment_id, first })
}

/// What [`move_namespace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub deployment_id: Uuid,
}

/// Moves the deployment from namespace `from` to `to`. `from` must be the
/// namespace the database has (a guard against moving the wrong database);
/// a database with no deployment yet records `to`.
pub async fn move_namespace(conn: &mut AsyncPgConnection, from: &str, to: &str) -> Result<Moved, StoreError> {
    let moved: Vec<Row> = prepared(
        "UPDATE deployment SET redis_namespace = $2, moved_from = $1, moved_at = now() \
         WHERE redis_namespace = $1 RETURNING deployment_id, redis_namespace",
    )
    .bind::<Text, _>(from)
    .bind::<Text, _>(to)
    .load(conn)
    .await?;
    let found = if moved.is_empty() {
        prepared("SELECT deployment_id, redis_namespace FROM deployment").load(conn).await?
    } else {
        moved
    };
    match found.into_iter().next() {
        Some(row) if row.redis_namespace == to => Ok(Moved { deployment_id: row.deployment_id }),
        Some(row) => Err(StoreError::Mismatch(format!(
            "this database's deployment {} has the Redis namespace {:?}, not {from:?}: nothing was moved",
            row.deployment_id, row.redis_namespace
        ))),
        None => {
            let bound = bind(conn, to).await?;
            Ok(Moved { deployment_id: bound.deployment_id })
        }
    }
}
