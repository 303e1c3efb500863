//! A stand-in for Slack, PagerDuty or any webhook endpoint: an axum app on `127.0.0.1:0`, on its own small
//! runtime, that records every request (path, headers, raw body, arrival time) and answers as scripted:
//! a list of answers first, then a fallback forever. It can refuse (400), fail (500), rate-limit (429 with
//! `Retry-After`) or never answer at all. Dropping it shuts its runtime down, hanging handlers included.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::wait_for;

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status with a short body.
    Status(u16, &'static str),
    /// 429 Too Many Requests with `Retry-After: <seconds>`.
    RetryAfter(u64),
    /// Never answers (the request is still recorded).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Answer>>,
    fallback: Mutex<Option<Answer>>,
}

pub struct SinkServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SinkServer {
    /// A sink that accepts everything with 200.
    pub fn start() -> SinkServer {
        SinkServer::answering(Answer::Status(200, "ok"))
    }

    /// A sink that answers `fallback` to every request not covered by [`SinkServer::script`].
    pub fn answering(fallback: Answer) -> SinkServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        *shared.fallback.lock().unwrap() = Some(fallback);
        let app = axum::Router::new().fallback(record).with_state(shared.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        SinkServer {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Answers these first, in order, then the fallback.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) -> &Self {
        self.shared.script.lock().unwrap().extend(answers);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, and returns them all.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        wait_for(&format!("{n} request(s) at the sink {}", self.addr), timeout, || {
            let got = self.requests();
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn record(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let recorded = Recorded {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    shared.requests.lock().unwrap().push(recorded);
    let answer = shared.script.lock().unwrap().pop_front();
    let answer = answer.unwrap_or_else(|| shared.fallback.lock().unwrap().clone().unwrap());
    match answer {
        Answer::Status(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Answer::RetryAfter(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response(),
        Answer::Hang => std::future::pending().await,
    }
}
