//! The rate window's figures as [`Snapshot::window`] exports them (`redguard_circuit_failure_rate`,
//! `redguard_circuit_slow_call_rate`, `redguard_circuit_window_calls`): driven with a hand-moved clock, each
//! figure checked against the calls that were made, as the window rolls, is cleared on a transition, and is
//! absent while no rate threshold is set.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A closed-state call taking `elapsed`, admitted and recorded at `now`.
fn call(m: &mut Machine, now: Instant, ok: bool, elapsed: Duration) -> Option<Transition> {
    let (admission, t) = m.admit(now);
    assert_eq!(admission, Admission::Allowed(CallKind::Normal));
    assert!(t.is_none());
    let outcome = if ok {
        Outcome::Success { elapsed }
    } else {
        Outcome::Failure { elapsed }
    };
    m.record(now, CallKind::Normal, outcome)
}

fn settings() -> Settings {
    Settings {
        failure_threshold: 100,
        failure_rate_threshold: Some(60.0),
        slow_call_duration: Some(Duration::from_millis(50)),
        slow_call_rate_threshold: Some(90.0),
        window_size: 4,
        minimum_calls: 4,
        recovery_jitter: 0.0,
        ..Settings::default()
    }
}

#[test]
fn the_figures_are_those_of_the_last_window_size_calls() {
    let mut now = Instant::now();
    let mut m = Machine::new(settings(), now, 1);
    assert_eq!(m.snapshot(now).window, WindowFigures::default());
    assert_eq!(
        m.snapshot(now).window.failure_rate(),
        0.0,
        "an empty window has no rate"
    );

    // fail, slow success, success: 3 calls, 1 failed, 1 slow.
    assert!(call(&mut m, now, false, MS).is_none());
    now += MS;
    assert!(call(&mut m, now, true, 80 * MS).is_none());
    now += MS;
    assert!(
        call(&mut m, now, true, 50 * MS).is_none(),
        "50ms is not slower than 50ms"
    );
    let w = m.snapshot(now).window;
    assert_eq!((w.calls, w.failures, w.slow), (3, 1, 1));
    assert_eq!(w.failure_rate(), 1.0 / 3.0);
    assert_eq!(w.slow_call_rate(), 1.0 / 3.0);

    // Two more: the window holds 4, so the first call (the failure) rolls out.
    assert!(call(&mut m, now, true, MS).is_none());
    assert!(call(&mut m, now, true, 70 * MS).is_none());
    let w = m.snapshot(now).window;
    assert_eq!((w.calls, w.failures, w.slow), (4, 0, 2));
    assert_eq!(w.failure_rate(), 0.0);
    assert_eq!(w.slow_call_rate(), 0.5);
}

#[test]
fn a_trip_clears_the_window_and_the_rate_that_tripped_it_was_the_one_exported() {
    let mut now = Instant::now();
    let mut m = Machine::new(settings(), now, 1);
    for ok in [true, false, false] {
        assert!(call(&mut m, now, ok, MS).is_none());
        now += MS;
    }
    assert_eq!(
        m.snapshot(now).window.failure_rate(),
        2.0 / 3.0,
        "under minimum_calls: no trip yet"
    );
    let t = call(&mut m, now, false, MS).expect("3 of 4 failed: 75% >= 60%");
    assert_eq!(t.reason, Reason::FailureRate(75.0));
    assert_eq!(
        m.snapshot(now).window,
        WindowFigures::default(),
        "a transition starts a new window"
    );
}

#[test]
fn without_slow_call_duration_no_call_is_slow_and_without_rate_thresholds_no_window_is_kept() {
    let now = Instant::now();
    let mut m = Machine::new(
        Settings {
            slow_call_duration: None,
            slow_call_rate_threshold: None,
            ..settings()
        },
        now,
        1,
    );
    assert!(call(&mut m, now, true, Duration::from_secs(5)).is_none());
    let w = m.snapshot(now).window;
    assert_eq!((w.calls, w.slow), (1, 0));

    let mut quiet = Machine::new(
        Settings {
            failure_rate_threshold: None,
            slow_call_rate_threshold: None,
            ..settings()
        },
        now,
        1,
    );
    assert!(call(&mut quiet, now, false, Duration::from_secs(5)).is_none());
    assert_eq!(quiet.snapshot(now).window, WindowFigures::default());
    assert_eq!(quiet.snapshot(now).consecutive_failures, 1, "the failure still counts");
}

#[test]
fn the_snapshot_names_the_mode_and_the_override_and_a_transition_its_mode() {
    let now = Instant::now();
    let mut m = Machine::new(
        Settings {
            mode: Mode::Observe,
            failure_threshold: 1,
            ..settings()
        },
        now,
        1,
    );
    let s = m.snapshot(now);
    assert_eq!((s.mode, s.forced), (Mode::Observe, None));
    let t = call(&mut m, now, false, MS).expect("one failure trips");
    assert_eq!((t.to, t.mode), (State::Open, Mode::Observe));
    let t = m.apply(now, Override::ForceClosed).expect("open -> closed");
    assert_eq!(
        (t.reason, t.mode),
        (Reason::Manual(Override::ForceClosed), Mode::Observe)
    );
    assert_eq!(m.snapshot(now).forced, Some(State::Closed));
    m.reconfigure(settings(), now);
    assert_eq!(m.snapshot(now).mode, Mode::Enforce, "a reload changes the mode at once");
}
