//! The notifier as the breaker sees it: transitions in, per-sink workers out, under paused time with scripted
//! sinks.

use super::*;
use crate::breaker::{Reason, State};
use crate::notify::testing::{Reply, Scripted};

fn config(notify: &str) -> Config {
    Config::from_yaml(&format!("notify:\n{notify}"), "t").unwrap()
}

const ONE_WEBHOOK: &str = "  sinks:\n    - {type: webhook, url: 'http://sink.test/a'}\n";

fn transition(from: State, to: State) -> Transition {
    Transition {
        from,
        to,
        reason: Reason::ConsecutiveFailures(2),
        at: std::time::Instant::now(),
        previous_lasted: Duration::from_secs(1),
        consecutive_failures: 2,
        mode: crate::breaker::Mode::Enforce,
    }
}

fn start(notify: &str, transport: Arc<Scripted>) -> (Notifier, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new("standalone"));
    let n = Notifier::new(&config(notify), &metrics).unwrap();
    n.start(transport);
    (n, metrics)
}

/// The (to, changes) of each body the sink received.
fn received(t: &Scripted) -> Vec<(String, u64)> {
    t.bodies()
        .iter()
        .map(|b| (b["to"].as_str().unwrap().to_owned(), b["changes"].as_u64().unwrap()))
        .collect()
}

fn pair(to: &str, changes: u64) -> (String, u64) {
    (to.to_owned(), changes)
}

