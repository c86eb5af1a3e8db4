//! Both state machines end to end without root: the source and an agent
//! over in-memory streams and the fake port. Every test ends with exactly
//! one running copy, or the documented in-doubt state (the source stopped
//! and intact, no copy on the destination, a record and two commands).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::fake::{Ev, Hook, Script, Source};
use crate::testing::Lab;

thread_local! {
    /// The post-dump hold's deadline for a test (the protocol's is minutes).
    pub(super) static HOLD: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Where the one running copy must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Destination,
    Source,
    /// In doubt: none runs; the source is stopped.
    InDoubt,
}

/// Waits (bounded) for the world to settle as `copy` says, then checks it.
async fn settles(lab: &Lab, copy: Copy) {
    let want = |w: &crate::fake::World| match copy {
        Copy::Destination => w.destination == 1 && w.source == Source::Gone,
        Copy::Source => w.destination == 0 && w.source == Source::Running,
        Copy::InDoubt => w.destination == 0 && w.source == Source::Stopped,
    };
    for _ in 0..500 {
        if want(&lab.fake.world()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    {
        let w = lab.fake.world();
        assert!(want(&w), "expected {copy:?}: {w:#?}");
    }
    match copy {
        Copy::InDoubt => assert_eq!(lab.records().len(), 1, "the in-doubt record stays"),
        _ => assert!(
            lab.records().is_empty(),
            "no record left: {:?}",
            lab.records()
        ),
    }
    lab.agent_settles().await;
    let left: Vec<_> = std::fs::read_dir(lab.source_work.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != crate::recover::DIR)
        .collect();
    assert!(left.is_empty(), "the source left {left:?}");
}

fn events(lab: &Lab) -> Vec<Ev> {
    lab.fake.world().events.clone()
}

fn rolled_back(e: &MigrateError) -> &MigrateError {
    match e {
        MigrateError::RolledBack(inner) => inner,
        other => panic!("not rolled back: {other:?}"),
    }
}

#[tokio::test]
async fn stop_copy_moves_the_workload() {
    let lab = Lab::new(Script::default());
    let report = lab.migrate(lab.request(Strategy::StopCopy)).await.unwrap();
    assert_eq!(report.strategy, Strategy::StopCopy);
    assert_eq!(report.destination_pid, 4242);
    assert!(report.page_bytes > 0, "{report:?}");
    assert!(
        report.restore_ms.is_some() && report.criu_frozen_ms.is_some(),
        "{report:?}"
    );
    settles(&lab, Copy::Destination).await;
    let ev = events(&lab);
    let stop = ev.iter().position(|e| *e == Ev::Sigstop).unwrap();
    let release = ev.iter().position(|e| *e == Ev::Released).unwrap();
    assert!(stop < release, "stopped before the commit: {ev:?}");
    assert!(ev.contains(&Ev::WatchdogReleased), "{ev:?}");
    let kinds = lab.events.kinds();
    for k in ["strategy", "frozen", "committing", "cut-over"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
}

#[tokio::test]
async fn pre_copy_moves_the_workload_in_rounds() {
    let lab = Lab::new(Script {
        memory: 64 * 4096,
        ..Default::default()
    });
    let mut req = lab.request(Strategy::PreCopy);
    req.pre_copy.max_rounds = 2;
    let report = lab.migrate(req).await.unwrap();
    assert_eq!(report.rounds.len(), 3, "{report:?}");
    let last = report.rounds.last().unwrap();
    assert!(last.last && last.pages_written.is_some(), "{report:?}");
    assert!(
        report.rounds[1].bytes_sent < report.rounds[0].bytes_sent,
        "{report:?}"
    );
    assert!(report.converged.is_some());
    settles(&lab, Copy::Destination).await;
}

#[tokio::test]
async fn post_copy_moves_the_workload_and_releases_the_watchdog_after_the_last_page() {
    let lab = Lab::new(Script::default());
    let report = lab.migrate(lab.request(Strategy::PostCopy)).await.unwrap();
    assert_eq!(report.strategy, Strategy::PostCopy);
    assert!(
        report.dependent_ms.is_some() && report.page_bytes > 0,
        "{report:?}"
    );
    settles(&lab, Copy::Destination).await;
    let ev = events(&lab);
    let served = ev.iter().position(|e| *e == Ev::LazyServed).unwrap();
    let released = ev.iter().position(|e| *e == Ev::WatchdogReleased).unwrap();
    assert!(served < released, "{ev:?}");
}

#[tokio::test]
async fn refusals_before_the_freeze_touch_nothing() {
    let older = Script {
        criu_version: Some("4.1.1".into()),
        ..Default::default()
    };
    let newer = Script {
        criu_version: Some("4.3".into()),
        ..Default::default()
    };
    let cases = [
        (
            Lab::new(older).source_script(newer),
            "older than the source's 4.3",
        ),
        (
            Lab::new(Script {
                cpuinfo_fails: true,
                ..Default::default()
            }),
            "CPU features differ",
        ),
        (
            Lab::with_agent(
                Script {
                    files_estimate: 500,
                    ..Default::default()
                },
                |o| o.limits.max_files = 10,
            ),
            "more than the destination's limit of 10",
        ),
        (
            Lab::new(Script::default()).source_script(Script {
                no_post_copy: true,
                ..Default::default()
            }),
            "post-copy is not possible: the source cannot",
        ),
    ];
    for (lab, needle) in cases {
        let err = lab
            .migrate(lab.request(Strategy::PostCopy))
            .await
            .unwrap_err();
        assert!(
            crate::source::chain(&err).contains(needle),
            "{needle:?} in {err}"
        );
        assert!(
            !events(&lab).iter().any(|e| matches!(e, Ev::Dump { .. })),
            "nothing was dumped: {:?}",
            events(&lab)
        );
        settles(&lab, Copy::Source).await;
    }
}

#[tokio::test]
async fn an_unknown_health_check_is_refused_before_the_freeze() {
    let lab = Lab::new(Script::default());
    let mut req = lab.request(Strategy::StopCopy);
    req.health = Health::Named("ready".into());
    let err = lab.migrate(req).await.unwrap_err();
    assert!(
        err.to_string().contains("--health-check ready=COMMAND"),
        "{err}"
    );
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn criu_dying_mid_dump_rolls_back_and_thaws_the_container() {
    let lab = Lab::new(Script {
        dump_dies: true,
        container: true,
        ..Default::default()
    });
    let err = lab.migrate(lab.request(Strategy::StopCopy)).await;
    // No bundle travels for the fake's container: the process path runs
    // the same dump and thaw.
    let err = err.unwrap_err();
    assert!(crate::source::chain(&err).contains("killed"), "{err}");
    assert!(events(&lab).contains(&Ev::Thawed), "{:?}", events(&lab));
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn a_failing_restore_rolls_back_with_the_known_failure() {
    let lab = Lab::new(Script {
        restore_fails: true,
        ..Default::default()
    });
    let err = lab
        .migrate(lab.request(Strategy::StopCopy))
        .await
        .unwrap_err();
    let inner = rolled_back(&err);
    assert_eq!(
        err.known_failure().as_deref(),
        Some("pid-in-use"),
        "{err:?}"
    );
    assert!(crate::source::chain(inner).contains("File exists"), "{err}");
    settles(&lab, Copy::Source).await;
    assert!(!events(&lab).contains(&Ev::Sigstop), "never stopped");
}

#[tokio::test]
async fn a_failing_health_check_resumes_the_stopped_source() {
    let lab = Lab::with_agent(Script::default(), |o| {
        o.health_checks.insert("ready".into(), "exit 3".into());
    });
    let mut req = lab.request(Strategy::StopCopy);
    req.health = Health::Named("ready".into());
    let err = lab.migrate(req).await.unwrap_err();
    assert!(
        crate::source::chain(&err).contains("health check failed"),
        "{err}"
    );
    settles(&lab, Copy::Source).await;
    let ev = events(&lab);
    let stop = ev.iter().position(|e| *e == Ev::Sigstop).unwrap();
    let cont = ev.iter().position(|e| *e == Ev::Sigcont).unwrap();
    assert!(stop < cont && ev.contains(&Ev::TreeKilled), "{ev:?}");
}

#[tokio::test]
async fn a_restore_failing_after_the_commit_resumes_the_source() {
    let lab = Lab::new(Script {
        restore_fails_after_commit: true,
        ..Default::default()
    });
    let err = lab
        .migrate(lab.request(Strategy::StopCopy))
        .await
        .unwrap_err();
    assert!(
        crate::source::chain(&err).contains("after the commit"),
        "{err}"
    );
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn the_agent_dying_after_the_commit_leaves_the_documented_in_doubt_state() {
    let lab = Lab::new(Script::default());
    let dialer = Arc::clone(&lab.dialer);
    let world = Arc::clone(&lab.fake.world);
    lab.fake.script.lock().unwrap().on_decide = Some(Hook(Arc::new(move |commit| {
        if commit {
            world.lock().unwrap().agent_dead = true;
            dialer.kill_agent();
        }
    })));
    let err = lab
        .migrate(lab.request(Strategy::StopCopy))
        .await
        .unwrap_err();
    let doubt = err
        .in_doubt()
        .unwrap_or_else(|| panic!("in doubt: {err:?}"));
    assert!(
        doubt.resume.contains("recover") && doubt.resume.contains("--resume"),
        "{doubt:?}"
    );
    assert!(doubt.discard.contains("--discard") && doubt.discard.contains(&doubt.session));
    settles(&lab, Copy::InDoubt).await;
    assert!(
        events(&lab).contains(&Ev::WatchdogFired),
        "{:?}",
        events(&lab)
    );
    assert!(events(&lab).contains(&Ev::Settled));
    let kinds = lab.events.kinds();
    assert!(kinds.iter().any(|k| k == "in-doubt"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "rollback"), "{kinds:?}");
}

#[tokio::test]
async fn the_link_cut_after_restored_rolls_back_or_ends_in_doubt() {
    // Cut just as the destination decides: before or after Commit got
    // there, each outcome is one of the two documented ones.
    let lab = Lab::new(Script::default());
    let dialer = Arc::clone(&lab.dialer);
    lab.fake.script.lock().unwrap().on_decide = Some(Hook(Arc::new(move |_| {
        dialer.cut_link();
        // The restore ends after the link is surely gone.
        std::thread::sleep(Duration::from_millis(100));
    })));
    let result = lab.migrate(lab.request(Strategy::StopCopy)).await;
    match result {
        Err(e) if e.in_doubt().is_some() => {
            // The destination committed but could not say so: its copy
            // runs; the source is stopped.
            let w = lab.fake.world();
            assert_eq!(w.source, Source::Stopped, "{w:?}");
            assert!(w.destination <= 1);
        }
        other => panic!("a cut after Restored cannot end otherwise: {other:?}"),
    }
}

#[tokio::test]
async fn an_interrupt_while_frozen_rolls_back() {
    let lab = Lab::new(Script::default());
    let trigger = lab.trigger.clone();
    lab.fake.script.lock().unwrap().on_frozen =
        Some(Hook(Arc::new(move |_| trigger.fire("SIGTERM"))));
    let err = lab
        .migrate(lab.request(Strategy::StopCopy))
        .await
        .unwrap_err();
    let inner = rolled_back(&err);
    assert!(
        matches!(inner, MigrateError::Interrupted("SIGTERM")),
        "{err:?}"
    );
    settles(&lab, Copy::Source).await;
    assert!(!events(&lab).contains(&Ev::Sigstop));
}

#[tokio::test]
async fn an_interrupt_before_anything_froze_ends_the_migration() {
    let lab = Lab::new(Script::default());
    lab.trigger.fire("SIGINT");
    let err = lab
        .migrate(lab.request(Strategy::PreCopy))
        .await
        .unwrap_err();
    assert!(crate::source::chain(&err).contains("SIGINT"), "{err:?}");
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn an_interrupt_after_the_commit_waits_for_the_outcome() {
    let lab = Lab::new(Script::default());
    let trigger = lab.trigger.clone();
    lab.fake.script.lock().unwrap().on_decide =
        Some(Hook(Arc::new(move |_| trigger.fire("SIGINT"))));
    let report = lab.migrate(lab.request(Strategy::StopCopy)).await.unwrap();
    assert_eq!(report.destination_pid, 4242);
    settles(&lab, Copy::Destination).await;
}

#[tokio::test]
async fn a_hold_that_expired_before_the_commit_never_commits() {
    HOLD.with(|h| h.set(Some(Duration::from_millis(50))));
    let lab = Lab::new(Script {
        restore_delay: Some(Duration::from_millis(400)),
        ..Default::default()
    });
    let err = lab.migrate(lab.request(Strategy::StopCopy)).await;
    HOLD.with(|h| h.set(None));
    let err = err.unwrap_err();
    assert!(
        matches!(
            rolled_back(&err),
            MigrateError::Hold(crate::hold::CommitRefused::Expired(_))
        ),
        "{err:?}"
    );
    settles(&lab, Copy::Source).await;
    assert!(
        !events(&lab).contains(&Ev::Sigstop),
        "never stopped, never committed"
    );
}

#[tokio::test]
async fn post_copy_does_not_start_without_its_watchdog() {
    let lab = Lab::new(Script {
        watchdog_fails: true,
        ..Default::default()
    });
    let err = lab
        .migrate(lab.request(Strategy::PostCopy))
        .await
        .unwrap_err();
    assert!(
        crate::source::chain(&err).contains("would not be guarded"),
        "{err}"
    );
    assert!(
        !events(&lab).iter().any(|e| matches!(e, Ev::Dump { .. })),
        "nothing frozen"
    );
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn post_copy_pages_breaking_after_the_commit_kill_the_copy_and_resume_the_source() {
    let lab = Lab::new(Script {
        lazy_breaks: true,
        memory: 64 * 4096,
        ..Default::default()
    });
    let err = lab
        .migrate(lab.request(Strategy::PostCopy))
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::RolledBack(_)), "{err:?}");
    settles(&lab, Copy::Source).await;
    let ev = events(&lab);
    assert!(
        ev.contains(&Ev::LazyBroken) && ev.contains(&Ev::TreeKilled),
        "{ev:?}"
    );
    let cont = ev.iter().position(|e| *e == Ev::Sigcont).unwrap();
    let resumed = ev.iter().position(|e| *e == Ev::Resumed).unwrap();
    assert!(
        resumed < cont,
        "continued only once the destination said so: {ev:?}"
    );
}

#[tokio::test]
async fn a_stop_that_fails_rolls_back_before_anything_is_sent() {
    let lab = Lab::new(Script {
        stop_fails: true,
        ..Default::default()
    });
    let err = lab
        .migrate(lab.request(Strategy::StopCopy))
        .await
        .unwrap_err();
    assert!(crate::source::chain(&err).contains("EPERM"), "{err}");
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn a_page_server_failing_is_reported_by_the_destination() {
    let lab = Lab::new(Script {
        page_server_fails: true,
        ..Default::default()
    });
    let err = lab
        .migrate(lab.request(Strategy::StopCopy))
        .await
        .unwrap_err();
    assert!(
        crate::source::chain(&err).contains("No space left"),
        "{err}"
    );
    settles(&lab, Copy::Source).await;
}

#[tokio::test]
async fn post_copy_with_a_failing_health_check_keeps_the_source_alive() {
    // Every page may reach the destination before its health check fails:
    // the daemon's orderly end must not reach the source's CRIU (which
    // would take it for "every page served" and kill the source).
    let lab = Lab::with_agent(Script::default(), |o| {
        o.health_checks.insert("ready".into(), "exit 1".into());
    });
    let mut req = lab.request(Strategy::PostCopy);
    req.health = Health::Named("ready".into());
    let err = lab.migrate(req).await.unwrap_err();
    assert!(
        crate::source::chain(&err).contains("health check failed"),
        "{err}"
    );
    settles(&lab, Copy::Source).await;
    assert!(
        !events(&lab).contains(&Ev::LazyServed),
        "{:?}",
        events(&lab)
    );
}
