//! What one round does, decided before it starts: a pure function of what the worker knows
//! (`RoundInputs`), whose answer (`RoundPlan`) the worker's round carries out in one
//! transaction. The decisions that used to hide in flags of the round's code are here, in
//! one place, with a test per case.

/// What the worker knows when a round starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundInputs {
    /// Outcomes back from the HTTP side are due for recording
    /// (see `state::Outcomes::record_due`).
    pub record_due: bool,
    /// Claimed messages not yet back, and the most there may be.
    pub outstanding: usize,
    pub max_outstanding: usize,
    /// `workflow.batch_size`, and the most rows the payload byte budget allows.
    pub batch_size: usize,
    pub byte_budget_rows: usize,
    /// The unpark flags call for a look (see `state::Parking::unpark_due`).
    pub unpark_due: bool,
    /// Whether the worker knows every destination with messages parked at its limit, and
    /// the failing destinations.
    pub limited_known: bool,
    pub failing_known: bool,
    /// The smallest room of any destination, as last read (see `claim::smallest_room`),
    /// and the most requests one destination has outstanding now.
    pub smallest_room: Option<usize>,
    pub most_outstanding: usize,
    /// Some workflow name has a push handler.
    pub pushing: bool,
    /// Delivery is paused (by hand, or as a copy: see `identity`).
    pub paused: bool,
}

/// What a round does, in order, in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundPlan {
    /// No transaction at all: full, and nothing to record (outcomes that make room wake
    /// the worker).
    pub idle_full: bool,
    /// Record the outcomes due (and what they make of the destinations' health).
    pub record: bool,
    /// Read again what commits may have changed: the failing destinations, and whether
    /// delivery is paused (the first round, or when the unpark flags call for a look).
    pub reread: bool,
    /// Rows the claim walks; 0: no claim, nor anything that prepares one.
    pub claim: usize,
    /// The round only claims: its commit need not wait for its WAL flush.
    pub commit_without_waiting: bool,
    /// Act on unpark flags (ordering keys, enabled endpoints).
    pub unpark: bool,
    /// Look for the destinations with messages parked at their limit (a dispatcher that
    /// starts, or after a failed round).
    pub find_limited: bool,
    /// Read the smallest room of any destination again.
    pub read_smallest_room: bool,
    /// Claim and enqueue the pushes of ready workflows of handled names.
    pub push: bool,
    /// Rank each destination's rows against its room in the claim (`claim.sql`'s `$9`):
    /// not needed, and dearer, while no destination can reach its room.
    pub ranked: bool,
}

/// The plan of a round.
pub fn plan_round(inputs: &RoundInputs) -> RoundPlan {
    let room = inputs
        .max_outstanding
        .saturating_sub(inputs.outstanding)
        .min(inputs.batch_size);
    if room == 0 && !inputs.record_due {
        return RoundPlan {
            idle_full: true,
            ..RoundPlan::default()
        };
    }
    // A paused database records what comes back, and claims nothing.
    let claim = if inputs.paused {
        0
    } else {
        room.min(inputs.byte_budget_rows.max(1))
    };
    let unpark = claim > 0 && inputs.unpark_due;
    RoundPlan {
        idle_full: false,
        record: inputs.record_due,
        reread: inputs.unpark_due || !inputs.failing_known,
        claim,
        commit_without_waiting: claim > 0 && !inputs.record_due,
        unpark,
        find_limited: claim > 0 && !inputs.limited_known,
        read_smallest_room: claim > 0 && (inputs.unpark_due || inputs.smallest_room.is_none()),
        push: claim > 0 && inputs.pushing,
        ranked: ranks(inputs.smallest_room, inputs.most_outstanding, claim),
    }
}

