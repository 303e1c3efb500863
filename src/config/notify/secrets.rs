//! The sinks' secrets: each one inline, from a file or from an environment variable (exactly one), read once at
//! load so a missing secret stops the start instead of surfacing on the first outage; and the checks of what a
//! secret holds (an endpoint URL, a Standard Webhooks signing key, header values).
//!
//! Nothing here ever puts a secret into an error message: problems name the key (`notify.sinks[1].url`), never
//! its content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::EnvLookup;
use crate::config::Secret;

/// Headers redguard sets itself; a sink may not override them.
const RESERVED_HEADERS: [&str; 8] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "x-redguard-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// One secret that may be given inline, as a file or as an environment variable.
pub(super) struct SecretRef<'a> {
    at: &'a str,
    keys: [&'static str; 3],
    required: bool,
}

impl<'a> SecretRef<'a> {
    pub(super) fn new(at: &'a str, keys: [&'static str; 3], required: bool) -> Self {
        Self { at, keys, required }
    }

    /// Leaves the value (from whichever source) in `inline`.
    pub(super) fn resolve(
        &self,
        inline: &mut Option<Secret>,
        file: &Option<PathBuf>,
        var: &Option<String>,
        env: EnvLookup<'_>,
        p: &mut Vec<String>,
    ) {
        let [key, file_key, env_key] = self.keys;
        let at = self.at;
        let set = usize::from(inline.is_some()) + usize::from(file.is_some()) + usize::from(var.is_some());
        if set > 1 {
            p.push(format!("{at}: set only one of {key}, {file_key} or {env_key}"));
            return;
        }
        if let Some(value) = inline.as_ref() {
            if value.expose().trim().is_empty() {
                p.push(format!("{at}.{key} must not be empty"));
            }
        } else if let Some(path) = file {
            match read_secret(path) {
                Ok(secret) => *inline = Some(secret),
                Err(e) => p.push(format!("{at}.{file_key}: cannot read {}: {e}", path.display())),
            }
        } else if let Some(name) = var {
            match env(name).filter(|v| !v.trim().is_empty()) {
                Some(v) => *inline = Some(Secret::new(v.trim())),
                None => p.push(format!(
                    "{at}.{env_key}: environment variable {name} is not set or empty"
                )),
            }
        } else if self.required {
            p.push(format!("{at}: one of {key}, {file_key} or {env_key} is required"));
        }
    }
}

/// The file's content, trailing newline trimmed; an empty file is an error.
fn read_secret(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.trim().is_empty() {
        return Err("file is empty".to_owned());
    }
    Ok(Secret::new(value))
}

/// Checks an endpoint without ever printing it: it may embed a token.
pub(super) fn check_url(key: &str, url: Option<&str>, p: &mut Vec<String>) {
    let Some(url) = url else { return };
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => p.push(format!("{key} must be an http:// or https:// URL with a host")),
        Err(e) => p.push(format!("{key} is not a valid URL ({e})")),
    }
}

/// A secret in Standard Webhooks' form (`whsec_` + base64) is decoded into the HMAC key; one that cannot be
/// is refused now rather than signing with something the receiver does not expect. Never prints the secret.
pub(super) fn check_signing_secret(at: &str, secret: Option<&Secret>, p: &mut Vec<String>) {
    use base64::Engine;
    let Some(encoded) = secret.and_then(|s| s.expose().strip_prefix("whsec_")) else {
        return;
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => {}
        _ => p.push(format!(
            "{at}: the signing secret (secret, secret_file or secret_env) starts with whsec_, but what follows is \
             not the base64 of a key"
        )),
    }
}

pub(super) fn check_headers(at: &str, headers: &BTreeMap<String, Secret>, p: &mut Vec<String>) {
    for (name, value) in headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.push(format!("{at}.headers: {name:?} is not a valid header name"));
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            p.push(format!(
                "{at}.headers.{name} is set by redguard and cannot be overridden"
            ));
        } else if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
            p.push(format!(
                "{at}.headers.{name} has characters not allowed in a header value"
            ));
        }
    }
}
