//! The owned attributes of a User (`spec.attributes`, with the SCIM defaults), read from and
//! written into the resource's JSON. Pure: the same code reads an observation, checks an
//! answer, builds the body of a create and the resource of a read-modify-write PUT, so
//! what is written is what is read back.
//!
//! Names: a core attribute (`displayName`, `title`, …), a sub-attribute of `name`
//! (`name.givenName`), the work e-mail `emails[type eq "work"].value`, or an enterprise
//! extension attribute `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:<attr>`
//! (`…:manager` is `{"value": "<the manager's id>"}`).
//!
//! Reading: a value that is empty or absent is unset; a number or boolean is read as its
//! text; the work e-mail is the `value` of the entries with type `work` (any letter case),
//! else of the primary one; several values are joined by `\n`, sorted, so that they differ
//! from any single desired value and get replaced by one.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::types::{PatchOperation, USER_SCHEMA};

/// The enterprise extension's schema URN.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The work e-mail.
pub const WORK_EMAIL: &str = "emails[type eq \"work\"].value";
/// The PATCH path of every work e-mail entry.
const WORK_EMAILS: &str = "emails[type eq \"work\"]";

/// Where an owned attribute lives in a User.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attr<'a> {
    /// A top-level single-valued string.
    Core(&'a str),
    /// A sub-attribute of `name`.
    Name(&'a str),
    /// The work e-mail.
    WorkEmail,
    /// An enterprise extension string attribute.
    Enterprise(&'a str),
    /// The enterprise `manager` (its `value` is an id).
    Manager,
}

impl<'a> Attr<'a> {
    /// The attribute a mapped name addresses (names were checked when the mapping was
    /// compiled; anything else is read as a core attribute).
    pub fn of(name: &'a str) -> Self {
        if name == WORK_EMAIL {
            return Self::WorkEmail;
        }
        if let Some(attr) = name
            .strip_prefix(ENTERPRISE)
            .and_then(|r| r.strip_prefix(':'))
        {
            return if attr == "manager" {
                Self::Manager
            } else {
                Self::Enterprise(attr)
            };
        }
        match name.strip_prefix("name.") {
            Some(sub) => Self::Name(sub),
            None => Self::Core(name),
        }
    }

    /// Whether its PATCH path carries a value filter.
    pub fn filtered(self) -> bool {
        self == Self::WorkEmail
    }
}

/// A scalar as text; `None` for empty, null, objects and arrays.
fn text(value: Option<&Value>) -> Option<String> {
    let t = match value? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!t.is_empty()).then_some(t)
}

fn joined(mut values: Vec<String>) -> Option<String> {
    values.sort();
    (!values.is_empty()).then(|| values.join("\n"))
}

fn is_true(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn is_work(entry: &Value) -> bool {
    entry
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("work"))
}

/// The raw value of one attribute of a User (the manager as the id it names).
pub fn read(user: &Map<String, Value>, name: &str) -> Option<String> {
    match Attr::of(name) {
        Attr::Core(a) => match user.get(a) {
            Some(Value::Array(items)) => {
                joined(items.iter().filter_map(|v| text(Some(v))).collect())
            }
            v => text(v),
        },
        Attr::Name(a) => text(user.get("name").and_then(|n| n.get(a))),
        Attr::Enterprise(a) => text(user.get(ENTERPRISE).and_then(|e| e.get(a))),
        Attr::Manager => {
            let manager = user.get(ENTERPRISE).and_then(|e| e.get("manager"))?;
            match manager {
                Value::Object(m) => text(m.get("value")),
                other => text(Some(other)),
            }
        }
        Attr::WorkEmail => {
            let entries = user.get("emails").and_then(Value::as_array)?;
            let values = |pick: &dyn Fn(&Value) -> bool| -> Vec<String> {
                entries
                    .iter()
                    .filter(|e| pick(e))
                    .filter_map(|e| text(e.get("value")))
                    .collect()
            };
            let work = values(&is_work);
            let found = if work.is_empty() {
                values(&|e| is_true(e.get("primary")))
            } else {
                work
            };
            joined(found)
        }
    }
}

/// The raw values of the owned attributes `names` that are set on a User.
pub fn read_all<'n>(
    user: &Map<String, Value>,
    names: impl IntoIterator<Item = &'n str>,
) -> BTreeMap<String, String> {
    names
        .into_iter()
        .filter_map(|n| Some((n.to_string(), read(user, n)?)))
        .collect()
}

/// The JSON a value is written as: `{"value": id}` for the manager, a string otherwise.
pub fn json_value(name: &str, raw: &str) -> Value {
    match Attr::of(name) {
        Attr::Manager => json!({ "value": raw }),
        _ => Value::String(raw.to_string()),
    }
}

