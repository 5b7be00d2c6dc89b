//! HR feeds: a CSV report with a header row, a JSON array of objects, or a SCIM 2.0
//! `BulkRequest` / `ListResponse` of `User` resources. Every format becomes the same flat
//! records: column name → text. Parsing is pure (bytes in, records out).

use std::collections::HashMap;

use serde_json::Value;

/// The SCIM enterprise User extension's schema URN.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Feed formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header row, then one row per person.
    Csv,
    /// An array of objects (nested objects become `a.b` columns).
    Json,
    /// A SCIM 2.0 BulkRequest or ListResponse of Users (enterprise extension as `enterprise.*`).
    Scim,
}

/// One person's row, with where it was in the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `line 7` (CSV) or `record 3` (JSON, SCIM).
    pub label: String,
    /// Values by column index into [`Feed::columns`]; `None` when absent or empty.
    pub values: Vec<Option<String>>,
}

/// A whole feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows that parsed.
    pub records: Vec<Record>,
    /// Rows that did not parse: (label, what is wrong and the fix).
    pub malformed: Vec<(String, String)>,
    /// For each malformed CSV row, the values it did have (by column, possibly short), so
    /// that its employee id still counts as present in a full feed.
    pub malformed_values: Vec<Vec<Option<String>>>,
    /// Whether every column is known for every record (CSV's header); for JSON and SCIM a
    /// column missing from a record is simply empty.
    pub fixed_columns: bool,
}

impl Feed {
    /// The index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Parses a feed; an error is a feed that cannot be read at all.
pub fn parse(format: Format, bytes: &[u8]) -> Result<Feed, String> {
    match format {
        Format::Csv => parse_csv(bytes),
        Format::Json => parse_json(bytes),
        Format::Scim => parse_scim(bytes),
    }
}

/// Parses CSV with a header row (a UTF-8 byte-order mark is ignored).
pub fn parse_csv(bytes: &[u8]) -> Result<Feed, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // The csv crate's line numbers skip blank lines; count newlines up to each record's
    // byte offset instead, so that `line N` is the line an editor shows.
    let newlines: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let line_at = |byte: u64| {
        // A record's position can be where the reader stopped, before blank lines.
        let mut at = byte as usize;
        while matches!(bytes.get(at), Some(b'\n' | b'\r')) {
            at += 1;
        }
        newlines.partition_point(|&n| n < at) + 1
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| format!("the header row cannot be read: {e}"))?
        .clone();
    let columns: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    if columns.iter().all(|c| c.is_empty()) {
        return Err(
            "the feed is empty: the first line must be a header row naming the columns".into(),
        );
    }
    let mut seen = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        if let Some(first) = seen.insert(c.as_str(), i) {
            return Err(format!(
                "header: column {c:?} appears twice (columns {} and {}): rename one",
                first + 1,
                i + 1
            ));
        }
    }
    let mut feed = Feed {
        columns,
        fixed_columns: true,
        ..Feed::default()
    };
    let mut row = csv::StringRecord::new();
    loop {
        let line = line_at(reader.position().byte());
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let line = row.position().map_or(line, |p| line_at(p.byte()));
                let label = format!("line {line}");
                if row.iter().all(|v| v.trim().is_empty()) {
                    continue;
                }
                if row.len() != feed.columns.len() {
                    feed.malformed_values.push(
                        row.iter()
                            .map(|v| Some(v.trim().to_string()).filter(|v| !v.is_empty()))
                            .collect(),
                    );
                    feed.malformed.push((
                        label,
                        format!(
                            "has {} fields, the header has {}: quote values that contain commas (\"Doe, Jane\")",
                            row.len(),
                            feed.columns.len()
                        ),
                    ));
                    continue;
                }
                let values = row
                    .iter()
                    .map(|v| {
                        let v = v.trim();
                        (!v.is_empty()).then(|| v.to_string())
                    })
                    .collect();
                feed.records.push(Record { label, values });
            }
            Err(e) => {
                let label = match e.position() {
                    Some(p) => format!("line {}", line_at(p.byte())),
                    None => format!("line {line}"),
                };
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => {
                        "is not UTF-8: export the report as UTF-8".to_string()
                    }
                    _ => format!("cannot be read ({e}): check its quoting"),
                };
                feed.malformed.push((label, message));
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) && e.position().is_none() {
                    break;
                }
            }
        }
    }
    Ok(feed)
}

