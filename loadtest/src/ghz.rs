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
    /// A JSON file holding the call data (relative to where the tool runs,
    /// as with ghz).
    pub data_file: Option<String>,
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

    /// The call data template: `data`, else the contents of `data-file`.
    pub fn data_template(&self) -> Result<Option<String>, String> {
        match (&self.data, &self.data_file) {
            (Some(data), _) => Ok(Some(data.to_string())),
            (None, Some(file)) => std::fs::read_to_string(file).map(Some).map_err(|e| format!("data-file {file}: {e}")),
            (None, None) => Ok(None),
        }
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

/// Fills a ghz call-data template. ghz runs Go templates with sprig's
/// functions; this evaluates what call data needs: the fields
/// `.RequestNumber`, `.WorkerID`, `.TimestampUnix`, `.TimestampUnixMilli`,
/// `.TimestampUnixNano`, and `div`, `mod` and `add` on `.RequestNumber` (so
/// `{{div .RequestNumber 3}}` makes three clicks per user). Anything else is
/// an error rather than a silently wrong request.
pub fn render(template: &str, request_number: u64, worker_id: &str) -> Result<String, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let close = rest[open..].find("}}").ok_or("call data: unclosed {{")? + open;
        let action = rest[open + 2..close].trim();
        let words: Vec<&str> = action.split_whitespace().collect();
        let value = match words.as_slice() {
            [".RequestNumber"] => request_number.to_string(),
            [".WorkerID"] => worker_id.to_owned(),
            [".TimestampUnix"] => now.as_secs().to_string(),
            [".TimestampUnixMilli"] => now.as_millis().to_string(),
            [".TimestampUnixNano"] => now.as_nanos().to_string(),
            [f @ ("div" | "mod" | "add"), ".RequestNumber", n] => {
                let n: u64 = n.parse().map_err(|_| format!("call data: {{{{{action}}}}}: not a number"))?;
                match *f {
                    "div" if n > 0 => request_number / n,
                    "mod" if n > 0 => request_number % n,
                    "add" => request_number + n,
                    _ => return Err(format!("call data: {{{{{action}}}}}: division by zero")),
                }
                .to_string()
            }
            _ => return Err(format!("call data: {{{{{action}}}}} is not supported here")),
        };
        out.push_str(&value);
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
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
            "slot":{"restaurant_id":"67","date":"2036-12-24","time":"19:00"},"party_size":4,"type":"RESERVATION_DEPOSIT"}"#;
        let request = reservation_from_json(&render(template, 7, "g0c3").unwrap()).unwrap();
        assert_eq!((request.request_id.as_str(), request.user_id.as_str()), ("r-7", "u-g0c3"));
        assert_eq!(request.slot.unwrap().restaurant_id, 67);
        assert_eq!(request.r#type, pb::ReservationType::ReservationDeposit as i32);
        let camel =
            r#"{"requestId":"a","userId":"b","slot":{"restaurantId":1,"date":"d","time":"t"},"partySize":2,"type":2}"#;
        assert_eq!(reservation_from_json(camel).unwrap().party_size, 2);
    }

    #[test]
    fn sprig_arithmetic_on_the_request_number_makes_clicks_per_user() {
        let users: Vec<String> =
            (0..6).map(|n| render("u{{div .RequestNumber 3}}-c{{ mod .RequestNumber 3 }}", n, "w").unwrap()).collect();
        assert_eq!(users, ["u0-c0", "u0-c1", "u0-c2", "u1-c0", "u1-c1", "u1-c2"]);
        assert_eq!(render("{{add .RequestNumber 100}}", 5, "w").unwrap(), "105");
        assert!(render("{{randomString 8}}", 0, "w").is_err(), "unsupported functions fail loudly");
        assert!(render("{{div .RequestNumber 0}}", 0, "w").is_err());
        assert!(render("{{.RequestNumber", 0, "w").is_err());
    }
}