/// Sets (or, with `None`, unsets) one attribute in a User's JSON, keeping everything else
/// as it is: the body of a create, or the resource of a read-modify-write PUT.
pub fn set(user: &mut Map<String, Value>, name: &str, raw: Option<&str>) {
    match Attr::of(name) {
        Attr::Core(a) => match raw {
            Some(v) => {
                user.insert(a.to_string(), Value::String(v.to_string()));
            }
            None => {
                user.remove(a);
            }
        },
        Attr::Name(a) => set_in(user, "name", a, raw.map(|v| Value::String(v.into()))),
        Attr::Enterprise(a) => {
            set_in(user, ENTERPRISE, a, raw.map(|v| Value::String(v.into())));
            extension_schema(user);
        }
        Attr::Manager => {
            set_in(
                user,
                ENTERPRISE,
                "manager",
                raw.map(|v| json!({ "value": v })),
            );
            extension_schema(user);
        }
        Attr::WorkEmail => set_work_email(user, raw),
    }
}

/// `object[key][attr] = value` (removing `attr`, and `key` once empty, for `None`).
fn set_in(user: &mut Map<String, Value>, key: &str, attr: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            let entry = user
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Some(object) = entry.as_object_mut() {
                object.insert(attr.to_string(), v);
            }
        }
        None => {
            if let Some(object) = user.get_mut(key).and_then(Value::as_object_mut) {
                object.remove(attr);
                if object.values().all(Value::is_null) {
                    user.remove(key);
                }
            }
        }
    }
}

/// Lists the enterprise schema in `schemas` while the extension is present, and only then.
fn extension_schema(user: &mut Map<String, Value>) {
    let present = user.contains_key(ENTERPRISE);
    let schemas = user
        .entry("schemas")
        .or_insert_with(|| json!([USER_SCHEMA]));
    if let Some(list) = schemas.as_array_mut() {
        let listed = list.iter().any(|s| s.as_str() == Some(ENTERPRISE));
        if present && !listed {
            list.push(Value::String(ENTERPRISE.into()));
        } else if !present && listed {
            list.retain(|s| s.as_str() != Some(ENTERPRISE));
        }
    }
}

/// The work e-mail: the first work entry takes the value (other work entries go); without
/// one a primary work entry is added (the others stop being primary). Unset: every work
/// entry goes, else the primary entry (the one read as the work e-mail).
fn set_work_email(user: &mut Map<String, Value>, raw: Option<&str>) {
    let mut entries = match user.remove("emails") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    match raw {
        Some(v) => match entries.iter().position(is_work) {
            Some(first) => {
                if let Some(entry) = entries[first].as_object_mut() {
                    entry.insert("value".into(), Value::String(v.into()));
                }
                let mut i = 0;
                entries.retain(|e| {
                    let keep = i == first || !is_work(e);
                    i += 1;
                    keep
                });
            }
            None => {
                for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                    if entry.contains_key("primary") {
                        entry.insert("primary".into(), Value::Bool(false));
                    }
                }
                entries.push(json!({"value": v, "type": "work", "primary": true}));
            }
        },
        None => {
            if entries.iter().any(is_work) {
                entries.retain(|e| !is_work(e));
            } else {
                entries.retain(|e| !is_true(e.get("primary")));
            }
        }
    }
    if !entries.is_empty() {
        user.insert("emails".into(), Value::Array(entries));
    }
}

/// Drops the entries of multi-valued attributes that have an empty `value` (django-scim2
/// shows a user without e-mail as `emails: [{"value": "", "primary": true}]` and refuses
/// that entry when a PUT sends it back).
pub fn drop_empty_values(user: &mut Map<String, Value>) {
    for value in user.values_mut() {
        if let Value::Array(items) = value {
            items.retain(|item| item.get("value").is_none_or(|v| text(Some(v)).is_some()));
        }
    }
}

