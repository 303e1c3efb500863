//! Timelines for the state machine. Each test drives the machine with a hand-moved clock; where it helps, the
//! calls and the states they leave behind are drawn as two aligned lines above the assertions:
//! `S` success, `F` failure, `x` rejected, `p` probe admitted; states `C` closed, `O` open, `H` half-open.

use super::*;

const MS: Duration = Duration::from_millis(1);

struct Timeline {
    m: Machine,
    now: Instant,
    transitions: Vec<Transition>,
}

impl Timeline {
    fn new(settings: Settings) -> Self {
        let now = Instant::now();
        Timeline {
            m: Machine::new(settings, now, 42),
            now,
            transitions: Vec::new(),
        }
    }

    /// No jitter, so open periods are exact.
    fn exact() -> Self {
        Self::new(Settings {
            recovery_jitter: 0.0,
            ..Settings::default()
        })
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn admit(&mut self) -> Admission {
        let (admission, t) = self.m.admit(self.now);
        self.transitions.extend(t);
        admission
    }

    /// Admits one call and, if allowed, records `ok`. Returns what the admission was.
    fn call(&mut self, ok: bool) -> Admission {
        let admission = self.admit();
        if let Admission::Allowed(kind) = admission {
            let outcome = if ok {
                Outcome::Success { elapsed: MS }
            } else {
                Outcome::Failure { elapsed: MS }
            };
            self.transitions.extend(self.m.record(self.now, kind, outcome));
        }
        admission
    }

    /// Plays a line like "SSFFF" and returns the states after each call, as a line like "CCCCO".
    fn play(&mut self, calls: &str) -> String {
        calls
            .chars()
            .map(|c| {
                match c {
                    'S' => self.call(true),
                    'F' => self.call(false),
                    _ => panic!("unknown call {c}"),
                };
                match self.m.state() {
                    State::Closed => 'C',
                    State::Open => 'O',
                    State::HalfOpen => 'H',
                }
            })
            .collect()
    }

    fn path(&self) -> Vec<(State, State)> {
        self.transitions.iter().map(|t| (t.from, t.to)).collect()
    }

    fn until_half_open(&self) -> Duration {
        self.m.snapshot(self.now).until_half_open.expect("open and not forced")
    }
}

fn rejected(a: Admission) -> bool {
    matches!(a, Admission::Rejected { .. })
}

#[test]
fn trips_on_the_fifth_consecutive_failure_and_a_success_resets_the_count() {
    let mut t = Timeline::exact();
    // calls:  F F F F S F F F F F
    // state:  C C C C C C C C C O
    assert_eq!(t.play("FFFFSFFFFF"), "CCCCCCCCCO");
    assert_eq!(t.path(), vec![(State::Closed, State::Open)]);
    assert_eq!(t.transitions[0].reason, Reason::ConsecutiveFailures(5));
    assert_eq!(t.transitions[0].consecutive_failures, 5);
    assert_eq!(t.m.snapshot(t.now).consecutive_failures, 5);
}

#[test]
fn open_rejects_until_the_recovery_timeout_then_admits_one_probe() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    t.advance(Duration::from_secs(59));
    assert_eq!(
        t.admit(),
        Admission::Rejected {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    t.advance(Duration::from_secs(1) - MS);
    assert!(rejected(t.admit()));
    t.advance(MS);
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    assert_eq!(t.m.state(), State::HalfOpen);
    // half_open_max_calls = 1: a second caller is turned away while the probe is out.
    assert!(rejected(t.admit()));
    assert_eq!(
        t.path(),
        vec![(State::Closed, State::Open), (State::Open, State::HalfOpen)]
    );
    assert_eq!(t.transitions[1].previous_lasted, Duration::from_secs(60));
}

#[test]
fn a_successful_probe_closes_and_clears_the_failure_count() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    t.advance(Duration::from_secs(60));
    // calls:  S(probe)
    // state:  C
    assert_eq!(t.play("S"), "C");
    assert_eq!(
        t.path(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    assert_eq!(t.transitions[2].reason, Reason::ProbesSucceeded(1));
    assert_eq!(t.m.snapshot(t.now).consecutive_failures, 0);
    // Closed again and with a fresh count: four failures do not trip.
    assert_eq!(t.play("FFFF"), "CCCC");
}

#[test]
fn success_threshold_needs_that_many_probe_successes() {
    let mut t = Timeline::new(Settings {
        recovery_jitter: 0.0,
        success_threshold: 3,
        ..Settings::default()
    });
    t.play("FFFFF");
    t.advance(Duration::from_secs(60));
    // calls:  S S S
    // state:  H H C
    assert_eq!(t.play("SSS"), "HHC");
}

#[test]
fn failed_probes_grow_the_open_period_up_to_the_max_and_a_close_resets_it() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    let mut periods = Vec::new();
    for _ in 0..4 {
        let wait = t.until_half_open();
        periods.push(wait.as_secs());
        t.advance(wait);
        assert_eq!(t.play("F"), "O", "the probe fails and reopens");
    }
    periods.push(t.until_half_open().as_secs());
    assert_eq!(periods, vec![60, 120, 240, 300, 300]);
    assert_eq!(t.transitions.last().unwrap().reason, Reason::ProbeFailed);

    t.advance(t.until_half_open());
    assert_eq!(t.play("S"), "C");
    t.play("FFFFF");
    assert_eq!(t.until_half_open(), Duration::from_secs(60));
}

#[test]
fn jitter_stays_within_its_fraction_and_spreads_breakers_out() {
    let settings = Settings {
        recovery_jitter: 0.1,
        ..Settings::default()
    };
    let now = Instant::now();
    let mut periods = Vec::new();
    for seed in 0..200u64 {
        let mut m = Machine::new(settings.clone(), now, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for _ in 0..5 {
            let (a, _) = m.admit(now);
            m.record(
                now,
                match a {
                    Admission::Allowed(k) => k,
                    _ => unreachable!(),
                },
                Outcome::Failure { elapsed: MS },
            );
        }
        periods.push(m.snapshot(now).until_half_open.unwrap());
    }
    let min = *periods.iter().min().unwrap();
    let max = *periods.iter().max().unwrap();
    assert!(
        min >= Duration::from_secs(60),
        "never shorter than recovery_timeout: {min:?}"
    );
    assert!(
        max < Duration::from_secs(66),
        "never longer than recovery_timeout * 1.1: {max:?}"
    );
    assert!(
        max - min > Duration::from_secs(5),
        "spread over most of the window: {min:?}..{max:?}"
    );
}

#[test]
fn half_open_admits_at_most_max_calls_and_an_abandoned_probe_frees_its_slot() {
    let mut t = Timeline::new(Settings {
        recovery_jitter: 0.0,
        half_open_max_calls: 2,
        success_threshold: 2,
        ..Settings::default()
    });
    t.play("FFFFF");
    t.advance(Duration::from_secs(60));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    assert!(rejected(t.admit()), "a third concurrent probe is refused");
    t.m.abandon(CallKind::Probe);
    assert_eq!(
        t.admit(),
        Admission::Allowed(CallKind::Probe),
        "the abandoned slot is free again"
    );
    assert!(rejected(t.admit()));
    assert_eq!(t.m.state(), State::HalfOpen);
}

#[test]
fn a_probe_that_never_reports_reopens_after_the_probe_timeout() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    t.advance(Duration::from_secs(60));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    t.advance(Duration::from_millis(250));
    assert!(rejected(t.admit()), "at exactly the timeout the probe may still answer");
    assert_eq!(t.m.state(), State::HalfOpen);
    t.advance(MS);
    assert!(rejected(t.admit()));
    assert_eq!(t.m.state(), State::Open);
    assert_eq!(t.transitions.last().unwrap().reason, Reason::ProbeTimedOut);
    assert_eq!(
        t.until_half_open(),
        Duration::from_secs(120),
        "a timed-out probe counts as a failed one"
    );
}

#[test]
fn failure_rate_trips_once_minimum_calls_are_in_the_window() {
    let mut t = Timeline::new(Settings {
        failure_threshold: 100,
        failure_rate_threshold: Some(50.0),
        window_size: 10,
        minimum_calls: 6,
        ..Settings::default()
    });
    // calls:  F S F S F S F S
    // state:  C C C C C O           (50% of 6 calls = threshold, reached on the 6th)
    assert_eq!(t.play("FSFSF"), "CCCCC");
    assert_eq!(t.play("S"), "O");
    match t.transitions[0].reason {
        Reason::FailureRate(p) => assert!((p - 50.0).abs() < 1e-9),
        other => panic!("unexpected reason {other:?}"),
    }
}

#[test]
fn the_window_forgets_calls_older_than_its_size() {
    let mut t = Timeline::new(Settings {
        failure_threshold: 100,
        failure_rate_threshold: Some(50.0),
        window_size: 4,
        minimum_calls: 4,
        ..Settings::default()
    });
    // calls:  F S S S F S S S F S F   no four consecutive calls hold two failures until the last one
    // state:  C C C C C C C C C C O
    assert_eq!(t.play("FSSSFSSS"), "CCCCCCCC");
    assert_eq!(t.play("FSF"), "CCO");
}

#[test]
fn slow_calls_trip_on_their_rate_even_when_all_succeed() {
    let mut t = Timeline::new(Settings {
        slow_call_duration: Some(Duration::from_millis(100)),
        slow_call_rate_threshold: Some(60.0),
        window_size: 5,
        minimum_calls: 5,
        ..Settings::default()
    });
    let record = |t: &mut Timeline, ms: u64| {
        let (a, _) = t.m.admit(t.now);
        let Admission::Allowed(kind) = a else {
            panic!("rejected")
        };
        t.transitions.extend(t.m.record(
            t.now,
            kind,
            Outcome::Success {
                elapsed: Duration::from_millis(ms),
            },
        ));
    };
    for ms in [150, 10, 150, 100, 10] {
        record(&mut t, ms); // 100ms is not slower than 100ms: 2 slow of 5
    }
    assert_eq!(t.m.state(), State::Closed);
    record(&mut t, 101); // window now 10,150,100,10,101 -> 2 slow; then:
    record(&mut t, 200); // 150,100,10,101,200 -> 3 slow of 5 = 60%
    assert_eq!(t.m.state(), State::Open);
    assert!(matches!(t.transitions[0].reason, Reason::SlowCallRate(p) if (p - 60.0).abs() < 1e-9));
}

#[test]
fn forced_open_holds_past_the_recovery_timeout_until_reset() {
    let mut t = Timeline::exact();
    assert_eq!(t.m.apply(t.now, Override::ForceOpen).map(|x| x.to), Some(State::Open));
    t.advance(Duration::from_secs(3600));
    // It will not half-open by itself, so the rejection names no time to come back.
    assert_eq!(t.admit(), Admission::Rejected { retry_after: None });
    assert_eq!(t.m.snapshot(t.now).forced, Some(State::Open));
    assert_eq!(t.m.snapshot(t.now).until_half_open, None);
    let back = t.m.apply(t.now, Override::Reset).unwrap();
    assert_eq!(
        (back.from, back.to, back.reason),
        (State::Open, State::Closed, Reason::Manual(Override::Reset))
    );
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Normal));
}

