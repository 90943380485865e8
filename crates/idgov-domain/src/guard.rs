//! The mass-change guard ("blast radius"): absence is the most dangerous
//! signal, so a change that would terminate or strip too many people at once
//! is held whole until a person releases or discards it.

use crate::policy::GuardPolicy;
use serde::{Deserialize, Serialize};

string_enum!(
    /// What a held change would do.
    HeldKind { RosterSync => "roster_sync", PolicyApply => "policy_apply", CampaignClose => "campaign_close" }
);

string_enum!(
    /// Where a held change stands.
    HeldState { Held => "held", Released => "released", Discarded => "discarded" }
);

/// The guard's verdict on one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Active identities before the change.
    pub active: u64,
    /// Identities the change would terminate (roster) or strip of grants (policy).
    pub affected: u64,
    /// The change is held when `affected` exceeds this:
    /// min(percent of active, absolute maximum).
    pub threshold: u64,
    pub tripped: bool,
}

/// Evaluates a change affecting `affected` of `active` identities.
pub fn evaluate(active: u64, affected: u64, policy: &GuardPolicy) -> Verdict {
    let by_percent = active.saturating_mul(u64::from(policy.max_leavers_percent)) / 100;
    let threshold = by_percent.min(u64::from(policy.max_leavers));
    Verdict {
        active,
        affected,
        threshold,
        tripped: affected > threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: GuardPolicy = GuardPolicy {
        max_leavers_percent: 5,
        max_leavers: 500,
    };

    #[test]
    fn five_percent_or_five_hundred_whichever_is_smaller() {
        assert_eq!(evaluate(300, 15, &DEFAULT).threshold, 15);
        assert!(!evaluate(300, 15, &DEFAULT).tripped);
        assert!(evaluate(300, 16, &DEFAULT).tripped);
        assert!(evaluate(300, 30, &DEFAULT).tripped, "10% missing is held");
        assert_eq!(evaluate(100_000, 0, &DEFAULT).threshold, 500);
        assert!(evaluate(100_000, 501, &DEFAULT).tripped);
    }

    #[test]
    fn nothing_affected_never_trips() {
        assert!(!evaluate(0, 0, &DEFAULT).tripped);
        assert!(!evaluate(10, 0, &DEFAULT).tripped);
    }
}
