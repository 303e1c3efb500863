//! Test helpers for the notifier's unit tests: a fixed context and events, and a scripted [`Transport`] that
//! answers from a list and records when each request arrived (on tokio's clock, so paused-time tests can read
//! the schedule).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use tokio::time::Instant;

use super::context::Context;
use super::event::{Cause, Event, Kind, Notice};
use super::transport::{Answer, BoxFuture, Request, SendError, Transport};
use crate::breaker::State;

pub(crate) fn ctx() -> Context {
    Context {
        instance: "prod/api-0".to_owned(),
        redis: "redis://:***@cache:6379".to_owned(),
        target: "cache:6379".to_owned(),
        breaker: json!({"failure_threshold": 2}),
        runbook_url: None,
        dashboard_url: None,
    }
}

/// A change at 2023-11-14T22:13:20Z after 75 s in the previous state, with 2 consecutive failures.
pub(crate) fn event(from: State, to: State, last_error: Option<&str>) -> Arc<Event> {
    Arc::new(Event {
        kind: Kind::StateChanged,
        from,
        to,
        reason: "2 consecutive failures".to_owned(),
        last_error: last_error.map(str::to_owned),
        failure_count: 2,
        at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        previous_lasted: Duration::from_secs(75),
        cause: Cause::Measured,
    })
}

pub(crate) fn notice(from: State, to: State, last_error: Option<&str>) -> Notice {
    Notice::single(event(from, to, last_error))
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(u16),
    RetryAfter(u16, &'static str),
    Body(u16, &'static str),
    Refused,
    Hang,
}

/// Answers from `script`, then `fallback` forever.
pub(crate) struct Scripted {
    script: Mutex<VecDeque<Reply>>,
    fallback: Reply,
    calls: Mutex<Vec<(Instant, Request)>>,
}

impl Scripted {
    pub(crate) fn new(script: impl IntoIterator<Item = Reply>, fallback: Reply) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Mutex::new(script.into_iter().collect()),
            fallback,
            calls: Mutex::default(),
        })
    }

    /// When each request arrived, relative to `start`.
    pub(crate) fn times(&self, start: Instant) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().map(|(t, _)| *t - start).collect()
    }

    /// Every request as sent, headers included.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.calls.lock().unwrap().iter().map(|(_, r)| r.clone()).collect()
    }

    pub(crate) fn bodies(&self) -> Vec<serde_json::Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .map(|(_, r)| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

impl Transport for Scripted {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Answer, SendError>> {
        self.calls.lock().unwrap().push((Instant::now(), request));
        let reply = self.script.lock().unwrap().pop_front().unwrap_or(self.fallback.clone());
        Box::pin(async move {
            let answer = |status, retry_after: Option<&str>, body: &str| {
                Ok(Answer {
                    status,
                    retry_after: retry_after.map(str::to_owned),
                    body: body.to_owned(),
                })
            };
            match reply {
                Reply::Status(s) => answer(s, None, ""),
                Reply::RetryAfter(s, after) => answer(s, Some(after), ""),
                Reply::Body(s, body) => answer(s, None, body),
                Reply::Refused => Err(SendError("tcp connect error: Connection refused".to_owned())),
                Reply::Hang => std::future::pending().await,
            }
        })
    }
}
