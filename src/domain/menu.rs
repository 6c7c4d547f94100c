//! Menus as callers upload them.

use std::collections::HashSet;

use super::FieldError;
use crate::pb;

/// A validated entry of `PutMenuRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub menu_id: i64,
    pub name: String,
    pub price: i64,
}

/// Longest menu item name, in characters.
pub const MAX_MENU_NAME: usize = 200;
/// Most items one `PutMenu` call may write.
pub const MAX_PUT_MENU_ITEMS: usize = 1_000;

/// A validated `PutMenuRequest`: items to create or update on one
/// restaurant's menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuUpload {
    pub restaurant_id: i64,
    pub items: Vec<MenuItem>,
}

pub fn parse_put_menu(req: &pb::PutMenuRequest) -> Result<MenuUpload, FieldError> {
    if req.restaurant_id <= 0 {
        return Err(FieldError::new("restaurant_id", "must be a positive id"));
    }
    if req.items.is_empty() || req.items.len() > MAX_PUT_MENU_ITEMS {
        return Err(FieldError::new("items", format!("give 1 to {MAX_PUT_MENU_ITEMS} items")));
    }
    let mut seen = HashSet::with_capacity(req.items.len());
    let items = req
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.menu_id <= 0 {
                return Err(FieldError::new(format!("items[{i}].menu_id"), "must be a positive id"));
            }
            if !seen.insert(item.menu_id) {
                return Err(FieldError::new(format!("items[{i}].menu_id"), "appears twice"));
            }
            let name = item.name.trim();
            if name.is_empty() || name.chars().count() > MAX_MENU_NAME || name.chars().any(char::is_control) {
                return Err(FieldError::new(
                    format!("items[{i}].name"),
                    format!("must be 1 to {MAX_MENU_NAME} printable characters"),
                ));
            }
            if item.price < 0 {
                return Err(FieldError::new(format!("items[{i}].price"), "must not be negative"));
            }
            Ok(MenuItem { menu_id: item.menu_id, name: name.to_owned(), price: item.price })
        })
        .collect::<Result<_, _>>()?;
    Ok(MenuUpload { restaurant_id: req.restaurant_id, items })
}
