//! Pure decisions of the source: which strategy, and when pre-copy's
//! rounds have converged.

use std::time::Duration;

use serde::Serialize;

use super::{PreCopyLimits, Strategy, Unavailable};

/// At or below this much memory, auto picks stop-copy: it moves the
/// workload in a fraction of a second, with no window in which the
/// workload depends on both hosts.
pub const SMALL_WORKLOAD: u64 = 64 << 20;
/// Below this many new bytes a pre-copy round counts as converged.
pub const CONVERGED_BYTES: u64 = 2 << 20;

/// What decides post-copy: each host's ability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostCopyAbility {
    pub source: Result<(), String>,
    pub destination: Result<(), String>,
}

impl PostCopyAbility {
    fn both(&self) -> Result<(), String> {
        match (&self.source, &self.destination) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(why), _) => Err(format!("the source cannot: {why}")),
            (_, Err(why)) => Err(format!("the destination cannot: {why}")),
        }
    }
}

/// The strategy for `asked` (never `Auto`), from both hosts' abilities and
/// the workload's resident memory, and why.
pub fn choose(
    asked: Strategy,
    ability: &PostCopyAbility,
    memory: u64,
) -> Result<(Strategy, String), Unavailable> {
    match asked {
        Strategy::StopCopy => Ok((Strategy::StopCopy, "asked for".into())),
        Strategy::PreCopy => Ok((
            Strategy::PreCopy,
            "asked for; rounds of leave-running dumps sent as content-hashed chunks (no soft-dirty memory tracking is used)".into(),
        )),
        Strategy::PostCopy => match ability.both() {
            Ok(()) => Ok((Strategy::PostCopy, "asked for".into())),
            Err(why) => Err(Unavailable::PostCopy { why }),
        },
        Strategy::Auto if memory <= SMALL_WORKLOAD => Ok((
            Strategy::StopCopy,
            format!(
                "auto: the workload holds {} MiB, which stop-copy moves at once, without a time in which it depends on both hosts",
                memory >> 20
            ),
        )),
        Strategy::Auto => Ok(match ability.both() {
            Ok(()) => (
                Strategy::PostCopy,
                format!(
                    "auto: the workload holds {} MiB and both hosts support lazy pages, so it stops only for its non-lazy state",
                    memory >> 20
                ),
            ),
            Err(why) => (
                Strategy::StopCopy,
                format!("auto: post-copy is not possible ({why})"),
            ),
        }),
    }
}

/// What one pre-copy round sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundFigures {
    /// 1 for the first round.
    pub round: u32,
    /// Bytes of all files of the round's dump.
    pub total: u64,
    /// Bytes of new chunks sent.
    pub sent: u64,
    /// Seconds the sending took.
    pub send_secs: f64,
}

/// Why pre-copy stopped its rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Convergence {
    /// The last round sent little.
    FewBytes {
        round: u32,
        sent: u64,
        threshold: u64,
    },
    /// The last round sent no less than the one before: the workload
    /// dirties memory as fast as it is copied.
    NotShrinking {
        round: u32,
        sent: u64,
        previous: u64,
    },
    /// The final round should fit the downtime budget.
    Budget { expected_ms: u64, budget_ms: u64 },
    /// The round limit.
    RoundLimit { rounds: u32 },
}

impl std::fmt::Display for Convergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::FewBytes {
                round,
                sent,
                threshold,
            } => write!(
                f,
                "round {round} sent {} KiB, below the {} KiB threshold",
                sent >> 10,
                threshold >> 10
            ),
            Self::NotShrinking {
                round,
                sent,
                previous,
            } => write!(
                f,
                "round {round} sent {} KiB, not less than round {}'s {} KiB: the workload dirties memory as fast as it is copied",
                sent >> 10,
                round.saturating_sub(1),
                previous >> 10
            ),
            Self::Budget {
                expected_ms,
                budget_ms,
            } => write!(
                f,
                "the final round should take about {expected_ms} ms to send, within the {budget_ms} ms budget"
            ),
            Self::RoundLimit { rounds } => write!(f, "the limit of {rounds} rounds"),
        }
    }
}

