//! What a connector is built from: its TargetSystem and the data of its credentials Secret.
//! The controller reads both; connectors only read this.

use std::collections::BTreeMap;
use std::fmt;

use super::TargetError;
use crate::api::TargetSystemSpec;

/// One TargetSystem, ready for a connector to connect with.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    /// The tenant namespace.
    pub namespace: String,
    /// The TargetSystem's name (what entitlements name in `target`).
    pub name: String,
    /// Its spec.
    pub spec: TargetSystemSpec,
    /// The data of `spec.credentialsSecretRef`, empty when it names none.
    pub credentials: Credentials,
}

impl TargetConfig {
    /// The Secret a TargetSystem's connector reads: the kubeconfig Secret of a remote
    /// Kubernetes target, else `spec.credentialsSecretRef`.
    pub fn secret_name(spec: &TargetSystemSpec) -> Option<&str> {
        spec.kubernetes
            .as_ref()
            .and_then(|k| k.kubeconfig_secret_ref.as_ref())
            .or(spec.credentials_secret_ref.as_ref())
            .map(|r| r.name.as_str())
    }

    /// `spec.<block>`, or a configuration error that says it is missing.
    pub fn block<'a, T>(&self, block: &'a Option<T>, field: &str) -> Result<&'a T, TargetError> {
        block.as_ref().ok_or_else(|| {
            TargetError::Config(format!(
                "TargetSystem {}/{}: spec.{field} is required for type {:?}",
                self.namespace, self.name, self.spec.type_
            ))
        })
    }
}

/// The data of a Secret. `Debug` prints the keys, never the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Secret name, for error messages.
    pub secret: String,
    data: BTreeMap<String, Vec<u8>>,
}

impl Credentials {
    /// Wraps the data of Secret `secret`.
    pub fn new(secret: impl Into<String>, data: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            data,
        }
    }

    /// The raw bytes under `key`, if present.
    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// The UTF-8 value under `key`, if present.
    pub fn optional(&self, key: &str) -> Result<Option<&str>, TargetError> {
        match self.data.get(key) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| {
                TargetError::Config(format!(
                    "Secret {}: key {key:?} is not UTF-8 text",
                    self.display_name()
                ))
            }),
        }
    }

    /// The UTF-8 value under `key`, or an error naming the Secret and the key to add.
    pub fn required(&self, key: &str) -> Result<&str, TargetError> {
        self.optional(key)?.ok_or_else(|| {
            TargetError::Config(format!(
                "Secret {}: key {key:?} is missing; add it to the credentials Secret",
                self.display_name()
            ))
        })
    }

    fn display_name(&self) -> &str {
        if self.secret.is_empty() {
            "(spec.credentialsSecretRef not set)"
        } else {
            &self.secret
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret", &self.secret)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values_and_errors_name_the_key() {
        let c = Credentials::new(
            "ldap-admin",
            BTreeMap::from([("password".to_string(), b"hunter2".to_vec())]),
        );
        let shown = format!("{c:?}");
        assert!(shown.contains("password") && !shown.contains("hunter2"));
        assert_eq!(c.required("password").unwrap(), "hunter2");
        let missing = c.required("bindDN").unwrap_err().to_string();
        assert!(missing.contains("ldap-admin") && missing.contains("bindDN"));
    }
}
