//! PagerDuty Events API v2 events: an opening triggers an alert, a closing resolves it, and half-open (a probe,
//! not a recovery) sends nothing, so on-call is paged once per outage and released when Redis is back.
//!
//! Every event about one Redis target uses one `dedup_key` ([`Context::dedup_key`]), whichever pod sends it: the
//! pods in front of one Redis fold into one incident, repeated openings while flapping fold into it too, and the
//! resolve finds it even after a restart. The first pod whose circuit closes resolves it (see docs/operations.md:
//! the Alertmanager path resolves only when the last one has). A trigger links to `notify.runbook_url` and
//! `notify.dashboard_url` when they are set (`links`, and the dashboard as `client_url`). Pure: JSON out.

use serde_json::{json, Value};

use super::context::Context;
use super::event::{Kind, Notice};
use super::text::{headline, human_duration, truncate};
use crate::breaker::State;
use crate::clock::iso8601;
use crate::config::Severity;

/// PagerDuty truncates `payload.summary` at 1024 characters; cut it ourselves (ellipsis included) so the end is
/// deliberate.
const MAX_SUMMARY_CHARS: usize = 1024;

/// Whether a notice about entering `to` concerns PagerDuty at all.
pub(crate) fn accepts(to: State) -> bool {
    matches!(to, State::Open | State::Closed)
}

/// The events for `n`, in sending order: none for half-open; for `notify-test` a trigger and its resolve
/// (under a key of their own, so a test never touches a real incident).
pub(crate) fn render(n: &Notice, ctx: &Context, routing_key: &str, severity: Severity) -> Vec<Value> {
    let e = &n.event;
    match (e.kind, e.to) {
        (Kind::Test, _) => {
            let key = format!("{}/notify-test", ctx.dedup_key());
            vec![
                trigger(n, ctx, routing_key, Severity::Info, &key),
                resolve(routing_key, &key),
            ]
        }
        (Kind::StateChanged, State::Open) => vec![trigger(n, ctx, routing_key, severity, &ctx.dedup_key())],
        (Kind::StateChanged, State::Closed) => vec![resolve(routing_key, &ctx.dedup_key())],
        (Kind::StateChanged, State::HalfOpen) => Vec::new(),
    }
}

fn trigger(n: &Notice, ctx: &Context, routing_key: &str, severity: Severity, dedup_key: &str) -> Value {
    let e = &n.event;
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "redguard",
        "payload": {
            "summary": truncate(&headline(n, ctx), MAX_SUMMARY_CHARS),
            "source": ctx.instance,
            "severity": severity.as_str(),
            "timestamp": iso8601(e.at),
            "component": "redis",
            "group": ctx.redis,
            "class": "circuit_breaker",
            "custom_details": {
                "from": e.from.as_str(),
                "to": e.to.as_str(),
                "reason": e.reason,
                "cause": e.cause.as_str(),
                "last_error": e.last_error,
                "failure_count": e.failure_count,
                "previous_state_lasted": human_duration(e.previous_lasted),
                "previous_state_seconds": e.previous_lasted.as_secs_f64(),
                "state_changes": n.changes,
                "redis": ctx.redis,
                "instance": ctx.instance,
                "test": e.kind == Kind::Test,
                "config": ctx.breaker,
            },
        },
    });
    // Links only when configured: an incident with a link to nowhere is worse than one without.
    let links: Vec<Value> = ctx
        .links()
        .map(|(text, href)| json!({"href": href, "text": text}))
        .collect();
    if !links.is_empty() {
        event["links"] = Value::Array(links);
    }
    if let Some(url) = &ctx.dashboard_url {
        // PagerDuty shows it as "View in redguard" on the alert.
        event["client_url"] = json!(url);
    }
    event
}

