//! The status of an AccessReview, built from the engine's progress of its latest cycle
//! (pure: no client). `Ready` is True while no answer is overdue and no new cycle is due;
//! `Reconciling` while answers are outstanding before the due date; `Stalled` while some
//! are overdue or the next cycle is due and not opened.

use jiff::Timestamp;

use super::status::Conditions;
use crate::api::{AccessReviewStatus, condition_types};
use crate::engine::review::ReviewProgress;

/// Builds an AccessReview's status. `previous` keeps `lastTransitionTime` of conditions
/// whose status did not change.
pub fn review_status(
    progress: &ReviewProgress,
    previous: Option<&AccessReviewStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> AccessReviewStatus {
    let mut c = Conditions::new(previous.map(|p| p.conditions.as_slice()), generation, now);
    let overdue = !progress.overdue_reviewers.is_empty();
    let cycle_due = progress.next_cycle.is_some_and(|t| t <= now);
    let counts = format!(
        "{} pending, {} kept, {} revoked",
        progress.pending, progress.kept, progress.revoked
    );
    let stalled = if overdue {
        Some((
            "Overdue",
            format!(
                "answers past the due date from {}; {counts}",
                progress.overdue_reviewers.join(", ")
            ),
        ))
    } else if cycle_due {
        Some((
            "CycleDue",
            format!(
                "the next cycle was due at {}: run `gatehouse review open`",
                progress
                    .next_cycle
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
        ))
    } else if progress.cycle.is_none() {
        Some((
            "NotOpened",
            "no cycle opened yet: run `gatehouse review open`".to_string(),
        ))
    } else {
        None
    };
    let ready = stalled.is_none();
    let (reason, message) = match &stalled {
        Some((reason, message)) => (*reason, message.clone()),
        None if progress.pending > 0 => ("InProgress", counts.clone()),
        None => ("Complete", counts.clone()),
    };
    c.set(condition_types::READY, ready, reason, message);
    c.set_if(
        condition_types::RECONCILING,
        (ready && progress.pending > 0).then(|| ("AwaitingAnswers", counts.clone())),
    );
    c.set_if(condition_types::STALLED, stalled);
    AccessReviewStatus {
        observed_generation: generation,
        cycle: progress.cycle.clone(),
        due: progress.due.map(|t| t.to_string()),
        pending: progress.pending as i64,
        kept: progress.kept as i64,
        revoked: progress.revoked as i64,
        overdue_reviewers: progress.overdue_reviewers.clone(),
        conditions: c.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn ready_reconciling_and_stalled_follow_the_cycle() {
        let progress = ReviewProgress {
            cycle: Some("2026-06-01".into()),
            due: Some(at("2026-06-15T00:00:00Z")),
            next_cycle: Some(at("2026-08-30T00:00:00Z")),
            pending: 2,
            kept: 1,
            revoked: 0,
            overdue_reviewers: vec![],
        };
        let types = |s: &AccessReviewStatus| {
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect::<Vec<_>>()
        };
        let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        let open = review_status(&progress, None, Some(3), at("2026-06-10T00:00:00Z"));
        assert_eq!(
            types(&open),
            [
                t("Ready", "True", "InProgress"),
                t("Reconciling", "True", "AwaitingAnswers")
            ]
        );
        assert_eq!((open.pending, open.kept, open.revoked), (2, 1, 0));
        assert_eq!(open.observed_generation, Some(3));
        let late = ReviewProgress {
            overdue_reviewers: vec!["carol".into()],
            ..progress.clone()
        };
        let stalled = review_status(&late, Some(&open), Some(3), at("2026-06-20T00:00:00Z"));
        assert_eq!(
            types(&stalled),
            [
                t("Ready", "False", "Overdue"),
                t("Stalled", "True", "Overdue")
            ]
        );
        assert!(stalled.conditions[0].message.contains("carol"));
        let done = ReviewProgress {
            pending: 0,
            ..progress.clone()
        };
        let complete = review_status(&done, Some(&open), Some(3), at("2026-06-20T00:00:00Z"));
        assert_eq!(types(&complete), [t("Ready", "True", "Complete")]);
        // Ready stayed True: its transition time is kept.
        assert_eq!(
            complete.conditions[0].last_transition_time,
            open.conditions[0].last_transition_time
        );
        let due = review_status(&done, None, None, at("2026-09-01T00:00:00Z"));
        assert_eq!(
            types(&due),
            [
                t("Ready", "False", "CycleDue"),
                t("Stalled", "True", "CycleDue")
            ]
        );
    }
}
