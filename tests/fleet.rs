//! A fleet of sidecars sees the same Redis outage at once. With the default recovery jitter, their first
//! half-open probes must spread over the jitter window instead of arriving at Redis together.
//!
//! Deterministic simulation: 1,000 breakers with default settings, each with its own jitter seed, trip within
//! the same second; a simulated clock then moves in 10 ms steps and every breaker that is still open is asked
//! for admission, as an application call would. The figure printed here (peak probes per 100 ms) is the one
//! quoted in docs/configuration.md next to `breaker.recovery_jitter` and in docs/operations.md.

use std::time::{Duration, Instant};

use redguard::breaker::state::{Admission, CallKind, Machine, Outcome, Settings};

const FLEET: usize = 1000;
const STEP: Duration = Duration::from_millis(10);

/// SplitMix64: distinct, well-mixed seeds for each simulated sidecar.
fn seed(i: u64) -> u64 {
    let mut z = i
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Trips `FLEET` breakers within one second, then returns when each admitted its first probe, in ms after t0.
fn first_probes(settings: &Settings) -> Vec<u64> {
    let t0 = Instant::now();
    let mut fleet: Vec<Machine> = (0..FLEET)
        .map(|i| {
            let opened_at = t0 + Duration::from_micros(i as u64 * 1_000_000 / FLEET as u64);
            let mut m = Machine::new(settings.clone(), opened_at, seed(i as u64));
            for _ in 0..settings.failure_threshold {
                let (Admission::Allowed(kind), _) = m.admit(opened_at) else {
                    panic!("closed breakers admit")
                };
                m.record(
                    opened_at,
                    kind,
                    Outcome::Failure {
                        elapsed: Duration::from_millis(1),
                    },
                );
            }
            m
        })
        .collect();
    let mut probed: Vec<Option<u64>> = vec![None; FLEET];
    let horizon = settings.recovery_timeout.mul_f64(1.0 + settings.recovery_jitter) + Duration::from_secs(2);
    let mut now = t0;
    while now - t0 <= horizon && probed.iter().any(Option::is_none) {
        for (m, at) in fleet.iter_mut().zip(probed.iter_mut()).filter(|(_, at)| at.is_none()) {
            if let (Admission::Allowed(CallKind::Probe), _) = m.admit(now) {
                *at = Some((now - t0).as_millis() as u64);
            }
        }
        now += STEP;
    }
    probed
        .into_iter()
        .map(|at| at.expect("every breaker probes within the horizon"))
        .collect()
}

fn peak_per_100ms(probes: &[u64]) -> usize {
    let mut buckets = std::collections::HashMap::<u64, usize>::new();
    for at in probes {
        *buckets.entry(at / 100).or_default() += 1;
    }
    buckets.into_values().max().unwrap()
}

#[test]
fn default_jitter_spreads_the_first_probes_of_a_fleet() {
    let jittered = first_probes(&Settings::default());
    let lockstep = first_probes(&Settings {
        recovery_jitter: 0.0,
        ..Settings::default()
    });

    let (first, last) = (*jittered.iter().min().unwrap(), *jittered.iter().max().unwrap());
    let (peak, peak_lockstep) = (peak_per_100ms(&jittered), peak_per_100ms(&lockstep));
    println!(
        "1000 breakers tripped within 1 s: first probes from {first} ms to {last} ms after the first trip; \
         peak {peak} probes per 100 ms with recovery_jitter 0.1, {peak_lockstep} without jitter"
    );
    // Without jitter, the probes repeat the trips: all within one second of the 60 s timeout.
    assert!(lockstep.iter().all(|&at| (60_000..61_010).contains(&at)));
    assert!(peak_lockstep >= 90, "lockstep peak {peak_lockstep}");
    // With it, they spread over the 6 s jitter window (plus the second of trips) ...
    assert!(
        first >= 60_000 && (66_000..=67_010).contains(&last),
        "probes from {first} to {last} ms"
    );
    // ... so the busiest 100 ms sees a few times fewer probes than in lockstep.
    assert!(
        peak * 3 <= peak_lockstep,
        "jittered peak {peak} vs lockstep {peak_lockstep}"
    );
}
