//! Owner-exit credential rotation: `ALTER ROLE … PASSWORD NULL`, every backend of the
//! role ended, then the rotation marker appended to the role's comment
//! (`<marker> rotated=<owner exit instant>`), so the next observation confirms it and the
//! planner never rotates twice for one exit.
//!
//! `PASSWORD NULL` rather than a random password: it disables password logins just as
//! surely, yet no secret ever exists, so none can be logged (a server with
//! `log_statement = ddl` would log an `ALTER ROLE … PASSWORD '…'` in clear) or stored. The
//! new owner sets a password of their own. Certificate or peer logins, which never were the
//! leaver's to know, are left alone.

use jiff::Timestamp;

use super::sql::quote_literal;
use super::{Commit, Postgres, TargetError, quote_ident};

/// Separates the managed-scope marker from the rotation instant in a role's comment.
pub const ROTATED: &str = " rotated=";

/// Whether `comment` marks a role of the target whose marker is `marker` and, if so, the
/// owner-exit instant of its last rotation (`None` when it was never rotated, or the
/// instant is unreadable: then it is rotated again).
pub fn marked(marker: &str, comment: Option<&str>) -> Option<Option<Timestamp>> {
    let rest = comment?.strip_prefix(marker)?;
    if rest.is_empty() {
        return Some(None);
    }
    Some(rest.strip_prefix(ROTATED)?.parse().ok())
}

impl Postgres {
    /// Rotates the credentials of `role` for the owner exit at `left_at`. A role that does
    /// not exist has nothing to rotate.
    pub(super) async fn rotate(&self, role: &str, left_at: Timestamp) -> Result<(), TargetError> {
        let client = self.client().await?;
        if self.managed(&client, role).await?.is_none() {
            return Ok(());
        }
        let q = quote_ident(role)?;
        self.transaction(
            &client,
            &format!("ALTER ROLE {q} PASSWORD NULL;"),
            Commit::Durable,
            "removing a password",
        )
        .await?;
        // Sessions opened with the old password end before the marker says "done": a
        // failure here leaves the marker unwritten, so the rotation is retried whole.
        self.terminate(&client, role).await?;
        let comment = format!("{}{ROTATED}{left_at}", self.marker);
        self.transaction(
            &client,
            &format!("COMMENT ON ROLE {q} IS {};", quote_literal(&comment)?),
            Commit::Durable,
            "marking a rotation",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_may_carry_a_rotation_instant() {
        let m = "managed-by=gatehouse tenant=a target=db";
        assert_eq!(marked(m, Some(m)), Some(None));
        assert_eq!(
            marked(m, Some(&format!("{m} rotated=2026-12-01T00:00:00Z"))),
            Some(Some("2026-12-01T00:00:00Z".parse().unwrap()))
        );
        assert_eq!(marked(m, Some(&format!("{m} rotated=garbage"))), Some(None));
        assert_eq!(marked(m, Some(&format!("{m}x"))), None);
        assert_eq!(
            marked(m, Some("managed-by=gatehouse tenant=a target=db2")),
            None
        );
        assert_eq!(marked(m, None), None);
    }
}
