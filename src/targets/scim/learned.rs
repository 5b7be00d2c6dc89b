//! What a SCIM server's answers taught the connector about its capabilities, beyond what
//! `/ServiceProviderConfig` announced. Learning only ever narrows (a refused shape is never
//! tried again for the connector's life), and each lesson is logged once.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How members leave a group, most precise first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberRemoval {
    /// `remove` with a value-filter path, `members[value eq "…"]` (RFC 7644 §3.5.2.2).
    FilterPath = 0,
    /// `remove` on `members` with the members to remove as the value (what Azure AD sends).
    ByValue = 1,
    /// GET the group, drop the members, PUT it back (under If-Match when ETags are offered).
    Put = 2,
}

impl MemberRemoval {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::FilterPath,
            1 => Self::ByValue,
            _ => Self::Put,
        }
    }

    /// The next, more widely supported, strategy.
    pub fn next(self) -> Self {
        match self {
            Self::FilterPath => Self::ByValue,
            Self::ByValue | Self::Put => Self::Put,
        }
    }
}

/// Whether an answer says the server does not support the request's *shape* (as opposed to
/// refusing its content): the cue to fall back to the next strategy instead of failing.
/// `501` and `405` always; `400` with a `scimType` about the path, filter or syntax, or
/// (for a remove by value, which some servers read as "not a value I can match")
/// `invalidValue`.
pub fn refuses_shape(status: u16, scim_type: Option<&str>, by_value: bool) -> bool {
    match status {
        501 | 405 => true,
        400 => matches!(
            (scim_type, by_value),
            (Some("invalidPath" | "invalidFilter" | "invalidSyntax"), _)
                | (Some("invalidValue"), true)
        ),
        _ => false,
    }
}

/// The resource types whose PATCH support is learned apart: a server may refuse PATCH on
/// Groups (members only by PUT) and take it on Users, or the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Users,
    Groups,
}

/// The capabilities learned so far; shared by every request of one connector.
#[derive(Debug)]
pub struct Learned {
    target: String,
    patch_users: AtomicBool,
    patch_groups: AtomicBool,
    filter: AtomicBool,
    filter_sw: AtomicBool,
    bulk: AtomicBool,
    removal: AtomicU8,
    /// PATCH paths with a value filter on a User (`emails[type eq "work"].value`).
    user_filter_path: AtomicBool,
    /// PATCH of a User's profile attributes (a server may take `replace` of `active` and
    /// refuse `remove`, as django-scim2 does).
    user_attribute_patch: AtomicBool,
    /// Groups can be filtered by member (`members.value eq "…"`): [`UNKNOWN`] until probed.
    member_filter: AtomicU8,
}

/// Not probed yet.
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

impl Learned {
    /// Starts from what the server announced. A server without filters is not sent a
    /// filter path either.
    pub fn new(target: &str, patch: bool, filter: bool) -> Self {
        let removal = if filter {
            MemberRemoval::FilterPath
        } else {
            MemberRemoval::ByValue
        };
        Self {
            target: target.to_string(),
            patch_users: AtomicBool::new(patch),
            patch_groups: AtomicBool::new(patch),
            filter: AtomicBool::new(filter),
            filter_sw: AtomicBool::new(filter),
            bulk: AtomicBool::new(true),
            removal: AtomicU8::new(removal as u8),
            user_filter_path: AtomicBool::new(filter),
            user_attribute_patch: AtomicBool::new(true),
            member_filter: AtomicU8::new(if filter { UNKNOWN } else { NO }),
        }
    }

    /// PATCH may be sent to this resource type.
    pub fn patch(&self, resource: Resource) -> bool {
        self.patch_flag(resource).load(Ordering::Relaxed)
    }

    fn patch_flag(&self, resource: Resource) -> &AtomicBool {
        match resource {
            Resource::Users => &self.patch_users,
            Resource::Groups => &self.patch_groups,
        }
    }

    /// Query filters (`eq`) may be sent.
    pub fn filter(&self) -> bool {
        self.filter.load(Ordering::Relaxed)
    }

    /// The `sw` operator may be sent.
    pub fn filter_sw(&self) -> bool {
        self.filter() && self.filter_sw.load(Ordering::Relaxed)
    }

    /// Bulk may be sent (when announced).
    pub fn bulk(&self) -> bool {
        self.bulk.load(Ordering::Relaxed)
    }