/// Whether the rounds so far (oldest first) have converged.
pub fn converge(rounds: &[RoundFigures], limits: &PreCopyLimits) -> Option<Convergence> {
    let last = rounds.last()?;
    let threshold = CONVERGED_BYTES.max(last.total / 50);
    if last.round > 1 && last.sent <= threshold {
        return Some(Convergence::FewBytes {
            round: last.round,
            sent: last.sent,
            threshold,
        });
    }
    if let Some(previous) = rounds.len().checked_sub(2).map(|i| rounds[i].sent) {
        if last.sent.saturating_mul(10) >= previous.saturating_mul(9) {
            return Some(Convergence::NotShrinking {
                round: last.round,
                sent: last.sent,
                previous,
            });
        }
    }
    // The rate of the latest round that sent something measurable.
    let rate = rounds
        .iter()
        .rev()
        .find(|r| r.sent > 0 && r.send_secs > 0.0)
        .map(|r| r.sent as f64 / r.send_secs);
    if let (Some(budget), Some(rate), true) = (limits.downtime_budget, rate, last.round > 1) {
        let expected = Duration::from_secs_f64(last.sent as f64 / rate);
        if expected <= budget {
            return Some(Convergence::Budget {
                expected_ms: u64::try_from(expected.as_millis()).unwrap_or(u64::MAX),
                budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
    let max = limits.max_rounds.max(1);
    (last.round >= max).then_some(Convergence::RoundLimit { rounds: max })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1 << 30;

    fn able(source: bool, destination: bool) -> PostCopyAbility {
        let why = |ok: bool, text: &str| if ok { Ok(()) } else { Err(text.to_owned()) };
        PostCopyAbility {
            source: why(source, "small pipes"),
            destination: why(destination, "no uffd"),
        }
    }

    #[test]
    fn auto_picks_post_copy_only_where_both_hosts_can() {
        let (s, why) = choose(Strategy::Auto, &able(true, true), BIG).unwrap();
        assert_eq!(s, Strategy::PostCopy);
        assert!(why.contains("lazy pages"), "{why}");
        let (s, why) = choose(Strategy::Auto, &able(true, false), BIG).unwrap();
        assert_eq!(s, Strategy::StopCopy);
        assert!(why.contains("destination cannot: no uffd"), "{why}");
        let (s, why) = choose(Strategy::Auto, &able(true, true), 16 << 20).unwrap();
        assert_eq!(s, Strategy::StopCopy, "a small workload moves at once");
        assert!(why.contains("16 MiB"), "{why}");
        let err = choose(Strategy::PostCopy, &able(false, true), BIG).unwrap_err();
        assert!(
            err.to_string().contains("source cannot: small pipes"),
            "{err}"
        );
        let (s, why) = choose(Strategy::PreCopy, &able(false, false), BIG).unwrap();
        assert_eq!(s, Strategy::PreCopy);
        assert!(why.contains("content-hashed"), "{why}");
        assert_eq!(
            choose(Strategy::StopCopy, &able(true, true), BIG)
                .unwrap()
                .0,
            Strategy::StopCopy
        );
    }

    fn round(round: u32, sent: u64) -> RoundFigures {
        RoundFigures {
            round,
            total: 256 << 20,
            sent,
            send_secs: sent as f64 / (100 << 20) as f64,
        }
    }

    #[test]
    fn convergence_covers_each_reason() {
        let limits = PreCopyLimits {
            max_rounds: 5,
            downtime_budget: None,
        };
        assert_eq!(converge(&[], &limits), None);
        // The first round never converges by size or progress.
        assert_eq!(converge(&[round(1, 256 << 20)], &limits), None);
        // Shrinking well: go on.
        let going = [round(1, 256 << 20), round(2, 64 << 20)];
        assert_eq!(converge(&going, &limits), None);
        // Few bytes (2% of 256 MiB is above 2 MiB).
        let few = [round(1, 256 << 20), round(2, 5 << 20)];
        assert!(matches!(
            converge(&few, &limits),
            Some(Convergence::FewBytes { round: 2, threshold, .. }) if threshold == (256 << 20) / 50
        ));
        // Not shrinking by 10%.
        let stuck = [round(1, 100 << 20), round(2, 95 << 20)];
        assert!(matches!(
            converge(&stuck, &limits),
            Some(Convergence::NotShrinking { previous, .. }) if previous == 100 << 20
        ));
        // The round limit.
        let limits1 = PreCopyLimits {
            max_rounds: 1,
            downtime_budget: None,
        };
        assert_eq!(
            converge(&[round(1, 256 << 20)], &limits1),
            Some(Convergence::RoundLimit { rounds: 1 })
        );
        // A budget the next round fits: 40 MiB at 100 MiB/s is 400 ms.
        let budget = PreCopyLimits {
            max_rounds: 5,
            downtime_budget: Some(Duration::from_millis(500)),
        };
        let fits = [round(1, 256 << 20), round(2, 40 << 20)];
        assert!(matches!(
            converge(&fits, &budget),
            Some(Convergence::Budget {
                expected_ms: 400,
                budget_ms: 500
            })
        ));
        let tight = PreCopyLimits {
            max_rounds: 5,
            downtime_budget: Some(Duration::from_millis(100)),
        };
        assert_eq!(converge(&fits, &tight), None);
        assert!(Convergence::RoundLimit { rounds: 3 }
            .to_string()
            .contains("3 rounds"));
    }
}
