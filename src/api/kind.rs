//! The registry of gatehouse kinds, and the typed key of one object.

use std::fmt;
use std::str::FromStr;

use kube::Resource;

use super::{
    AccessPolicy, AccessReview, AccessReviewResponse, Exception, Identity, PolicySource,
    TargetSystem,
};

/// Every gatehouse kind. Declared in the order of their names, so that keys sort by kind
/// as their text does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    AccessPolicy,
    AccessReview,
    AccessReviewResponse,
    Exception,
    Identity,
    PolicySource,
    TargetSystem,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::AccessPolicy,
        Kind::AccessReview,
        Kind::AccessReviewResponse,
        Kind::Exception,
        Kind::Identity,
        Kind::PolicySource,
        Kind::TargetSystem,
    ];

    /// The kinds a policy repository holds (a PolicySource is not read from one).
    pub const MANIFEST: [Kind; 6] = [
        Kind::Identity,
        Kind::AccessPolicy,
        Kind::Exception,
        Kind::TargetSystem,
        Kind::AccessReview,
        Kind::AccessReviewResponse,
    ];

    /// The name, as in a manifest's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AccessPolicy => "AccessPolicy",
            Kind::AccessReview => "AccessReview",
            Kind::AccessReviewResponse => "AccessReviewResponse",
            Kind::Exception => "Exception",
            Kind::Identity => "Identity",
            Kind::PolicySource => "PolicySource",
            Kind::TargetSystem => "TargetSystem",
        }
    }

    /// Whether a policy repository holds objects of this kind.
    pub fn in_manifests(self) -> bool {
        Kind::MANIFEST.contains(&self)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `kind` that is not a gatehouse kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kind {:?} is not a gatehouse kind", self.0)
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| UnknownKind(text.to_string()))
    }
}

/// A resource type of one of the kinds.
pub trait Kinded: Resource<DynamicType = ()> {
    /// Its kind.
    const KIND: Kind;
}

impl Kinded for AccessPolicy {
    const KIND: Kind = Kind::AccessPolicy;
}
impl Kinded for AccessReview {
    const KIND: Kind = Kind::AccessReview;
}
impl Kinded for AccessReviewResponse {
    const KIND: Kind = Kind::AccessReviewResponse;
}
impl Kinded for Exception {
    const KIND: Kind = Kind::Exception;
}
impl Kinded for Identity {
    const KIND: Kind = Kind::Identity;
}
impl Kinded for PolicySource {
    const KIND: Kind = Kind::PolicySource;
}
impl Kinded for TargetSystem {
    const KIND: Kind = Kind::TargetSystem;
}

/// One object: kind, namespace and name, shown as `Kind/namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object (an unset namespace or name is empty).
    pub fn of<K: Kinded>(object: &K) -> Self {
        let meta = object.meta();
        Self::new(
            K::KIND,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_and_show_as_in_manifests() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert_eq!(AccessPolicy::kind(&()), AccessPolicy::KIND.as_str());
        assert_eq!(Exception::kind(&()), Exception::KIND.as_str());
        assert_eq!(AccessReview::kind(&()), AccessReview::KIND.as_str());
        assert_eq!(
            AccessReviewResponse::kind(&()),
            AccessReviewResponse::KIND.as_str()
        );
        assert_eq!(Identity::kind(&()), Identity::KIND.as_str());
        assert_eq!(PolicySource::kind(&()), PolicySource::KIND.as_str());
        assert_eq!(TargetSystem::kind(&()), TargetSystem::KIND.as_str());
        assert!("Secret".parse::<Kind>().is_err());
        assert!(!Kind::PolicySource.in_manifests());
        let mut sorted = Kind::ALL;
        sorted.sort_by_key(|k| k.as_str());
        assert_eq!(sorted, Kind::ALL, "kinds sort as their names");
    }

    #[test]
    fn keys_show_as_kind_namespace_name() {
        let key = ObjectKey::new(Kind::Identity, "acme", "alice");
        assert_eq!(key.to_string(), "Identity/acme/alice");
        assert!(ObjectKey::new(Kind::AccessPolicy, "z", "z") < key);
    }
}
