//! Slack incoming-webhook messages: a `text` fallback (what notifications and old clients show) plus one
//! attachment whose colour tells the state at a glance and whose blocks carry the details, and buttons to
//! `notify.runbook_url` and `notify.dashboard_url` when they are set.
//!
//! Pure: a [`Notice`] in, JSON out. Every value that comes from outside redguard's own vocabulary (instance,
//! Redis target, reason, last error) is escaped for Slack's mrkdwn, so an error text cannot inject a mention or a
//! link.

use serde_json::{json, Value};

use super::context::Context;
use super::event::{Kind, Notice};
use super::text::{headline, human_duration, state_title, truncate};
use crate::breaker::State;
use crate::clock::iso8601;

/// Slack caps a header block at 150 characters.
const MAX_HEADER_CHARS: usize = 150;
/// Slack refuses a message whose section field text is over 2,000 characters (a long `notify.instance`, escaped).
/// The details section needs no cut: a last error of at most 500 characters, escaped, stays under its 3,000.
const MAX_FIELD_CHARS: usize = 2000;

/// Emoji shortcode and attachment colour for a notice.
fn look(n: &Notice) -> (&'static str, &'static str) {
    match (n.event.kind, n.event.to) {
        (Kind::Test, _) => (":information_source:", "#439FE0"),
        (_, State::Open) => (":red_circle:", "#E01E5A"),
        (_, State::HalfOpen) => (":large_yellow_circle:", "#ECB22E"),
        (_, State::Closed) => (":large_green_circle:", "#2EB67D"),
    }
}

/// The message body for `n`.
pub(crate) fn render(n: &Notice, ctx: &Context) -> Value {
    let e = &n.event;
    let (emoji, colour) = look(n);
    let title = match e.kind {
        Kind::Test => "Test notification: the wiring works".to_owned(),
        Kind::StateChanged if n.is_summary() => format!("Redis circuit flapping, now {}", state_title(e.to)),
        Kind::StateChanged => format!("Redis circuit {}", state_title(e.to)),
    };
    let mut fields = vec![
        field("State", format!("{} → {}", e.from, e.to)),
        field("Instance", escape(&ctx.instance)),
        field("Redis", format!("`{}`", code(&ctx.redis))),
        field("Failures", e.failure_count.to_string()),
        field("At", iso8601(e.at)),
        field("Previous state lasted", human_duration(e.previous_lasted)),
    ];
    if n.is_summary() {
        fields.push(field("State changes", n.changes.to_string()));
    }
    let mut details = format!("*Reason:* {}", escape(&e.reason));
    if let Some(err) = &e.last_error {
        details.push_str(&format!("\n*Last error:* `{}`", code(err)));
    }
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(&format!("{emoji} {title}"), MAX_HEADER_CHARS), "emoji": true},
        }),
        json!({"type": "section", "fields": fields}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": details}}),
    ];
    // Buttons only for the links that are configured (validated URLs, at most Slack's 3,000 characters), and
    // no actions block at all without one: Slack refuses an empty one.
    let buttons: Vec<Value> = ctx.links().map(|(label, url)| button(label, url)).collect();
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "redguard: circuit breaker in front of Redis"}]}));
    json!({
        "text": format!("{emoji} {}", escape(&headline(n, ctx))),
        "attachments": [{"color": colour, "blocks": blocks}],
    })
}

/// A link button. The label is one of redguard's own words, far below Slack's 75 characters; the `action_id`
/// keeps the buttons of one block apart, as Slack requires.
fn button(label: &str, url: &str) -> Value {
    json!({
        "type": "button",
        "action_id": label.to_ascii_lowercase(),
        "text": {"type": "plain_text", "text": label},
        "url": url,
    })
}

fn field(label: &str, value: String) -> Value {
    json!({"type": "mrkdwn", "text": truncate(&format!("*{label}*\n{value}"), MAX_FIELD_CHARS)})
}