#[test]
fn forced_closed_never_trips_and_reset_clears_the_count() {
    let mut t = Timeline::exact();
    assert_eq!(
        t.m.apply(t.now, Override::ForceClosed),
        None,
        "already closed: no transition"
    );
    assert_eq!(t.play("FFFFFFFFFF"), "CCCCCCCCCC");
    assert_eq!(t.m.snapshot(t.now).consecutive_failures, 10);
    assert_eq!(t.m.apply(t.now, Override::Reset), None);
    assert_eq!(t.m.snapshot(t.now).consecutive_failures, 0);
    assert_eq!(t.play("FFFFF"), "CCCCO", "reset lifts the override");
}

#[test]
fn results_of_calls_admitted_before_a_forced_change_are_ignored() {
    let mut t = Timeline::exact();
    let (a, _) = t.m.admit(t.now);
    t.m.apply(t.now, Override::ForceOpen);
    let Admission::Allowed(kind) = a else { panic!() };
    assert_eq!(t.m.record(t.now, kind, Outcome::Success { elapsed: MS }), None);
    assert_eq!(t.m.state(), State::Open);
}

#[test]
fn observe_mode_computes_states_but_never_rejects() {
    let mut t = Timeline::new(Settings {
        mode: Mode::Observe,
        recovery_jitter: 0.0,
        ..Settings::default()
    });
    assert_eq!(t.play("FFFFF"), "CCCCO");
    // Calls while open still go through, as shadows whose results do not move the machine.
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Shadow));
    assert_eq!(t.play("SSSS"), "OOOO");
    t.advance(Duration::from_secs(60));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    assert_eq!(
        t.admit(),
        Admission::Allowed(CallKind::Shadow),
        "over the probe limit: shadow, not rejected"
    );
    assert_eq!(
        t.path(),
        vec![(State::Closed, State::Open), (State::Open, State::HalfOpen)]
    );
}

