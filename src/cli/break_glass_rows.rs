//! `gatehouse audit --break-glass FILE`: rows for break-glass use, read from the ledger
//! ConfigMap the controller appends to (`kubectl get configmap gatehouse-break-glass -n NS
//! -o yaml`), since break-glass Exceptions are created outside Git and Git history alone
//! cannot show them.

use serde::Deserialize;

use super::audit::Row;
use crate::api::BreakGlassStatus;

/// One ledger value, as the controller writes it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    exception: String,
    identity: String,
    #[serde(default)]
    entitlements: Vec<String>,
    event: String,
    at: String,
    #[serde(default)]
    record: Option<BreakGlassStatus>,
}

/// Rows of a ledger file: a ConfigMap, or a `List` of them (one per tenant namespace), in
/// YAML or JSON. Entries that do not parse are errors naming the key.
pub fn rows(text: &str, path: &str) -> Result<Vec<Row>, String> {
    let doc: serde_json::Value = serde_yaml::from_str(text)
        .map_err(|e| format!("--break-glass {path}: not YAML or JSON: {e}"))?;
    let maps: Vec<&serde_json::Value> = match doc.get("kind").and_then(|k| k.as_str()) {
        Some("ConfigMap") => vec![&doc],
        Some("List") => doc
            .get("items")
            .and_then(|i| i.as_array())
            .map(|i| i.iter().collect())
            .unwrap_or_default(),
        _ => {
            return Err(format!(
                "--break-glass {path}: expected a ConfigMap (kubectl get configmap gatehouse-break-glass -n NAMESPACE -o yaml) or a List of them"
            ));
        }
    };
    let mut out = Vec::new();
    for map in maps {
        let namespace = map
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let Some(data) = map.get("data").and_then(|d| d.as_object()) else {
            continue;
        };
        for (key, value) in data {
            let entry: Entry = value
                .as_str()
                .ok_or_else(|| format!("--break-glass {path}: data.{key} is not a string"))
                .and_then(|v| {
                    serde_json::from_str(v).map_err(|e| {
                        format!("--break-glass {path}: data.{key} is not a ledger entry: {e}")
                    })
                })?;
            out.extend(entry_rows(namespace, &entry));
        }
    }
    out.sort_by(|a, b| {
        (&a.time, &a.identity, &a.entitlement).cmp(&(&b.time, &b.identity, &b.entitlement))
    });
    Ok(out)
}

fn entry_rows(namespace: &str, entry: &Entry) -> Vec<Row> {
    let record = entry.record.clone().unwrap_or_default();
    let by = record.by.clone().unwrap_or_else(|| "unknown".into());
    let (change, time, reason) = match entry.event.as_str() {
        "activated" => (
            "granted",
            record
                .activated_at
                .clone()
                .unwrap_or_else(|| entry.at.clone()),
            match &record.ratify_by {
                Some(d) => format!(
                    "break-glass used by {by} until {}; unratified, due in Git by {d}",
                    record.until
                ),
                None => format!("break-glass used by {by} until {}", record.until),
            },
        ),
        "expired" => (
            "revoked",
            record.until.clone(),
            format!("break-glass expired (used by {by}); sessions ended where the target can"),
        ),
        _ => (
            "revoked",
            record.ratify_by.clone().unwrap_or_else(|| entry.at.clone()),
            format!("break-glass not ratified in Git in time (used by {by}): revoked early"),
        ),
    };
    entry
        .entitlements
        .iter()
        .map(|e| Row {
            time: time.clone(),
            commit: String::new(),
            author: by.clone(),
            signer: "outside Git".into(),
            trigger: "break-glass",
            namespace: namespace.to_string(),
            identity: entry.identity.clone(),
            target: e.split(':').next().unwrap_or_default().to_string(),
            entitlement: e.clone(),
            change,
            source: format!("Exception/{}", entry.exception),
            source_path: String::new(),
            source_commit: String::new(),
            reason: reason.clone(),
            enforced: true,
            authored_by: vec![],
            approved_by: vec![],
            review: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_entries_become_rows() {
        let record = r#"{\"by\":\"ana\",\"from\":\"2026-06-15T10:00:00Z\",\"until\":\"2026-06-15T14:00:00Z\",\"ratified\":false,\"ratifyBy\":\"2026-06-15T11:00:00Z\",\"activatedAt\":\"2026-06-15T10:00:05Z\"}"#;
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: gatehouse-break-glass, namespace: acme}}\ndata:\n  bg.1234.activated: '{{\"exception\":\"bg\",\"identity\":\"alice\",\"entitlements\":[\"pg:ledger_admin\"],\"event\":\"activated\",\"at\":\"2026-06-15T10:00:05Z\",\"record\":{r}}}'\n  bg.1234.revoked: '{{\"exception\":\"bg\",\"identity\":\"alice\",\"entitlements\":[\"pg:ledger_admin\"],\"event\":\"revoked\",\"at\":\"2026-06-15T11:00:02Z\",\"record\":{r}}}'\n",
            r = record.replace("\\\"", "\"")
        );
        let rows = rows(&yaml, "ledger.yaml").unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.time.as_str(), r.change, r.identity.as_str(), r.trigger))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-06-15T10:00:05Z", "granted", "alice", "break-glass"),
                ("2026-06-15T11:00:00Z", "revoked", "alice", "break-glass")
            ]
        );
        assert!(rows[0].reason.contains("used by ana"));
        assert!(rows[1].reason.contains("not ratified"));
        assert_eq!(rows[0].target, "pg");
        assert!(super::rows("kind: Secret", "x").is_err());
    }
}
