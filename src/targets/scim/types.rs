//! SCIM 2.0 resources and messages (RFC 7643, RFC 7644) as this connector reads and writes
//! them. Reading is lenient: unknown attributes are kept (`extra`), booleans and numbers may
//! arrive as strings, `null` counts as absent. Writing is exact: request bodies are their own
//! types and carry only the attributes gatehouse means to set.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

/// `meta` of a resource.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The entity tag (`W/"3"`), when the server versions resources.
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    /// Everything else in `meta`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A User as read from the server.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub user_name: Option<String>,
    /// Absent means the server has no notion of it: the account counts as enabled.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "null_default")]
    pub meta: Meta,
    /// Every other attribute, kept as read (a PUT sends them back unchanged).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A member of a group as read from the server.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Member {
    #[serde(default, deserialize_with = "lenient_string")]
    pub value: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A Group as read from the server.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    /// `None` when the server left the attribute out (some leave it out of lists, and out
    /// of empty groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    #[serde(default, deserialize_with = "null_default")]
    pub meta: Meta,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A page of a list or search.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "T: serde::de::DeserializeOwned")
)]
pub struct ListResponse<T> {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_results: Option<u64>,
    #[serde(default, rename = "Resources", alias = "resources")]
    #[serde(deserialize_with = "null_vec")]
    pub resources: Vec<T>,
}

impl<T> Default for ListResponse<T> {
    fn default() -> Self {
        Self {
            total_results: None,
            resources: Vec::new(),
        }
    }
}

/// A SCIM error body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub status: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub scim_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub detail: Option<String>,
}

/// `{"supported": bool}` blocks of the ServiceProviderConfig.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Supported {
    #[serde(default, deserialize_with = "lenient_bool")]
    pub supported: Option<bool>,
}

impl Supported {
    pub fn yes(&self) -> bool {
        self.supported == Some(true)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkSupport {
    #[serde(default, deserialize_with = "lenient_bool")]
    pub supported: Option<bool>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_operations: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_payload_size: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterSupport {
    #[serde(default, deserialize_with = "lenient_bool")]
    pub supported: Option<bool>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_results: Option<u64>,
}

/// `/ServiceProviderConfig`: what the server says it can do.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct ServiceProviderConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub patch: Supported,
    #[serde(default, deserialize_with = "null_default")]
    pub bulk: BulkSupport,
    #[serde(default, deserialize_with = "null_default")]
    pub filter: FilterSupport,
    #[serde(default, deserialize_with = "null_default")]
    pub etag: Supported,
}

// ---- what gatehouse writes ----

/// The body of `POST /Users`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewUser<'a> {
    pub schemas: [&'static str; 1],
    pub user_name: &'a str,
    pub external_id: &'a str,
    pub active: bool,
}

/// The body of `POST /Groups`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewGroup<'a> {
    pub schemas: [&'static str; 1],
    pub display_name: &'a str,
}

/// One `PatchOp` operation.
#[derive(Clone, Debug, Serialize)]
pub struct PatchOperation {
    pub op: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The body of a PATCH.
#[derive(Clone, Debug, Serialize)]
pub struct PatchOp {
    pub schemas: [&'static str; 1],
    #[serde(rename = "Operations")]
    pub operations: Vec<PatchOperation>,
}

impl PatchOp {
    pub fn new(operations: Vec<PatchOperation>) -> Self {
        Self {
            schemas: [PATCH_SCHEMA],
            operations,
        }
    }
}

/// A reference to a member when adding one.
#[derive(Clone, Debug, Serialize)]
pub struct MemberRef<'a> {
    pub value: &'a str,
}

/// One operation of a Bulk request.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperation {
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// The body of `POST /Bulk`.
#[derive(Clone, Debug, Serialize)]
pub struct BulkRequest {
    pub schemas: [&'static str; 1],
    #[serde(rename = "Operations")]
    pub operations: Vec<BulkOperation>,
}

/// One result of a Bulk response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    #[serde(default, deserialize_with = "lenient_string")]
    pub method: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub bulk_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub location: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub status: Option<u64>,
    #[serde(default)]
    pub response: Option<Value>,
}

/// The body of a Bulk response.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct BulkResponse {
    #[serde(default, rename = "Operations", deserialize_with = "null_default")]
    pub operations: Vec<BulkResult>,
}

// ---- lenient readers ----

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_vec<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(Some(b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Value::Null => Ok(None),
        other => Err(de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_is_lenient_and_keeps_unknown_attributes() {
        let user: User = serde_json::from_str(
            r#"{"id": 7, "userName": "alice", "active": "False", "meta": null,
                "name": {"givenName": "Alice"}, "urn:x:ext": {"costCenter": "4100"}}"#,
        )
        .unwrap();
        assert_eq!(user.id.as_deref(), Some("7"));
        assert_eq!(user.active, Some(false));
        assert_eq!(user.meta, Meta::default());
        assert!(user.extra.contains_key("name") && user.extra.contains_key("urn:x:ext"));
        let back = serde_json::to_value(&user).unwrap();
        assert_eq!(back["name"]["givenName"], "Alice");

        let group: Group =
            serde_json::from_str(r#"{"id": "g", "displayName": "x", "members": null}"#).unwrap();
        assert!(group.members.is_none());
        let list: ListResponse<User> =
            serde_json::from_str(r#"{"totalResults": "2", "Resources": [{}, {"id": "b"}]}"#)
                .unwrap();
        assert_eq!(list.total_results, Some(2));
        assert_eq!(list.resources.len(), 2);
        let err: ErrorBody =
            serde_json::from_str(r#"{"status": "409", "scimType": "uniqueness"}"#).unwrap();
        assert_eq!(err.status, Some(409));
        let spc: ServiceProviderConfig =
            serde_json::from_str(r#"{"bulk": {"supported": true, "maxOperations": "10"}}"#)
                .unwrap();
        assert!(spc.bulk.supported == Some(true) && spc.bulk.max_operations == Some(10));
        assert!(!spc.patch.yes() && !spc.etag.yes());
    }

    #[test]
    fn writing_is_exact() {
        let body = serde_json::to_value(NewUser {
            schemas: [USER_SCHEMA],
            user_name: "alice",
            external_id: "acme/alice",
            active: true,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"schemas": [USER_SCHEMA], "userName": "alice",
                "externalId": "acme/alice", "active": true})
        );
        let patch = serde_json::to_value(PatchOp::new(vec![PatchOperation {
            op: "remove",
            path: "members[value eq \"u1\"]".into(),
            value: None,
        }]))
        .unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"schemas": [PATCH_SCHEMA], "Operations":
                [{"op": "remove", "path": "members[value eq \"u1\"]"}]})
        );
    }
}