#[test]
fn a_quiet_machine_is_left_unchanged_by_an_admission_and_a_success() {
    let mut t = Timeline::exact();
    assert!(t.m.is_quiet());
    let before = format!("{:?}", t.m);
    t.advance(MS);
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Normal));
    t.advance(MS);
    assert_eq!(
        t.m.record(t.now, CallKind::Normal, Outcome::Success { elapsed: MS }),
        None
    );
    assert_eq!(
        format!("{:?}", t.m),
        before,
        "nothing the fast path skips may change the machine"
    );

    // A failure being counted, a state other than closed, or a rate window: not quiet.
    t.m.record(t.now, CallKind::Normal, Outcome::Failure { elapsed: MS });
    assert!(!t.m.is_quiet());
    t.m.record(t.now, CallKind::Normal, Outcome::Success { elapsed: MS });
    assert!(t.m.is_quiet());
    t.m.apply(t.now, Override::ForceOpen);
    assert!(!t.m.is_quiet());
    let rates = Timeline::new(Settings {
        failure_rate_threshold: Some(50.0),
        ..Settings::default()
    });
    assert!(!rates.m.is_quiet());
}

// Reconfiguration: new settings, same state.

/// `t`'s settings with `change` applied, as a reload would hand them over.
fn with(t: &Timeline, change: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = t.m.settings().clone();
    change(&mut settings);
    settings
}