    /// The server refused a Bulk request as a whole: one request per operation from now on.
    pub fn no_bulk(&self, why: &str) {
        if self.bulk.swap(false, Ordering::Relaxed) {
            tracing::warn!(target = %self.target, %why, "the SCIM server refused Bulk after announcing it; sending one request per operation from now on");
        }
    }

    /// How to remove members now (PUT once PATCH on Groups is known unsupported).
    pub fn removal(&self) -> MemberRemoval {
        if !self.patch(Resource::Groups) {
            return MemberRemoval::Put;
        }
        MemberRemoval::from_u8(self.removal.load(Ordering::Relaxed))
    }

    /// The server refused PATCH itself on `resource`: PUT there from now on.
    pub fn no_patch(&self, resource: Resource, why: &str) {
        if self.patch_flag(resource).swap(false, Ordering::Relaxed) {
            tracing::warn!(target = %self.target, ?resource, %why, "the SCIM server does not support PATCH on this resource type after all; using read-modify-write PUT there from now on");
        }
    }

    /// A User's profile attributes may be PATCHed.
    pub fn user_attribute_patch(&self) -> bool {
        self.patch(Resource::Users) && self.user_attribute_patch.load(Ordering::Relaxed)
    }

    /// The server refused (`501`) a PATCH of a User's profile attributes: those change by
    /// read-modify-write PUT from now on; `active` and `userName` keep PATCH.
    pub fn no_user_attribute_patch(&self, why: &str) {
        if self.user_attribute_patch.swap(false, Ordering::Relaxed) {
            tracing::warn!(target = %self.target, %why, "the SCIM server refused a PATCH of user attributes; changing them by read-modify-write PUT from now on");
        }
    }

    /// A User may be PATCHed through a value-filter path (`emails[type eq "work"].value`).
    pub fn user_filter_path(&self) -> bool {
        self.user_attribute_patch() && self.user_filter_path.load(Ordering::Relaxed)
    }

    /// The server refused a PATCH with a value-filter path on a User: changes of such an
    /// attribute are read-modify-write PUTs from now on.
    pub fn no_user_filter_path(&self, why: &str) {
        if self.user_filter_path.swap(false, Ordering::Relaxed) {
            tracing::warn!(target = %self.target, %why, "the SCIM server refused a PATCH of a user through a filtered path; changing the work e-mail by read-modify-write PUT from now on");
        }
    }

    /// The server refused an `eq` filter: list and match locally from now on.
    pub fn no_filter(&self, why: &str) {
        if self.filter.swap(false, Ordering::Relaxed) {
            tracing::warn!(target = %self.target, %why, "the SCIM server refused a filter; listing and matching locally from now on");
        }
    }

    /// The server refused an `sw` filter: list every user from now on.
    pub fn no_filter_sw(&self, why: &str) {
        if self.filter_sw.swap(false, Ordering::Relaxed) {
            tracing::info!(target = %self.target, %why, "the SCIM server refused an `sw` filter; listing every user instead");
        }
    }

    /// Whether Groups can be filtered by member: `None` until a probe told.
    pub fn member_filter(&self) -> Option<bool> {
        if !self.filter() {
            return Some(false);
        }
        match self.member_filter.load(Ordering::Relaxed) {
            YES => Some(true),
            NO => Some(false),
            _ => None,
        }
    }

    /// What the probe showed; a refusal is never revised, and is logged once.
    pub fn member_filter_is(&self, works: bool, why: &str) {
        let new = if works { YES } else { NO };
        let before =
            self.member_filter
                .compare_exchange(UNKNOWN, new, Ordering::Relaxed, Ordering::Relaxed);
        if before.is_ok() && !works {
            tracing::warn!(target = %self.target, %why, "the SCIM server does not filter groups by member; a re-read of a few accounts lists every user and group instead");
        }
    }