#[tokio::test(start_paused = true)]
async fn flapping_yields_one_notice_per_interval_then_a_summary() {
    let sink = Scripted::new([], Reply::Status(200));
    let (n, metrics) = start(&format!("  min_interval: 30s\n{ONE_WEBHOOK}"), sink.clone());
    let t0 = Instant::now();
    //  t (s):   0    1    2    3    4              30
    //  change:  O    H    O    H    O
    //  sent:    O                                  (O, 4)
    let flips = [
        (State::Closed, State::Open),
        (State::Open, State::HalfOpen),
        (State::HalfOpen, State::Open),
        (State::Open, State::HalfOpen),
        (State::HalfOpen, State::Open),
    ];
    for (from, to) in flips {
        n.on_transition(&transition(from, to), Some("refused"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(received(&sink), [pair("open", 1)]);
    tokio::time::sleep_until(t0 + Duration::from_secs(31)).await;
    assert_eq!(received(&sink), [pair("open", 1), pair("open", 4)]);
    assert_eq!(sink.times(t0), [Duration::ZERO, Duration::from_secs(30)]);
    assert_eq!(metrics.sink("webhook").delivered.get(), 2);
    assert_eq!(metrics.notification_queue_depth.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn only_the_configured_transitions_notify_and_pagerduty_skips_half_open() {
    let slack = Scripted::new([], Reply::Status(200));
    let yaml = "  min_interval: 0s\n  on: [to_open, to_half_open]\n  sinks:\n    - {type: webhook, url: 'http://sink.test/a'}\n";
    let (n, _) = start(yaml, slack.clone());
    for (from, to) in [
        (State::Closed, State::Open),
        (State::Open, State::HalfOpen),
        (State::HalfOpen, State::Closed),
    ] {
        n.on_transition(&transition(from, to), None);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&slack), [pair("open", 1), pair("half_open", 1)]);

    let pd = Scripted::new([], Reply::Status(202));
    let (n, _) = start(
        "  min_interval: 0s\n  sinks:\n    - {type: pagerduty, routing_key: R0UT1NGKEY}\n",
        pd.clone(),
    );
    for (from, to) in [
        (State::Closed, State::Open),
        (State::Open, State::HalfOpen),
        (State::HalfOpen, State::Closed),
    ] {
        n.on_transition(&transition(from, to), None);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let actions: Vec<String> = pd.bodies().iter().map(|b| b["event_action"].to_string()).collect();
    assert_eq!(actions, ["\"trigger\"", "\"resolve\""]);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_sink_delays_only_itself_and_its_full_queue_drops_the_oldest() {
    let hanging = Scripted::new([], Reply::Hang);
    let metrics = Arc::new(Metrics::new("standalone"));
    let yaml = "  min_interval: 0s\n  queue_size: 2\n  timeout: 1h\n  sinks:\n    - {type: webhook, url: 'http://hang.test/', name: stuck}\n    - {type: slack, url: 'https://ok.test/'}\n";
    let n = Notifier::new(&config(yaml), &metrics).unwrap();
    // Each sink gets its own transport here so the healthy one can be checked on its own.
    let healthy = Scripted::new([], Reply::Status(200));
    let router = Arc::new(ByHost {
        hang: hanging.clone(),
        ok: healthy.clone(),
    });
    n.start(router);
    for i in 0..6 {
        let to = if i % 2 == 0 { State::Open } else { State::Closed };
        n.on_transition(&transition(State::Closed, to), None);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(healthy.bodies().len(), 6, "the healthy sink got every notice");
    assert_eq!(hanging.bodies().len(), 1, "the stuck sink is still on its first");
    // 6 notices: 1 in flight, 2 queued, 3 dropped (oldest first).
    assert_eq!(metrics.sink("stuck").dropped.get(), 3);
    assert_eq!(metrics.sink("slack").dropped.get(), 0);
    assert_eq!(metrics.notification_queue_depth.get(), 2);

    // Shutdown gives the stuck sink its grace, then counts what never went out.
    let t = Instant::now();
    n.shutdown(Duration::from_secs(2)).await;
    assert_eq!(t.elapsed(), Duration::from_secs(2));
    assert_eq!(metrics.sink("stuck").dropped.get(), 5);
    assert_eq!(metrics.notification_queue_depth.get(), 0);
}

/// Routes by host: `hang.test` to one transport, anything else to the other.
struct ByHost {
    hang: Arc<Scripted>,
    ok: Arc<Scripted>,
}

impl Transport for ByHost {
    fn send(
        &self,
        request: transport::Request,
    ) -> transport::BoxFuture<'_, Result<transport::Answer, transport::SendError>> {
        if request.url.expose().contains("hang.test") {
            self.hang.send(request)
        } else {
            self.ok.send(request)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_what_damping_held() {
    let sink = Scripted::new([], Reply::Status(200));
    let (n, _) = start(&format!("  min_interval: 1h\n{ONE_WEBHOOK}"), sink.clone());
    n.on_transition(&transition(State::Closed, State::Open), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    n.on_transition(&transition(State::Open, State::HalfOpen), None);
    n.on_transition(&transition(State::HalfOpen, State::Closed), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&sink), [pair("open", 1)]);
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(received(&sink), [pair("open", 1), pair("closed", 2)]);
}

#[tokio::test(start_paused = true)]
async fn notify_test_reports_each_sink() {
    let metrics = Arc::new(Metrics::new("standalone"));
    let yaml = "  max_attempts: 1\n  sinks:\n    - {type: webhook, url: 'http://hang.test/', name: bad}\n    - {type: pagerduty, routing_key: R0UT1NGKEY}\n";
    let n = Notifier::new(&config(yaml), &metrics).unwrap();
    let refused = Scripted::new([Reply::Body(400, "nope")], Reply::Status(200));
    let ok = Scripted::new([], Reply::Status(202));
    let reports = n
        .send_test(Arc::new(ByHost {
            hang: refused,
            ok: ok.clone(),
        }))
        .await;
    let lines: Vec<String> = reports.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "bad (webhook): FAILED after 0s: refused with HTTP 400: nope",
            "pagerduty (pagerduty): delivered in 0s, 2 attempt(s)",
        ]
    );
    let actions: Vec<String> = ok.bodies().iter().map(|b| b["event_action"].to_string()).collect();
    assert_eq!(actions, ["\"trigger\"", "\"resolve\""]);
}

#[tokio::test(start_paused = true)]
async fn a_reload_sends_new_transitions_to_the_new_sinks_while_the_old_ones_finish_their_queue() {
    let old_sink = Scripted::new([], Reply::Status(200));
    let (n, metrics) = start(&format!("  min_interval: 0s\n{ONE_WEBHOOK}"), old_sink.clone());
    n.on_transition(&transition(State::Closed, State::Open), None);
    // Installed before the old worker has sent anything: what it holds still goes to the old sink.
    let new_yaml = "  min_interval: 0s\n  sinks:\n    - {type: webhook, url: 'http://sink.test/b', name: b}\n";
    let prepared = n.prepare(&config(new_yaml)).unwrap();
    let new_sink = Scripted::new([], Reply::Status(200));
    n.install(prepared, Some(new_sink.clone()));
    n.on_transition(&transition(State::Open, State::HalfOpen), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&old_sink), [pair("open", 1)]);
    assert_eq!(received(&new_sink), [pair("half_open", 1)]);
    assert_eq!(metrics.sink("b").delivered.get(), 1);
    assert_eq!(metrics.notification_queue_depth.get(), 0);
    // The retired generation's worker stopped; a second reload forgets it.
    let again = n.prepare(&config(new_yaml)).unwrap();
    n.install(again, None);
    assert_eq!(
        n.retired.lock().unwrap().len(),
        1,
        "the first generation, finished, was forgotten"
    );
    n.on_transition(&transition(State::HalfOpen, State::Closed), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        received(&new_sink),
        [pair("half_open", 1), pair("closed", 1)],
        "the kept transport sends"
    );
    n.shutdown(Duration::from_secs(1)).await;
}