fn reconfigure(t: &mut Timeline, change: impl FnOnce(&mut Settings)) {
    let settings = with(t, change);
    t.m.reconfigure(settings, t.now);
}

/// The window's results, oldest first.
fn contents(w: &Window) -> Vec<u8> {
    let cap = w.slots.len();
    (0..w.len).map(|k| w.slots[(w.next + cap - w.len + k) % cap]).collect()
}

fn rates(window_size: usize, minimum_calls: usize) -> Settings {
    Settings {
        failure_threshold: 100,
        failure_rate_threshold: Some(50.0),
        window_size,
        minimum_calls,
        recovery_jitter: 0.0,
        ..Settings::default()
    }
}

#[test]
fn an_open_circuit_keeps_its_deadline_through_a_reconfigure_and_the_next_period_is_the_new_one() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    t.advance(Duration::from_secs(20));
    let before = t.m.snapshot(t.now);
    reconfigure(&mut t, |s| s.recovery_timeout = Duration::from_secs(10));
    assert_eq!(t.m.snapshot(t.now), before, "state, count and deadline unchanged");
    assert_eq!(t.until_half_open(), Duration::from_secs(40));
    t.advance(Duration::from_secs(40) - MS);
    assert!(rejected(t.admit()));
    t.advance(MS);
    // calls:  F(probe)   the probe fails: one failed probe under the new settings, 10s * 2
    // state:  O
    assert_eq!(t.play("F"), "O");
    assert_eq!(t.until_half_open(), Duration::from_secs(20));
    t.advance(Duration::from_secs(20));
    assert_eq!(t.play("S"), "C");
    t.play("FFFFF");
    assert_eq!(
        t.until_half_open(),
        Duration::from_secs(10),
        "a fresh trip: the new recovery_timeout"
    );
    assert_eq!(
        t.path(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
            (State::Closed, State::Open),
        ],
        "no transition of the reconfigure's own"
    );
}

#[test]
fn a_reconfigure_keeps_the_backoff_count_and_recomputes_its_period() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    for wait in [60, 120] {
        t.advance(Duration::from_secs(wait));
        assert_eq!(t.play("F"), "O");
    }
    assert_eq!(t.until_half_open(), Duration::from_secs(240));
    reconfigure(&mut t, |s| {
        s.recovery_timeout = Duration::from_secs(10);
        s.recovery_timeout_max = Duration::from_secs(1000);
    });
    assert_eq!(t.until_half_open(), Duration::from_secs(240), "the deadline is kept");
    t.advance(Duration::from_secs(240));
    assert_eq!(t.play("F"), "O");
    // Three failed probes under the new settings: 10s * 2^3 (not 20s from a reset count, nor 480s from the old).
    assert_eq!(t.until_half_open(), Duration::from_secs(80));
    reconfigure(&mut t, |s| s.recovery_timeout_max = Duration::from_secs(50));
    assert_eq!(t.until_half_open(), Duration::from_secs(80));
    t.advance(Duration::from_secs(80));
    assert_eq!(t.play("F"), "O");
    assert_eq!(t.until_half_open(), Duration::from_secs(50), "clamped to the new max");
    reconfigure(&mut t, |s| {
        s.recovery_backoff = 1.0;
        s.recovery_timeout_max = Duration::from_secs(1000);
    });
    t.advance(Duration::from_secs(50));
    assert_eq!(t.play("F"), "O");
    assert_eq!(
        t.until_half_open(),
        Duration::from_secs(10),
        "no backoff: the timeout itself"
    );
}

