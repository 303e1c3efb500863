//! The notifier's only I/O: one HTTP POST, behind [`Transport`] so the delivery logic (retries, backoff,
//! `Retry-After`, timeouts) is tested against a scripted fake under paused time.
//!
//! The real transport is reqwest over rustls. It follows no redirects (a sink that moves is misconfigured, and
//! a redirect could carry the payload somewhere unexpected) and reads at most a few KiB of an answer, only to
//! log why a sink refused. Error texts are built without the request URL, which may embed a token.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::config::Secret;

/// A boxed, sendable future: lets the notifier hold any transport behind `Arc<dyn Transport>`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How much of a refusal's body is read, for the log.
const MAX_ANSWER_BYTES: usize = 4096;

/// One POST of a JSON body.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: Secret,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// What the sink answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The start of the body, lossily decoded.
    pub body: String,
}

/// No answer: the connection failed or broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

/// Sends one request. Timeouts are the caller's: it bounds each attempt itself.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Answer, SendError>>;
}

/// reqwest over rustls.
pub(crate) struct Http {
    client: reqwest::Client,
}

impl Http {
    /// `timeout` bounds connecting; the delivery loop bounds the whole attempt.
    pub(crate) fn new(timeout: Duration) -> Result<Http, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Http { client })
    }

    async fn post(&self, request: Request) -> Result<Answer, SendError> {
        let mut builder = self
            .client
            .post(request.url.expose())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("redguard/", env!("CARGO_PKG_VERSION")));
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder.body(request.body).send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        if !response.status().is_success() {
            while body.len() < MAX_ANSWER_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    // The status is the answer; a body cut short only loses log detail.
                    Ok(None) | Err(_) => break,
                }
            }
            body.truncate(MAX_ANSWER_BYTES);
        }
        Ok(Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

impl Transport for Http {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Answer, SendError>> {
        Box::pin(self.post(request))
    }
}

/// The error and its causes ("error sending request: client error (Connect): tcp connect error: Connection
/// refused"), without the URL.
fn describe(e: reqwest::Error) -> SendError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    SendError(text)
}