fn resolve(routing_key: &str, dedup_key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": dedup_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::{ctx, notice};

    #[test]
    fn an_opening_triggers_with_every_required_field() {
        let events = render(
            &notice(State::Closed, State::Open, Some("timed out")),
            &ctx(),
            "R0UT1NG",
            Severity::Critical,
        );
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e["routing_key"], "R0UT1NG");
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["dedup_key"], "redguard/cache:6379");
        let p = &e["payload"];
        assert_eq!(
            p["summary"],
            "Redis circuit OPEN on prod/api-0 (Redis redis://:***@cache:6379): 2 consecutive failures"
        );
        assert_eq!(p["source"], "prod/api-0");
        assert_eq!(p["severity"], "critical");
        assert_eq!(p["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(p["component"], "redis");
        assert_eq!(p["group"], "redis://:***@cache:6379");
        assert_eq!(p["class"], "circuit_breaker");
        let d = &p["custom_details"];
        assert_eq!(d["failure_count"], 2);
        assert_eq!(d["last_error"], "timed out");
        assert_eq!(d["reason"], "2 consecutive failures");
        assert_eq!(d["cause"], "measured");
        assert_eq!(d["config"]["failure_threshold"], 2);
    }

    #[test]
    fn custom_details_name_the_cause_so_an_override_can_be_routed_apart_from_an_outage() {
        use crate::breaker::Override;
        use crate::notify::event::{Cause, Event};
        use crate::notify::testing::event;
        use std::sync::Arc;
        for (cause, name) in [
            (Cause::Measured, "measured"),
            (Cause::Manual(Override::ForceOpen), "manual"),
            (Cause::Observed, "observed"),
        ] {
            let e = Event {
                cause,
                ..(*event(State::Closed, State::Open, None)).clone()
            };
            let events = render(&Notice::single(Arc::new(e)), &ctx(), "k", Severity::Critical);
            assert_eq!(events[0]["payload"]["custom_details"]["cause"], name, "{cause:?}");
        }
    }

    #[test]
    fn a_trigger_links_to_the_runbook_and_the_dashboard_only_when_they_are_set() {
        let n = notice(State::Closed, State::Open, None);
        let bare = &render(&n, &ctx(), "k", Severity::Critical)[0];
        for key in ["links", "client_url"] {
            assert!(bare.get(key).is_none(), "{key} without a URL: {bare}");
        }
        assert_eq!(bare["client"], "redguard");

        let c = Context {
            runbook_url: Some("https://runbooks.example/redguard#open".to_owned()),
            dashboard_url: Some("https://grafana.example/d/redguard?var-pod=api-0".to_owned()),
            ..ctx()
        };
        let linked = &render(&n, &c, "k", Severity::Critical)[0];
        assert_eq!(
            linked["links"],
            json!([
                {"href": "https://runbooks.example/redguard#open", "text": "Runbook"},
                {"href": "https://grafana.example/d/redguard?var-pod=api-0", "text": "Dashboard"},
            ])
        );
        assert_eq!(linked["client"], "redguard");
        assert_eq!(linked["client_url"], "https://grafana.example/d/redguard?var-pod=api-0");
        // Only the runbook: a link, but no client_url.
        let runbook_only = Context {
            dashboard_url: None,
            ..c.clone()
        };
        let e = &render(&n, &runbook_only, "k", Severity::Critical)[0];
        assert_eq!(
            e["links"],
            json!([{"href": "https://runbooks.example/redguard#open", "text": "Runbook"}])
        );
        assert!(e.get("client_url").is_none(), "{e}");
        // A resolve carries nothing but the key.
        let resolved = render(
            &notice(State::HalfOpen, State::Closed, None),
            &c,
            "k",
            Severity::Critical,
        );
        assert!(resolved[0].get("links").is_none(), "{}", resolved[0]);
    }

    #[test]
    fn a_long_summary_is_cut_to_pagerdutys_1024_characters_ellipsis_included() {
        let c = Context {
            instance: "é".repeat(1100),
            ..ctx()
        };
        let events = render(&notice(State::Closed, State::Open, None), &c, "k", Severity::Critical);
        let summary = events[0]["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS);
        assert!(
            summary.starts_with("Redis circuit OPEN on éé") && summary.ends_with("é…"),
            "{summary}"
        );
    }

    #[test]
    fn closing_resolves_the_same_alert_and_half_open_sends_nothing() {
        let c = ctx();
        let open = render(&notice(State::Closed, State::Open, None), &c, "k", Severity::Error);
        let closed = render(&notice(State::HalfOpen, State::Closed, None), &c, "k", Severity::Error);
        assert_eq!(
            closed,
            [json!({"routing_key": "k", "event_action": "resolve", "dedup_key": open[0]["dedup_key"]})]
        );
        assert_eq!(open[0]["payload"]["severity"], "error");
        assert!(render(&notice(State::Open, State::HalfOpen, None), &c, "k", Severity::Error).is_empty());
        assert!(!accepts(State::HalfOpen) && accepts(State::Open) && accepts(State::Closed));
    }

    #[test]
    fn a_test_triggers_and_resolves_under_its_own_key() {
        let n = Notice::single(std::sync::Arc::new(super::super::event::Event::test(
            std::time::UNIX_EPOCH,
        )));
        let events = render(&n, &ctx(), "k", Severity::Critical);
        let actions: Vec<&str> = events.iter().map(|e| e["event_action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["trigger", "resolve"]);
        assert_eq!(events[0]["dedup_key"], events[1]["dedup_key"]);
        assert_ne!(events[0]["dedup_key"], ctx().dedup_key());
        assert_eq!(events[0]["payload"]["severity"], "info");
        assert_eq!(events[0]["payload"]["custom_details"]["test"], true);
    }
}