#[test]
fn lowering_the_failure_threshold_trips_on_the_next_failure_not_at_the_reconfigure() {
    let mut t = Timeline::exact();
    assert_eq!(t.play("FFF"), "CCC");
    reconfigure(&mut t, |s| s.failure_threshold = 2);
    assert_eq!(t.m.state(), State::Closed);
    assert_eq!(t.m.snapshot(t.now).consecutive_failures, 3, "the count is kept");
    assert!(t.transitions.is_empty());
    assert_eq!(t.play("F"), "O");
    assert_eq!(t.transitions[0].reason, Reason::ConsecutiveFailures(4));

    // A success in between still resets the count first.
    let mut t = Timeline::exact();
    t.play("FFF");
    reconfigure(&mut t, |s| s.failure_threshold = 2);
    assert_eq!(t.play("SFF"), "CCO");
}

#[test]
fn raising_the_failure_threshold_lets_more_failures_through() {
    let mut t = Timeline::exact();
    assert_eq!(t.play("FFFF"), "CCCC");
    reconfigure(&mut t, |s| s.failure_threshold = 8);
    assert_eq!(t.play("FFFF"), "CCCO");
    assert_eq!(t.transitions[0].reason, Reason::ConsecutiveFailures(8));
}

#[test]
fn shrinking_the_window_forgets_old_failures() {
    let mut t = Timeline::new(rates(10, 10));
    // Five failures of nine calls, under minimum_calls: closed.
    assert_eq!(t.play("FFFFFSSSS"), "CCCCCCCCC");
    reconfigure(&mut t, |s| (s.window_size, s.minimum_calls) = (4, 4));
    assert_eq!(contents(&t.m.window), vec![0; 4], "the four newest: the successes");
    assert_eq!((t.m.window.failures, t.m.window.slots.len()), (0, 4));
    assert!(t.transitions.is_empty());
    // calls:  F  F      window S S S F (25%), then S S F F (50%)
    // state:  C  O
    assert_eq!(t.play("FF"), "CO");
    assert!(matches!(t.transitions[0].reason, Reason::FailureRate(p) if (p - 50.0).abs() < 1e-9));
}

#[test]
fn shrinking_the_window_keeps_recent_failures() {
    let mut t = Timeline::new(rates(10, 10));
    // Four failures of nine calls: under minimum_calls and under the rate.
    assert_eq!(t.play("SSSSSFFFF"), "CCCCCCCCC");
    reconfigure(&mut t, |s| (s.window_size, s.minimum_calls) = (4, 4));
    assert_eq!(contents(&t.m.window), vec![FAILED; 4]);
    assert_eq!(t.m.window.failures, 4);
    assert_eq!(
        t.m.state(),
        State::Closed,
        "the rate is judged on the next call, not here"
    );
    // calls:  S   window F F F S: 75%
    // state:  O
    assert_eq!(t.play("S"), "O");
    assert!(matches!(t.transitions[0].reason, Reason::FailureRate(p) if (p - 75.0).abs() < 1e-9));
}

#[test]
fn growing_the_window_keeps_every_result() {
    let mut t = Timeline::new(rates(4, 4));
    assert_eq!(t.play("SFSSS"), "CCCCC"); // the window holds F S S S: 25%
    reconfigure(&mut t, |s| (s.window_size, s.minimum_calls) = (10, 10));
    assert_eq!(contents(&t.m.window), vec![FAILED, 0, 0, 0]);
    assert_eq!((t.m.window.failures, t.m.window.slots.len()), (1, 10));
    // calls:  F F F F S S   with the four kept: five failures of ten calls on the last one (50%)
    // state:  C C C C C O
    assert_eq!(t.play("FFFFSS"), "CCCCCO");
}