/// Slack's three control characters in mrkdwn.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text shown inside a code span: escaped, and a backtick cannot end the span early.
fn code(s: &str) -> String {
    escape(s).replace('`', "'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::{ctx, notice};

    #[test]
    fn an_opening_is_red_and_carries_every_detail() {
        let n = notice(State::Closed, State::Open, Some("Connection refused <@U123> & `x`"));
        let v = render(&n, &ctx());
        assert_eq!(
            v["text"],
            ":red_circle: Redis circuit OPEN on prod/api-0 (Redis redis://:***@cache:6379): 2 consecutive failures"
        );
        let a = &v["attachments"][0];
        assert_eq!(a["color"], "#E01E5A");
        assert_eq!(a["blocks"][0]["text"]["text"], ":red_circle: Redis circuit OPEN");
        let fields: Vec<&str> = a["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "*State*\nclosed → open",
                "*Instance*\nprod/api-0",
                "*Redis*\n`redis://:***@cache:6379`",
                "*Failures*\n2",
                "*At*\n2023-11-14T22:13:20Z",
                "*Previous state lasted*\n1m 15s",
            ]
        );
        assert_eq!(
            a["blocks"][2]["text"]["text"],
            "*Reason:* 2 consecutive failures\n*Last error:* `Connection refused &lt;@U123&gt; &amp; 'x'`"
        );
    }

    #[test]
    fn runbook_and_dashboard_are_buttons_only_when_set() {
        let n = notice(State::Closed, State::Open, None);
        let types = |v: &Value| -> Vec<String> {
            v["attachments"][0]["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["type"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(types(&render(&n, &ctx())), ["header", "section", "section", "context"]);

        let c = Context {
            runbook_url: Some("https://runbooks.example/redguard#open".to_owned()),
            dashboard_url: Some("https://grafana.example/d/redguard?var-pod=api-0&from=now-1h".to_owned()),
            ..ctx()
        };
        let v = render(&n, &c);
        assert_eq!(types(&v), ["header", "section", "section", "actions", "context"]);
        assert_eq!(
            v["attachments"][0]["blocks"][3],
            json!({"type": "actions", "elements": [
                {"type": "button", "action_id": "runbook", "text": {"type": "plain_text", "text": "Runbook"}, "url": "https://runbooks.example/redguard#open"},
                {"type": "button", "action_id": "dashboard", "text": {"type": "plain_text", "text": "Dashboard"}, "url": "https://grafana.example/d/redguard?var-pod=api-0&from=now-1h"},
            ]})
        );
        let dashboard_only = Context { runbook_url: None, ..c };
        let elements = render(&n, &dashboard_only)["attachments"][0]["blocks"][3]["elements"].clone();
        assert_eq!(elements.as_array().unwrap().len(), 1);
        assert_eq!(elements[0]["action_id"], "dashboard");
    }

    #[test]
    fn a_long_instance_stays_within_slacks_field_limit() {
        let c = Context {
            instance: "&".repeat(3000),
            ..ctx()
        };
        let v = render(&notice(State::Closed, State::Open, None), &c);
        let blocks = &v["attachments"][0]["blocks"];
        let chars = |v: &Value| v.as_str().unwrap().chars().count();
        let instance = &blocks[1]["fields"][1]["text"];
        assert_eq!(chars(instance), MAX_FIELD_CHARS, "{instance}");
        assert!(instance.as_str().unwrap().starts_with("*Instance*\n&amp;"));
        for f in blocks[1]["fields"].as_array().unwrap() {
            assert!(chars(&f["text"]) <= MAX_FIELD_CHARS);
        }
    }

    #[test]
    fn each_state_has_its_colour_and_a_summary_counts_the_changes() {
        let colour = |to| render(&notice(State::Open, to, None), &ctx())["attachments"][0]["color"].clone();
        assert_eq!(colour(State::HalfOpen), "#ECB22E");
        assert_eq!(colour(State::Closed), "#2EB67D");
        let mut n = notice(State::HalfOpen, State::Closed, None);
        n.changes = 5;
        let v = render(&n, &ctx());
        assert!(
            v["text"].as_str().unwrap().contains("5 state changes, now CLOSED"),
            "{v}"
        );
        let fields = v["attachments"][0]["blocks"][1]["fields"].as_array().unwrap();
        assert_eq!(fields.last().unwrap()["text"], "*State changes*\n5");
        assert!(!v["attachments"][0]["blocks"][2]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Last error"));
    }
}
