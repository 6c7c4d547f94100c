//! Menus: the prices pre-orders are charged, and their upkeep.

use std::collections::HashMap;

use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{StoreError, prepared::prepared};
use crate::domain::{MenuOrder, MenuUpload};

/// The unit prices of a pre-order's items, in the order's order.
pub(super) enum Prices {
    Found(Vec<i64>),
    /// This menu id is not on the restaurant's menu.
    Missing(i64),
}

/// Looks up the current price of every item ordered, in one query.
pub(super) async fn unit_prices(
    conn: &mut AsyncPgConnection,
    restaurant_id: i64,
    items: &[MenuOrder],
) -> Result<Prices, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Price {
        #[diesel(sql_type = BigInt)]
        menu_id: i64,
        #[diesel(sql_type = BigInt)]
        price: i64,
    }
    if items.is_empty() {
        return Ok(Prices::Found(Vec::new()));
    }
    let menu_ids: Vec<i64> = items.iter().map(|i| i.menu_id).collect();
    let prices: HashMap<i64, i64> =
        prepared("SELECT menu_id, price FROM menus WHERE restaurant_id = $1 AND menu_id = ANY($2)")
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Array<BigInt>, _>(&menu_ids)
            .load::<Price>(conn)
            .await?
            .into_iter()
            .map(|p| (p.menu_id, p.price))
            .collect();
    let mut found = Vec::with_capacity(items.len());
    for item in items {
        match prices.get(&item.menu_id) {
            Some(&price) => found.push(price),
            None => return Ok(Prices::Missing(item.menu_id)),
        }
    }
    Ok(Prices::Found(found))
}

/// Creates or updates menu items; returns how many were written.
pub async fn put_menu(conn: &mut AsyncPgConnection, menu: &MenuUpload) -> Result<usize, StoreError> {
    let restaurant_id = menu.restaurant_id;
    let ids: Vec<i64> = menu.items.iter().map(|i| i.menu_id).collect();
    let names: Vec<&str> = menu.items.iter().map(|i| i.name.as_str()).collect();
    let prices: Vec<i64> = menu.items.iter().map(|i| i.price).collect();
    let written = conn
        .transaction(async |conn| {
            prepared("INSERT INTO restaurants (id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind::<BigInt, _>(restaurant_id)
                .execute(conn)
                .await?;
            prepared(
                "INSERT INTO menus (restaurant_id, menu_id, name, price)
                 SELECT $1, m, n, p FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS t(m, n, p)
                 ON CONFLICT (restaurant_id, menu_id)
                 DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, updated_at = now()",
            )
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<Text>, _>(&names)
            .bind::<Array<BigInt>, _>(&prices)
            .execute(conn)
            .await
        })
        .await?;
    Ok(written)
}