/// Whether a claim of `claim` rows ranks its walk by destination: unless no destination can
/// reach its room within this walk (the destination with `most_outstanding`, given every
/// row of the walk, against the smallest room of any). Unknown rooms rank.
pub fn ranks(smallest_room: Option<usize>, most_outstanding: usize, claim: usize) -> bool {
    smallest_room.is_none_or(|room| most_outstanding + claim > room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_ranks_unless_no_destination_can_reach_its_room() {
        let cases = [
            ("rooms not read yet", None, 0, 64, true),
            (
                "the walk cannot fill the smallest room",
                Some(128),
                0,
                64,
                false,
            ),
            (
                "the busiest destination and the walk can",
                Some(128),
                70,
                64,
                true,
            ),
            // The worker's case: a room read again in the round, smaller than the walk.
            (
                "an endpoint just limited to 2 (room 4)",
                Some(4),
                0,
                32,
                true,
            ),
        ];
        for (what, smallest_room, most_outstanding, claim, ranked) in cases {
            assert_eq!(
                ranks(smallest_room, most_outstanding, claim),
                ranked,
                "{what}"
            );
        }
    }

    /// A dispatcher in steady state: room to claim, nothing known missing.
    fn steady() -> RoundInputs {
        RoundInputs {
            record_due: false,
            outstanding: 0,
            max_outstanding: 64,
            batch_size: 100,
            byte_budget_rows: 64,
            unpark_due: false,
            limited_known: true,
            failing_known: true,
            smallest_room: Some(128),
            most_outstanding: 0,
            pushing: false,
            paused: false,
        }
    }

    #[test]
    fn each_case_plans_what_its_round_needs() {
        let cases: Vec<(&str, RoundInputs, RoundPlan)> = vec![
            (
                "room and nothing to record: claim only, without waiting for the flush",
                steady(),
                RoundPlan {
                    claim: 64,
                    commit_without_waiting: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "full, nothing to record: no transaction",
                RoundInputs {
                    outstanding: 64,
                    ..steady()
                },
                RoundPlan {
                    idle_full: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "full, outcomes due: record, claim nothing",
                RoundInputs {
                    outstanding: 64,
                    record_due: true,
                    ..steady()
                },
                RoundPlan {
                    record: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "outcomes due and room: record and claim; the commit waits (outcomes)",
                RoundInputs {
                    outstanding: 40,
                    record_due: true,
                    ..steady()
                },
                RoundPlan {
                    record: true,
                    claim: 24,
                    ..RoundPlan::default()
                },
            ),
            (
                "the batch size and the byte budget bound the walk",
                RoundInputs {
                    max_outstanding: 1000,
                    batch_size: 100,
                    byte_budget_rows: 10,
                    ..steady()
                },
                RoundPlan {
                    claim: 10,
                    commit_without_waiting: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "unpark due: act on the flags, read the failing and the smallest room",
                RoundInputs {
                    unpark_due: true,
                    ..steady()
                },
                RoundPlan {
                    claim: 64,
                    commit_without_waiting: true,
                    unpark: true,
                    reread: true,
                    read_smallest_room: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "unpark due while full: read the failing, leave the flags for a round with room",
                RoundInputs {
                    unpark_due: true,
                    outstanding: 64,
                    record_due: true,
                    ..steady()
                },
                RoundPlan {
                    record: true,
                    reread: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "a dispatcher that starts: find the limited and the failing, read the room",
                RoundInputs {
                    limited_known: false,
                    failing_known: false,
                    smallest_room: None,
                    ..steady()
                },
                RoundPlan {
                    claim: 64,
                    commit_without_waiting: true,
                    reread: true,
                    find_limited: true,
                    read_smallest_room: true,
                    ranked: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "a failing destination somewhere (the smallest room 0): the ranked claim",
                RoundInputs {
                    smallest_room: Some(0),
                    ..steady()
                },
                RoundPlan {
                    claim: 64,
                    commit_without_waiting: true,
                    ranked: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "a handled name: push before the claim",
                RoundInputs {
                    pushing: true,
                    ..steady()
                },
                RoundPlan {
                    claim: 64,
                    commit_without_waiting: true,
                    push: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "a destination may reach its room within the walk: the ranked claim",
                RoundInputs {
                    most_outstanding: 70,
                    ..steady()
                },
                RoundPlan {
                    claim: 64,
                    commit_without_waiting: true,
                    ranked: true,
                    ..RoundPlan::default()
                },
            ),
            (
                "paused: record, look for a resume when the flags call for it, claim nothing",
                RoundInputs {
                    paused: true,
                    record_due: true,
                    unpark_due: true,
                    pushing: true,
                    ..steady()
                },
                RoundPlan {
                    record: true,
                    reread: true,
                    ..RoundPlan::default()
                },
            ),
        ];
        for (case, inputs, expected) in cases {
            assert_eq!(plan_round(&inputs), expected, "{case}");
        }
    }
}