/// The PATCH operations that change `name` from `from` to `to` (raw values). The work
/// e-mail: added as a primary work entry when there was none, replaced through its
/// filtered path when there was one, and when there were several, all removed and one
/// added.
pub fn patch_ops(name: &str, from: Option<&str>, to: Option<&str>) -> Vec<PatchOperation> {
    let op = |op: &'static str, path: &str, value: Option<Value>| PatchOperation {
        op,
        path: path.to_string(),
        value,
    };
    match (Attr::of(name), to) {
        (Attr::WorkEmail, None) => vec![op("remove", WORK_EMAILS, None)],
        (Attr::WorkEmail, Some(v)) => {
            let entry = json!([{"value": v, "type": "work", "primary": true}]);
            match from {
                None => vec![op("add", "emails", Some(entry))],
                Some(f) if f.contains('\n') => vec![
                    op("remove", WORK_EMAILS, None),
                    op("add", "emails", Some(entry)),
                ],
                Some(_) => vec![op("replace", WORK_EMAIL, Some(Value::String(v.into())))],
            }
        }
        (_, None) => vec![op("remove", name, None)],
        (_, Some(v)) => vec![op("replace", name, Some(json_value(name, v)))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const DEPT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";
    const MANAGER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";

    #[test]
    fn reads_what_servers_return() {
        let u = user(json!({
            "displayName": "Ann Lee", "title": "", "nickName": "a",
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "h@x", "type": "home", "primary": true},
                       {"value": "ann@x", "type": "Work"}],
            ENTERPRISE: {"employeeNumber": 42, "department": "eng", "manager": {"value": "id7", "displayName": "Bo"}}
        }));
        let got = read_all(
            &u,
            [
                "displayName",
                "title",
                "name.givenName",
                "name.familyName",
                WORK_EMAIL,
                DEPT,
                MANAGER,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            ],
        );
        assert_eq!(got["displayName"], "Ann Lee");
        assert!(!got.contains_key("title"), "empty is unset");
        assert_eq!(got["name.givenName"], "Ann");
        assert_eq!(
            got[WORK_EMAIL], "ann@x",
            "the work entry, not the primary one"
        );
        assert_eq!(got[DEPT], "eng");
        assert_eq!(got[MANAGER], "id7");
        assert_eq!(
            got["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"],
            "42"
        );
        assert!(!got.contains_key("nickName"), "only the names asked for");

        let primary =
            user(json!({"emails": [{"value": "h@x", "primary": true}, {"value": "o@x"}]}));
        assert_eq!(read(&primary, WORK_EMAIL).as_deref(), Some("h@x"));
        let two = user(
            json!({"emails": [{"value": "b@x", "type": "work"}, {"value": "a@x", "type": "work"}]}),
        );
        assert_eq!(read(&two, WORK_EMAIL).as_deref(), Some("a@x\nb@x"));
        assert_eq!(
            read(&user(json!({"emails": [{"value": "o@x"}]})), WORK_EMAIL),
            None
        );
    }

    #[test]
    fn what_is_set_is_read_back_and_the_rest_is_kept() {
        let mut u = user(
            json!({"schemas": [USER_SCHEMA], "userName": "ann", "nickName": "kept",
            "emails": [{"value": "h@x", "type": "home", "primary": true}]}),
        );
        let values = [
            ("displayName", "Ann Lee"),
            ("name.givenName", "Ann"),
            (WORK_EMAIL, "ann@x"),
            (DEPT, "eng"),
            (MANAGER, "id7"),
        ];
        for (name, value) in values {
            set(&mut u, name, Some(value));
        }
        for (name, value) in values {
            assert_eq!(read(&u, name).as_deref(), Some(value), "{name}");
        }
        assert_eq!(u["nickName"], "kept");
        assert_eq!(u["schemas"], json!([USER_SCHEMA, ENTERPRISE]));
        assert_eq!(u[ENTERPRISE]["manager"], json!({"value": "id7"}));
        assert_eq!(
            u["emails"],
            json!([{"value": "h@x", "type": "home", "primary": false},
                   {"value": "ann@x", "type": "work", "primary": true}])
        );
        // Replacing keeps one work entry.
        u.insert(
            "emails".into(),
            json!([{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "work"}]),
        );
        set(&mut u, WORK_EMAIL, Some("c@x"));
        assert_eq!(u["emails"], json!([{"value": "c@x", "type": "work"}]));
        // Unsetting.
        for (name, _) in values {
            set(&mut u, name, None);
            assert_eq!(read(&u, name), None, "{name}");
        }
        assert!(
            !u.contains_key(ENTERPRISE) && !u.contains_key("name") && !u.contains_key("emails")
        );
        assert_eq!(u["schemas"], json!([USER_SCHEMA]));
        assert_eq!(u["nickName"], "kept");
    }

    #[test]
    fn patch_operations() {
        let body = |ops: Vec<PatchOperation>| serde_json::to_value(ops).unwrap();
        assert_eq!(
            body(patch_ops(MANAGER, None, Some("id7"))),
            json!([{"op": "replace", "path": MANAGER, "value": {"value": "id7"}}])
        );
        assert_eq!(
            body(patch_ops("title", Some("a"), None)),
            json!([{"op": "remove", "path": "title"}])
        );
        assert_eq!(
            body(patch_ops(WORK_EMAIL, None, Some("a@x"))),
            json!([{"op": "add", "path": "emails", "value": [{"value": "a@x", "type": "work", "primary": true}]}])
        );
        assert_eq!(
            body(patch_ops(WORK_EMAIL, Some("b@x"), Some("a@x"))),
            json!([{"op": "replace", "path": WORK_EMAIL, "value": "a@x"}])
        );
        assert_eq!(
            body(patch_ops(WORK_EMAIL, Some("b@x\nc@x"), Some("a@x")))
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