#[test]
fn resizing_a_wrapped_window_keeps_its_newest_results_in_order() {
    const BOTH: u8 = FAILED | SLOW;
    let mut w = Window::new(5);
    for flags in [FAILED, 0, SLOW, BOTH, 0, FAILED, SLOW] {
        w.push(flags);
    }
    assert_eq!(contents(&w), vec![SLOW, BOTH, 0, FAILED, SLOW]);
    w.resize(5);
    assert_eq!(
        (contents(&w), w.next),
        (vec![SLOW, BOTH, 0, FAILED, SLOW], 2),
        "same size: untouched"
    );
    w.resize(3);
    assert_eq!(contents(&w), vec![0, FAILED, SLOW]);
    assert_eq!((w.len, w.next, w.failures, w.slow), (3, 0, 1, 1));
    w.push(BOTH); // full: the oldest (0) goes
    assert_eq!(contents(&w), vec![FAILED, SLOW, BOTH]);
    assert_eq!((w.failures, w.slow), (2, 2));
    w.resize(6);
    assert_eq!(contents(&w), vec![FAILED, SLOW, BOTH]);
    assert_eq!((w.len, w.next, w.failures, w.slow, w.slots.len()), (3, 3, 2, 2, 6));
    w.push(0);
    assert_eq!(contents(&w), vec![FAILED, SLOW, BOTH, 0]);
    w.resize(0); // room for one, as a new window of size 0
    assert_eq!(contents(&w), vec![0]);
    assert_eq!((w.len, w.failures, w.slow), (1, 0, 0));
}

#[test]
fn turning_the_rates_off_empties_the_window_so_it_is_not_stale_when_they_return() {
    let mut t = Timeline::new(rates(10, 4));
    assert_eq!(t.play("FFF"), "CCC");
    reconfigure(&mut t, |s| s.failure_rate_threshold = None);
    assert_eq!((t.m.window.len, t.m.window.failures), (0, 0));
    reconfigure(&mut t, |s| s.failure_rate_threshold = Some(50.0));
    // With the three failures kept, the first call would make four of four and trip.
    assert_eq!(t.play("SF"), "CC");
    assert_eq!(contents(&t.m.window), vec![0, FAILED]);
}

#[test]
fn switching_to_observe_lets_calls_through_while_open() {
    let mut t = Timeline::exact();
    t.play("FFFFF");
    assert!(rejected(t.admit()));
    reconfigure(&mut t, |s| s.mode = Mode::Observe);
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Shadow));
    assert_eq!(t.play("SSS"), "OOO", "shadows do not move the machine");
    t.advance(Duration::from_secs(60));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe), "at the old deadline");
    reconfigure(&mut t, |s| s.mode = Mode::Enforce);
    assert_eq!(
        t.admit(),
        Admission::Rejected {
            retry_after: Some(Duration::from_millis(250))
        },
        "enforcing again: the one probe is out"
    );
}

#[test]
fn half_open_probes_in_flight_stay_counted_through_a_reconfigure() {
    let mut t = Timeline::new(Settings {
        recovery_jitter: 0.0,
        half_open_max_calls: 3,
        success_threshold: 3,
        ..Settings::default()
    });
    t.play("FFFFF");
    t.advance(Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    }
    reconfigure(&mut t, |s| (s.half_open_max_calls, s.success_threshold) = (1, 2));
    assert_eq!(t.m.state(), State::HalfOpen);
    assert!(rejected(t.admit()), "three out, one allowed");
    let success = Outcome::Success { elapsed: MS };
    assert_eq!(t.m.record(t.now, CallKind::Probe, success), None);
    assert!(rejected(t.admit()), "two still out");
    let closed = t.m.record(t.now, CallKind::Probe, success).expect("closes");
    assert_eq!(closed.reason, Reason::ProbesSucceeded(2), "the new success_threshold");

    // Raised instead: more probes at once.
    let mut t = Timeline::exact();
    t.play("FFFFF");
    t.advance(Duration::from_secs(60));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    reconfigure(&mut t, |s| s.half_open_max_calls = 3);
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    assert_eq!(t.admit(), Admission::Allowed(CallKind::Probe));
    assert!(rejected(t.admit()), "the first probe is still counted");
}

#[test]
fn forced_states_stay_forced_through_a_reconfigure() {
    let mut t = Timeline::exact();
    t.m.apply(t.now, Override::ForceOpen);
    reconfigure(&mut t, |s| s.recovery_timeout = Duration::from_secs(1));
    t.advance(Duration::from_secs(3600));
    assert_eq!(t.admit(), Admission::Rejected { retry_after: None });
    assert_eq!(t.m.snapshot(t.now).forced, Some(State::Open));

    let mut t = Timeline::exact();
    t.m.apply(t.now, Override::ForceClosed);
    reconfigure(&mut t, |s| s.failure_threshold = 1);
    assert_eq!(t.play("FFF"), "CCC");
    assert_eq!(t.m.snapshot(t.now).forced, Some(State::Closed));
}
