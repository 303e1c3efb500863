//! The Redis password as something a reload can change: a credentials provider for redis-rs.
//!
//! redis-rs asks a [`StreamingCredentialsProvider`] for the credentials of every connection it opens
//! (standalone, a sentinel-monitored master, each cluster node), and each open connection keeps listening to it
//! and re-authenticates (`AUTH user password`) when it yields new ones. [`Password`] holds the current pair in a
//! `watch` channel: a reload that read a rotated `redis.password_file` calls [`Password::set`], new connections
//! use the new password and open ones re-authenticate with it, so a password rotated in Redis with the old one
//! still accepted (Redis ACL users can hold two passwords at once) never interrupts traffic.
//!
//! Used only when a password is configured at start: without one, connections send no AUTH at all, and
//! adding a password needs a restart. `AUTH` with a user name needs Redis 6 or later (the user `default`
//! stands for `requirepass`).

use std::pin::Pin;

use futures_util::Stream;
use redis::auth::{BasicAuth, StreamingCredentialsProvider};
use redis::RedisResult;
use tokio::sync::watch;

/// The credentials every Redis connection authenticates with; cheap to clone (all clones share the channel).
#[derive(Clone)]
pub(crate) struct Password {
    current: watch::Sender<BasicAuth>,
}

impl Password {
    pub(crate) fn new(username: String, password: &str) -> Password {
        Password {
            current: watch::Sender::new(BasicAuth::new(username, password.to_owned())),
        }
    }

    /// Makes `password` the one new connections use and open ones re-authenticate with; does nothing (and
    /// sends no AUTH) when it is the one in use.
    pub(crate) fn set(&self, password: &str) {
        self.current.send_if_modified(|auth| {
            let changed = auth.password() != password;
            if changed {
                auth.set_password(password.to_owned());
            }
            changed
        });
    }
}

impl StreamingCredentialsProvider for Password {
    /// The credentials in use first (what a new connection authenticates with), then each change.
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let rx = self.current.subscribe();
        Box::pin(futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first {
                rx.changed().await.ok()?;
            }
            let auth = rx.borrow_and_update().clone();
            Some((Ok(auth), (rx, false)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_gets_the_current_password_then_each_change_once() {
        let password = Password::new("app".into(), "old");
        let mut stream = password.subscribe();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.username(), first.password()), ("app", "old"));
        password.set("old");
        password.set("new");
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!((next.username(), next.password()), ("app", "new"));
        // Setting the same password again yields nothing: no needless AUTH on every connection.
        password.set("new");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(10), stream.next()).await;
        assert!(pending.is_err(), "no change, no credentials");
        // A connection opened now starts from the new one.
        let late = password.subscribe().next().await.unwrap().unwrap();
        assert_eq!(late.password(), "new");
    }
}
