//! Delivery schedules under paused time, and the pure parts (backoff, Retry-After, damping) as timelines.

use super::*;
use crate::breaker::State;
use crate::config::Config;
use crate::notify::testing::{event, Reply, Scripted};

fn sink() -> Sink {
    let c = Config::from_yaml(
        "notify:\n  sinks:\n    - {type: webhook, url: 'http://sink.test/hook/T0KEN123'}\n",
        "t",
    )
    .unwrap();
    Sink::from_config(&c.notify.sinks[0]).unwrap()
}

fn policy(max_attempts: u32) -> Policy {
    Policy {
        timeout: Duration::from_secs(5),
        max_attempts,
        base: BACKOFF_BASE,
        cap: BACKOFF_CAP,
    }
}

/// Delivers one body; returns the result, when each attempt started, and how many durations were observed.
async fn run(
    script: Vec<Reply>,
    fallback: Reply,
    max_attempts: u32,
) -> (Result<Delivered, DeliveryError>, Vec<Duration>) {
    let transport = Scripted::new(script, fallback);
    let start = Instant::now();
    let observed = std::sync::atomic::AtomicU32::new(0);
    let observe = |_: Duration| {
        observed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let out = Outgoing {
        id: "msg_1".to_owned(),
        body: bytes::Bytes::from_static(b"{}"),
    };
    let result = deliver(
        &*transport,
        &sink(),
        &out,
        &policy(max_attempts),
        &mut Jitter::new(42),
        &observe,
    )
    .await;
    let times = transport.times(start);
    assert_eq!(observed.into_inner() as usize, times.len(), "one duration per attempt");
    (result, times)
}

#[tokio::test(start_paused = true)]
async fn a_retry_carries_the_same_id_and_body_with_its_own_signature() {
    let c = Config::from_yaml(
        "notify:\n  sinks:\n    - {type: webhook, url: 'http://sink.test/h', secret: whsec_aGVsbG8=}\n",
        "t",
    )
    .unwrap();
    let sink = Sink::from_config(&c.notify.sinks[0]).unwrap();
    let transport = Scripted::new([Reply::Status(500)], Reply::Status(200));
    let out = sink
        .bodies(
            &crate::notify::testing::notice(State::Closed, State::Open, None),
            &crate::notify::testing::ctx(),
        )
        .remove(0);
    let result = deliver(&*transport, &sink, &out, &policy(3), &mut Jitter::new(1), &|_| {}).await;
    assert_eq!(result, Ok(Delivered { attempts: 2 }));
    let requests = transport.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("webhook-id").as_deref(), Some(out.id.as_str()));
        assert_eq!(r.body, out.body);
        let t: u64 = get("webhook-timestamp").unwrap().parse().unwrap();
        let want = super::super::webhook::signature(b"hello", &out.id, t, &out.body);
        assert_eq!(get("webhook-signature"), Some(want));
    }
}

fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn a_500_is_retried_after_a_jittered_backoff_then_delivered() {
    let (result, times) = run(vec![Reply::Status(500), Reply::Status(200)], Reply::Status(500), 5).await;
    assert_eq!(result, Ok(Delivered { attempts: 2 }));
    let gap = gaps(&times)[0];
    assert!(
        (Duration::from_millis(250)..=Duration::from_millis(500)).contains(&gap),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_at_least_its_retry_after() {
    let (result, times) = run(vec![Reply::RetryAfter(429, "7")], Reply::Status(202), 5).await;
    assert_eq!(result, Ok(Delivered { attempts: 2 }));
    let gap = gaps(&times)[0];
    assert!(
        gap >= Duration::from_secs(7) && gap < Duration::from_millis(7100),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_with_an_http_date_retry_after_is_honoured() {
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(12));
    let later: &'static str = Box::leak(later.into_boxed_str());
    let (result, times) = run(vec![Reply::RetryAfter(503, later)], Reply::Status(200), 5).await;
    assert_eq!(result, Ok(Delivered { attempts: 2 }));
    // HTTP dates have whole seconds.
    let gap = gaps(&times)[0];
    assert!(
        gap >= Duration::from_secs(11) && gap <= Duration::from_secs(12),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_400_is_not_retried_and_the_answer_is_kept_without_secrets() {
    let (result, times) = run(
        vec![Reply::Body(400, "invalid_payload for /hook/T0KEN123")],
        Reply::Status(200),
        5,
    )
    .await;
    assert_eq!(
        result,
        Err(DeliveryError::Refused {
            status: 400,
            answer: "invalid_payload for ***".to_owned()
        })
    );
    assert_eq!(times.len(), 1);
    let (result, times) = run(vec![Reply::Status(404)], Reply::Status(200), 5).await;
    assert!(matches!(result, Err(DeliveryError::Refused { status: 404, .. })));
    assert_eq!(times.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_until_the_attempts_run_out() {
    let (result, times) = run(vec![Reply::Status(502)], Reply::Refused, 5).await;
    let Err(DeliveryError::Exhausted { attempts: 5, last }) = result else {
        panic!("{result:?}")
    };
    assert!(last.contains("Connection refused"), "{last}");
    //  attempt:   1      2       3       4       5
    //  wait:        0.25-0.5  0.5-1   1-2     2-4  (seconds: half the step fixed, half jittered)
    let gaps = gaps(&times);
    for (gap, step_ms) in gaps.iter().zip([500u64, 1000, 2000, 4000]) {
        let (lo, hi) = (Duration::from_millis(step_ms / 2), Duration::from_millis(step_ms));
        assert!(
            *gap >= lo && *gap <= hi,
            "gap {gap:?} outside {lo:?}..={hi:?} in {gaps:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_never_answers_costs_one_timeout_per_attempt() {
    let (result, times) = run(vec![], Reply::Hang, 2).await;
    assert_eq!(
        result,
        Err(DeliveryError::Exhausted {
            attempts: 2,
            last: "no answer within 5s".to_owned()
        })
    );
    assert!(gaps(&times)[0] >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_limit_gives_up_instead_of_blocking_the_sink() {
    let (result, times) = run(vec![Reply::RetryAfter(429, "3600")], Reply::Status(200), 5).await;
    assert_eq!(
        result,
        Err(DeliveryError::RetryTooLate {
            status: 429,
            after: Duration::from_secs(3600)
        })
    );
    assert_eq!(times.len(), 1);
}

#[test]
fn backoff_doubles_up_to_the_cap_with_half_of_each_step_jittered() {
    let p = policy(10);
    assert_eq!(backoff(&p, 1, 0.0), Duration::from_millis(250));
    assert!(backoff(&p, 1, 0.999_999) < Duration::from_millis(500));
    assert_eq!(backoff(&p, 3, 0.5), Duration::from_millis(1500));
    assert_eq!(backoff(&p, 10, 1.0), BACKOFF_CAP);
    assert_eq!(backoff(&p, 60, 0.0), BACKOFF_CAP / 2);
    let mut j = Jitter::new(7);
    assert!((0..1000).map(|_| j.unit()).all(|u| (0.0..1.0).contains(&u)));
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after(" 30 ", now), Some(Duration::from_secs(30)));
    assert_eq!(
        parse_retry_after("Tue, 14 Nov 2023 22:14:00 GMT", now),
        Some(Duration::from_secs(40))
    );
    assert_eq!(
        parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-5", now), None);
}

#[test]
fn damping_sends_the_first_change_then_one_summary_per_interval() {
    // min_interval 30s.
    //  t (s):     0    1    2    3   ...  30        31  ...  60        95
    //  change:    O    H    O    H                  C                 O
    //  sent:      O                       (H, 3)             (C, 1)    O
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut d = Damper::new(Duration::from_secs(30));
    let sent = |n: Option<Notice>| n.map(|n| (n.event.to, n.changes));

    assert_eq!(
        sent(d.offer(event(State::Closed, State::Open, None), at(0))),
        Some((State::Open, 1))
    );
    assert_eq!(d.due(), None);
    assert_eq!(sent(d.offer(event(State::Open, State::HalfOpen, None), at(1))), None);
    assert_eq!(sent(d.offer(event(State::HalfOpen, State::Open, None), at(2))), None);
    assert_eq!(sent(d.offer(event(State::Open, State::HalfOpen, None), at(3))), None);
    assert_eq!(d.due(), Some(at(30)));
    assert_eq!(sent(d.flush(at(29))), None);
    assert_eq!(sent(d.flush(at(30))), Some((State::HalfOpen, 3)));
    assert_eq!(d.due(), None);

    assert_eq!(sent(d.offer(event(State::HalfOpen, State::Closed, None), at(31))), None);
    assert_eq!(d.due(), Some(at(60)));
    assert_eq!(sent(d.flush(at(60))), Some((State::Closed, 1)));
    assert_eq!(
        sent(d.offer(event(State::Closed, State::Open, None), at(95))),
        Some((State::Open, 1))
    );
}

#[test]
fn damping_catches_up_when_a_change_arrives_after_the_summary_was_due() {
    let t0 = Instant::now();
    let mut d = Damper::new(Duration::from_secs(10));
    assert!(d.offer(event(State::Closed, State::Open, None), t0).is_some());
    assert!(d
        .offer(event(State::Open, State::HalfOpen, None), t0 + Duration::from_secs(1))
        .is_none());
    // The worker was busy until t=12; the next change folds into the overdue summary.
    let n = d.offer(
        event(State::HalfOpen, State::Closed, None),
        t0 + Duration::from_secs(12),
    );
    assert_eq!(n.map(|n| (n.event.to, n.changes)), Some((State::Closed, 2)));
    assert_eq!(d.drain(), None);
}

#[test]
fn zero_interval_sends_everything_and_drain_releases_what_is_held() {
    let t0 = Instant::now();
    let mut off = Damper::new(Duration::ZERO);
    for _ in 0..5 {
        assert!(off.offer(event(State::Closed, State::Open, None), t0).is_some());
    }
    let mut d = Damper::new(Duration::from_secs(30));
    d.offer(event(State::Closed, State::Open, None), t0);
    d.offer(event(State::Open, State::HalfOpen, None), t0);
    assert_eq!(d.drain().map(|n| n.changes), Some(1));
}