/// Builds records from JSON objects, flattening nested objects to `a.b` columns.
struct Builder {
    index: HashMap<String, usize>,
    feed: Feed,
}

impl Builder {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            feed: Feed::default(),
        }
    }

    fn push(&mut self, label: String, object: &Value) {
        let Value::Object(map) = object else {
            self.feed.malformed.push((
                label,
                format!(
                    "is {}, not an object: each record is {{\"column\": value, ...}}",
                    kind(object)
                ),
            ));
            return;
        };
        let mut flat = Vec::new();
        flatten("", map, &mut flat);
        let mut values = vec![None; self.feed.columns.len()];
        for (key, value) in flat {
            let i = *self.index.entry(key.clone()).or_insert_with(|| {
                self.feed.columns.push(key);
                self.feed.columns.len() - 1
            });
            if values.len() <= i {
                values.resize(i + 1, None);
            }
            values[i] = Some(value);
        }
        self.feed.records.push(Record { label, values });
    }

    fn finish(mut self) -> Feed {
        let n = self.feed.columns.len();
        for r in &mut self.feed.records {
            r.values.resize(n, None);
        }
        self.feed
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Flattens an object: nested objects join keys with `.`; an array of objects contributes
/// its `primary: true` element (else its first); scalars become text; nulls and empty
/// strings are left out.
fn flatten(prefix: &str, map: &serde_json::Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (key, value) in map {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Null => {}
            Value::String(s) => {
                let s = s.trim();
                if !s.is_empty() {
                    out.push((key, s.to_string()));
                }
            }
            Value::Bool(b) => out.push((key, b.to_string())),
            Value::Number(n) => out.push((key, n.to_string())),
            Value::Object(inner) => flatten(&key, inner, out),
            Value::Array(items) => {
                let chosen = items
                    .iter()
                    .find(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
                    .or_else(|| items.first());
                match chosen {
                    Some(Value::Object(inner)) => flatten(&key, inner, out),
                    Some(Value::String(s)) if !s.trim().is_empty() => {
                        out.push((key, s.trim().to_string()))
                    }
                    _ => {}
                }
            }
        }
    }
}

fn json(bytes: &[u8]) -> Result<Value, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not valid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })
}

/// Parses a JSON array of objects (or `{"Report_Entry": [...]}`, Workday's report shape).
pub fn parse_json(bytes: &[u8]) -> Result<Feed, String> {
    let value = json(bytes)?;
    let items = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.values().find_map(Value::as_array) {
            Some(items) if map.len() == 1 => items,
            _ => {
                return Err(
                    "expected an array of objects (or an object with one array, like Workday's {\"Report_Entry\": [...]})".into(),
                );
            }
        },
        other => {
            return Err(format!(
                "expected an array of objects, found {}",
                kind(other)
            ));
        }
    };
    let mut b = Builder::new();
    for (i, item) in items.iter().enumerate() {
        b.push(format!("record {}", i + 1), item);
    }
    Ok(b.finish())
}

