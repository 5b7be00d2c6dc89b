//! What LDAP answers mean: result codes classified for the retry policy (RFC 4511 4.1.9),
//! the answers that say a change is already done or a control is refused, and messages.

use ldap3::{LdapError, LdapResult};

/// What an LDAP result code means for the retry policy, by its meaning (RFC 4511 4.1.9).
/// The idempotent answers (removing a value that is not there, adding one that is) are
/// decided where the operation is known, before this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Retried with backoff: the server is busy, down or timed out.
    Transient,
    /// Retried only after someone changes something: refused by access control, schema
    /// or policy, or an entry the plan expects is missing.
    Permanent,
    /// The TargetSystem or its Secret is wrong (a bad service bind, TLS required).
    Config,
}

/// The class of result code `rc` of operation `bind`-or-not: a refused service bind
/// (invalidCredentials, 49) is a configuration error, anything else is classified by the
/// code's meaning.
pub fn classify(rc: u32, service_bind: bool) -> Class {
    match rc {
        49 if service_bind => Class::Config,
        // strongerAuthRequired, confidentialityRequired: the URL or startTLS is wrong.
        8 | 13 => Class::Config,
        // timeLimitExceeded, busy, unavailable, other, and the client-side serverDown,
        // timeout and connectError. adminLimitExceeded (11) is permanent: retrying meets
        // the same limit until an administrator lifts it.
        3 | 51 | 52 | 80 | 81 | 85 | 91 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Whether the server refused the paged-results control itself (RFC 2696), so the search
/// is worth repeating without it: unavailableCriticalExtension (12), unwillingToPerform
/// (53), protocolError (2), or adminLimitExceeded (11: OpenLDAP's "pagedResults control not
/// allowed" under `size.prtotal=disabled`) answered to the first page of a paged search.
/// A plain search then either works or says which limit to lift.
pub fn refuses_paging(rc: u32, first_page: bool) -> bool {
    first_page && matches!(rc, 2 | 11 | 12 | 53)
}

/// Whether an answer to removing `member` says the value was not there: noSuchAttribute
/// (16), or Active Directory's unwillingToPerform (53) with WILL_NOT_PERFORM (0x561) on
/// Windows or "Attribute member already deleted" on Samba.
pub fn already_removed(rc: u32, text: &str, ad: bool) -> bool {
    rc == 16
        || (ad
            && rc == 53
            && (text.contains("561") || text.to_ascii_lowercase().contains("already deleted")))
}

/// The connection itself failed (closed, reset, timed out): worth one reconnect.
pub(super) fn lost(error: &LdapError) -> bool {
    match error {
        LdapError::Io { source } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_none(),
        LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::MiscSend { .. }
        | LdapError::EndOfStream
        | LdapError::Timeout { .. } => true,
        _ => false,
    }
}

pub(super) fn describe(result: &LdapResult) -> String {
    let name = match result.rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        80 => "other",
        81 => "serverDown",
        85 => "timeout",
        91 => "connectError",
        _ => "error",
    };
    if result.text.is_empty() {
        format!("{name} ({})", result.rc)
    } else {
        format!("{name} ({}): {}", result.rc, result.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_are_classified_by_meaning() {
        use Class::*;
        let table: &[(u32, bool, Class)] = &[
            (49, true, Config),     // invalidCredentials on the service bind
            (49, false, Permanent), // ... on anything else (a user's bind is not ours)
            (8, false, Config),     // strongerAuthRequired
            (13, false, Config),    // confidentialityRequired
            (3, false, Transient),  // timeLimitExceeded
            (11, false, Permanent), // adminLimitExceeded: until the limit is lifted
            (51, false, Transient), // busy
            (52, false, Transient), // unavailable
            (80, false, Transient), // other
            (81, false, Transient), // serverDown
            (85, false, Transient), // timeout
            (91, false, Transient), // connectError
            (4, false, Permanent),  // sizeLimitExceeded
            (19, false, Permanent), // constraintViolation
            (32, false, Permanent), // noSuchObject (an entry the plan expects)
            (50, false, Permanent), // insufficientAccessRights
            (53, false, Permanent), // unwillingToPerform
            (65, false, Permanent), // objectClassViolation
            (68, false, Permanent), // entryAlreadyExists, not ours
        ];
        for (rc, bind, class) in table {
            assert_eq!(classify(*rc, *bind), *class, "rc {rc}, service bind {bind}");
        }
    }

    #[test]
    fn removing_a_non_member_counts_as_done() {
        assert!(already_removed(16, "", false));
        assert!(already_removed(
            53,
            "00002077: Attribute member already deleted",
            true
        ));
        assert!(already_removed(
            53,
            "00000561: SvcErr: DSID-031A1254, problem 5003 (WILL_NOT_PERFORM), data 0",
            true
        ));
        assert!(!already_removed(53, "something else", true));
        assert!(!already_removed(53, "already deleted", false));
        assert!(!already_removed(50, "", true));
    }

    #[test]
    fn paging_is_dropped_only_when_the_first_page_refuses_the_control() {
        assert!(refuses_paging(12, true));
        assert!(refuses_paging(53, true));
        assert!(refuses_paging(2, true));
        assert!(
            refuses_paging(11, true),
            "OpenLDAP with size.prtotal=disabled"
        );
        assert!(!refuses_paging(12, false), "a later page: a real error");
        assert!(!refuses_paging(11, false), "a later page: a real limit");
        assert!(
            !refuses_paging(4, true),
            "sizeLimitExceeded is not about the control"
        );
        assert!(!refuses_paging(50, true));
    }
}