    /// `refused` was refused for its shape: move to the next strategy (never back) and
    /// return the one to use now.
    pub fn removal_refused(&self, refused: MemberRemoval, why: &str) -> MemberRemoval {
        let next = refused.next();
        let before = self.removal.fetch_max(next as u8, Ordering::Relaxed);
        if before < next as u8 {
            tracing::warn!(target = %self.target, from = ?refused, to = ?next, %why, "the SCIM server refused this way of removing group members; falling back for the connector's life");
        }
        self.removal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_refusals_are_told_from_content_refusals() {
        // (status, scimType, by value, refuses the shape)
        let table = [
            (501, None, false, true),
            (501, Some("invalidValue"), true, true),
            (405, None, false, true),
            (400, Some("invalidPath"), false, true),
            (400, Some("invalidFilter"), false, true),
            (400, Some("invalidSyntax"), true, true),
            (400, Some("invalidValue"), true, true),
            (400, Some("invalidValue"), false, false),
            (400, Some("noTarget"), false, false),
            (400, Some("mutability"), true, false),
            (400, None, false, false),
            (404, None, false, false),
            (409, Some("uniqueness"), false, false),
            (500, None, true, false),
        ];
        for (status, scim_type, by_value, expected) in table {
            assert_eq!(
                refuses_shape(status, scim_type, by_value),
                expected,
                "{status} {scim_type:?} by_value={by_value}"
            );
        }
    }

    #[test]
    fn learning_only_narrows() {
        let learned = Learned::new("t", true, true);
        assert_eq!(learned.removal(), MemberRemoval::FilterPath);
        assert_eq!(
            learned.removal_refused(MemberRemoval::FilterPath, "501"),
            MemberRemoval::ByValue
        );
        // A late answer to an earlier filter-path request does not move it back or skip on.
        assert_eq!(
            learned.removal_refused(MemberRemoval::FilterPath, "501"),
            MemberRemoval::ByValue
        );
        assert_eq!(
            learned.removal_refused(MemberRemoval::ByValue, "400 invalidValue"),
            MemberRemoval::Put
        );
        assert_eq!(
            learned.removal_refused(MemberRemoval::FilterPath, "late"),
            MemberRemoval::Put
        );
        assert!(
            learned.patch(Resource::Groups) && learned.patch(Resource::Users),
            "removal by PUT does not stop PATCH"
        );

        let learned = Learned::new("t", true, true);
        learned.no_patch(Resource::Groups, "405");
        assert!(!learned.patch(Resource::Groups));
        assert!(learned.patch(Resource::Users), "Users keep PATCH");
        assert_eq!(learned.removal(), MemberRemoval::Put);

        let learned = Learned::new("t", true, true);
        learned.no_patch(Resource::Users, "501");
        assert!(!learned.patch(Resource::Users));
        assert!(learned.patch(Resource::Groups), "Groups keep PATCH");
        assert_eq!(learned.removal(), MemberRemoval::FilterPath);

        let learned = Learned::new("t", true, false);
        assert_eq!(
            learned.removal(),
            MemberRemoval::ByValue,
            "no filters announced"
        );
        assert!(!learned.filter() && !learned.filter_sw());

        let learned = Learned::new("t", false, true);
        assert_eq!(learned.removal(), MemberRemoval::Put);
        assert!(!learned.patch(Resource::Users), "PATCH not announced");
        learned.no_filter_sw("400");
        assert!(learned.filter() && !learned.filter_sw());
        learned.no_filter("400");
        assert!(!learned.filter());
        assert!(learned.bulk());
        learned.no_bulk("501");
        assert!(!learned.bulk());

        let learned = Learned::new("t", true, true);
        assert!(learned.user_filter_path());
        learned.no_user_filter_path("501");
        assert!(!learned.user_filter_path() && learned.patch(Resource::Users));
        let learned = Learned::new("t", true, true);
        learned.no_patch(Resource::Users, "405");
        assert!(!learned.user_filter_path(), "no PATCH, no filtered PATCH");
        assert!(!learned.user_attribute_patch());
        let learned = Learned::new("t", true, true);
        learned.no_user_attribute_patch("501");
        assert!(!learned.user_attribute_patch() && !learned.user_filter_path());
        assert!(learned.patch(Resource::Users), "active keeps PATCH");

        let learned = Learned::new("t", true, true);
        assert_eq!(learned.member_filter(), None, "probed before use");
        learned.member_filter_is(false, "ignored the filter");
        learned.member_filter_is(true, "a later probe");
        assert_eq!(learned.member_filter(), Some(false), "a refusal stands");
        let learned = Learned::new("t", true, true);
        learned.member_filter_is(true, "probe");
        assert_eq!(learned.member_filter(), Some(true));
        learned.no_filter("400");
        assert_eq!(
            learned.member_filter(),
            Some(false),
            "no filters, no member filter"
        );
        assert_eq!(Learned::new("t", true, false).member_filter(), Some(false));
    }
}