/// Parses a SCIM 2.0 `BulkRequest` (POST/PUT/PATCH operations carrying a User in `data`)
/// or `ListResponse` (`Resources`). The enterprise extension's attributes become
/// `enterprise.employeeNumber`, `enterprise.manager.value`, ...
pub fn parse_scim(bytes: &[u8]) -> Result<Feed, String> {
    let value = json(bytes)?;
    let schemas: Vec<&str> = value
        .get("schemas")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut b = Builder::new();
    let user = |b: &mut Builder, label: String, data: &Value| {
        let mut data = data.clone();
        if let Value::Object(map) = &mut data
            && let Some(ext) = map.remove(ENTERPRISE)
        {
            map.insert("enterprise".into(), ext);
        }
        b.push(label, &data);
    };
    if schemas.contains(&"urn:ietf:params:scim:api:messages:2.0:BulkRequest") {
        let ops = value
            .get("Operations")
            .and_then(Value::as_array)
            .ok_or("a BulkRequest needs \"Operations\": [...]")?;
        for (i, op) in ops.iter().enumerate() {
            let label = match op.get("bulkId").and_then(Value::as_str) {
                Some(id) => format!("operation {} (bulkId {id})", i + 1),
                None => format!("operation {}", i + 1),
            };
            let method = op.get("method").and_then(Value::as_str).unwrap_or("");
            match (method.to_ascii_uppercase().as_str(), op.get("data")) {
                ("POST" | "PUT" | "PATCH", Some(data)) => user(&mut b, label, data),
                ("DELETE", _) => b.feed.malformed.push((
                    label,
                    "DELETE is not imported (it carries no employee id): send the User with \"active\": false".into(),
                )),
                _ => b.feed.malformed.push((
                    label,
                    format!("method {method:?} without data: each operation is POST/PUT/PATCH with the User in \"data\""),
                )),
            }
        }
    } else if schemas.contains(&"urn:ietf:params:scim:api:messages:2.0:ListResponse") {
        let resources = value
            .get("Resources")
            .and_then(Value::as_array)
            .ok_or("a ListResponse needs \"Resources\": [...]")?;
        for (i, r) in resources.iter().enumerate() {
            user(&mut b, format!("resource {}", i + 1), r);
        }
    } else {
        return Err(
            "not a SCIM BulkRequest or ListResponse: \"schemas\" must name urn:ietf:params:scim:api:messages:2.0:BulkRequest or ...:ListResponse".into(),
        );
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(feed: &'a Feed, r: usize, col: &str) -> Option<&'a str> {
        feed.records[r].values[feed.column(col)?].as_deref()
    }

    #[test]
    fn csv_rows_keep_their_line_and_bad_rows_are_listed() {
        let feed = parse_csv(
            b"\xEF\xBB\xBFid,name,city\n1,\"Doe, Jane\",Berlin\n\n2,Bob\n3,\"Multi\nline\", Paris \n",
        )
        .unwrap();
        assert_eq!(feed.columns, vec!["id", "name", "city"]);
        assert_eq!(feed.records.len(), 2);
        assert_eq!(feed.records[0].label, "line 2");
        assert_eq!(get(&feed, 0, "name"), Some("Doe, Jane"));
        assert_eq!(feed.records[1].label, "line 5");
        assert_eq!(get(&feed, 1, "city"), Some("Paris"));
        assert_eq!(feed.malformed.len(), 1);
        assert_eq!(feed.malformed[0].0, "line 4");
        assert!(feed.malformed[0].1.contains("has 2 fields"));
        assert!(
            parse_csv(b"a,a\n1,2\n")
                .unwrap_err()
                .contains("appears twice")
        );
    }

    #[test]
    fn json_and_scim_flatten_to_columns() {
        let feed = parse_json(
            br#"{"Report_Entry": [{"id": 7, "org": {"dept": "Sales"}, "x": null}, "oops"]}"#,
        )
        .unwrap();
        assert_eq!(get(&feed, 0, "id"), Some("7"));
        assert_eq!(get(&feed, 0, "org.dept"), Some("Sales"));
        assert_eq!(feed.malformed[0].0, "record 2");
        let scim = parse_scim(
            br#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
              {"method": "POST", "bulkId": "a", "path": "/Users", "data": {
                 "externalId": "E1", "active": false,
                 "emails": [{"value": "x@a"}, {"value": "p@a", "primary": true}],
                 "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "E1", "manager": {"value": "E0"}}}},
              {"method": "DELETE", "path": "/Users/9"}]}"#,
        )
        .unwrap();
        assert_eq!(get(&scim, 0, "active"), Some("false"));
        assert_eq!(get(&scim, 0, "emails.value"), Some("p@a"));
        assert_eq!(get(&scim, 0, "enterprise.manager.value"), Some("E0"));
        assert_eq!(scim.records[0].label, "operation 1 (bulkId a)");
        assert!(scim.malformed[0].1.contains("DELETE"));
        assert!(parse_scim(b"{}").unwrap_err().contains("BulkRequest"));
        assert!(parse_json(b"[1,").unwrap_err().contains("line 1"));
    }
}
