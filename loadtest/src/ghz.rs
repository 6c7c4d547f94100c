//! ghz's vocabulary: its JSON config files, its call-data templates, and the
//! request JSON (protobuf's JSON mapping) the templates produce.

use std::{collections::HashMap, path::Path, time::Duration};

use serde::Deserialize;
use slotgate::pb;

/// The keys of a ghz config file this tool understands (ghz's own names).
/// Keys it does not know are ignored, as ghz ignores what it does not use.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GhzConfig {
    pub host: Option<String>,
    pub call: Option<String>,
    pub proto: Option<String>,
    pub import_paths: Option<Vec<String>>,
    pub insecure: Option<bool>,
    pub total: Option<u64>,
    pub concurrency: Option<usize>,
    pub connections: Option<usize>,
    #[serde(alias = "qps")]
    pub rps: Option<u32>,
    pub duration: Option<String>,
    pub timeout: Option<String>,
    pub data: Option<serde_json::Value>,
    pub metadata: Option<HashMap<String, String>>,
    pub count_errors: Option<bool>,
    pub format: Option<String>,
    pub output: Option<String>,
    pub name: Option<String>,
    pub tags: Option<HashMap<String, String>>,
}

impl GhzConfig {
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A Go duration: "300ms", "10s", "1m30s", "2h".
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("not a duration: {text:?} (like 500ms, 10s, 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = &rest[unit..];
    }
    Ok(total)
}

/// Fills ghz's template fields: `{{.RequestNumber}}`, `{{.WorkerID}}`,
/// `{{.TimestampUnix}}`, `{{.TimestampUnixMilli}}`, `{{.TimestampUnixNano}}`.
/// (ghz runs full Go templates; these are the fields call data uses.)
pub fn render(template: &str, request_number: u64, worker_id: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    template
        .replace("{{.RequestNumber}}", &request_number.to_string())
        .replace("{{.WorkerID}}", worker_id)
        .replace("{{.TimestampUnixNano}}", &now.as_nanos().to_string())
        .replace("{{.TimestampUnixMilli}}", &now.as_millis().to_string())
        .replace("{{.TimestampUnix}}", &now.as_secs().to_string())
}

/// `CreateReservationRequest` in protobuf's JSON mapping (field names as in
/// the .proto or in lowerCamelCase; enums by name or number).
#[derive(Debug, Deserialize)]
struct ReservationJson {
    #[serde(alias = "requestId")]
    request_id: String,
    #[serde(alias = "userId")]
    user_id: String,
    slot: SlotJson,
    #[serde(alias = "partySize")]
    party_size: i32,
    #[serde(rename = "type")]
    kind: serde_json::Value,
    #[serde(default, alias = "menuItems")]
    menu_items: Vec<ItemJson>,
}

#[derive(Debug, Deserialize)]
struct SlotJson {
    #[serde(alias = "restaurantId")]
    restaurant_id: serde_json::Value,
    date: String,
    time: String,
}

#[derive(Debug, Deserialize)]
struct ItemJson {
    #[serde(alias = "menuId")]
    menu_id: serde_json::Value,
    quantity: i32,
}

/// An int64 as protobuf JSON writes it: a number or a string.
fn int64(value: &serde_json::Value) -> Result<i64, String> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| format!("not an int64: {n}")),
        serde_json::Value::String(s) => s.parse().map_err(|_| format!("not an int64: {s:?}")),
        other => Err(format!("not an int64: {other}")),
    }
}

/// Parses rendered call data into a request.
pub fn reservation_from_json(json: &str) -> Result<pb::CreateReservationRequest, String> {
    let r: ReservationJson = serde_json::from_str(json).map_err(|e| format!("call data: {e}"))?;
    let kind = match &r.kind {
        serde_json::Value::String(name) => {
            pb::ReservationType::from_str_name(name).ok_or_else(|| format!("call data: unknown type {name:?}"))? as i32
        }
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0) as i32,
        other => return Err(format!("call data: bad type {other}")),
    };
    Ok(pb::CreateReservationRequest {
        request_id: r.request_id,
        user_id: r.user_id,
        slot: Some(pb::SlotRef { restaurant_id: int64(&r.slot.restaurant_id)?, date: r.slot.date, time: r.slot.time }),
        party_size: r.party_size,
        r#type: kind,
        menu_items: r
            .menu_items
            .iter()
            .map(|i| Ok(pb::MenuItemOrder { menu_id: int64(&i.menu_id)?, quantity: i.quantity }))
            .collect::<Result<_, String>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(go_duration("ten").is_err());
        assert!(go_duration("").is_err());
    }

    #[test]
    fn a_template_renders_into_a_request() {
        let template = r#"{"request_id":"r-{{.RequestNumber}}","user_id":"u-{{.WorkerID}}",
            "slot":{"restaurant_id":"67","date":"2026-12-24","time":"19:00"},"party_size":4,"type":"RESERVATION_DEPOSIT"}"#;
        let request = reservation_from_json(&render(template, 7, "g0c3")).unwrap();
        assert_eq!((request.request_id.as_str(), request.user_id.as_str()), ("r-7", "u-g0c3"));
        assert_eq!(request.slot.unwrap().restaurant_id, 67);
        assert_eq!(request.r#type, pb::ReservationType::ReservationDeposit as i32);
        let camel =
            r#"{"requestId":"a","userId":"b","slot":{"restaurantId":1,"date":"d","time":"t"},"partySize":2,"type":2}"#;
        assert_eq!(reservation_from_json(camel).unwrap().party_size, 2);
    }
}
