//! A frugal IMDSv2 client: token and MAC listing cached in the state dir and
//! fetched single-flight across processes, short timeouts under one total
//! deadline, bounded retries with jittered backoff, and every request
//! counted and logged.
//!
//! Never used inside udev's RUN context (udevd has `IPAddressDeny=any` and
//! kills its children when the event ends): only the worker, `classify` and
//! `imds get` call it.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::error::{invalid, quote};
use crate::host::cloud::Cloud;
use crate::metrics::ImdsCounters;
use crate::state::State;

mod cache;
mod clouds;
mod presence;
mod validate;

pub use clouds::{Azure, Gce, Metadata, client_for};

use validate::jitter;
pub use validate::*;

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
const TOKEN_PATH: &str = "/latest/api/token";
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
pub const MACS_PATH: &str = "/latest/meta-data/network/interfaces/macs/";
/// The token and listing caches are a few hundred bytes.
const CACHE_MAX: u64 = 64 * 1024;

/// Client settings (see `Config` for defaults).
#[derive(Clone, Debug)]
pub struct ImdsSettings {
    pub endpoint: String,
    pub token_ttl_secs: u64,
    pub v1_fallback: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// One total deadline per client (per invocation, or per worker attempt).
    pub deadline: Duration,
    pub retries: u32,
    pub listing_ttl: Duration,
    pub max_body: u64,
}

/// One request, or one answer served from the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLog {
    pub method: &'static str,
    pub path: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub cached: bool,
}

impl RequestLog {
    pub fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "latency_ms": (self.latency_ms * 1000.0).round() / 1000.0,
            "cached": self.cached,
        })
    }
}

/// A metadata value, or 404.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Found(String),
    Absent,
}

/// What IMDS says about a MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    Attached(Attachment),
    /// Not attached, and why (not listed, or its keys answer 404).
    Detached(String),
    /// IMDS could not tell (unreachable, throttled, garbage...).
    Unknown(String),
}

/// Per-MAC metadata of an attached interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attachment {
    pub device_number: String,
    pub network_card_index: Option<String>,
    pub interface_id: Option<String>,
}

/// Why a request failed, and whether trying again can help.
#[derive(Debug)]
struct Failure {
    retryable: bool,
    /// A connect or read timeout (the `timeout` outcome, for the histogram).
    timed_out: bool,
    msg: String,
}

fn fail(retryable: bool, msg: impl Into<String>) -> Failure {
    Failure {
        retryable,
        timed_out: false,
        msg: msg.into(),
    }
}

fn timed_out(msg: impl Into<String>) -> Failure {
    Failure {
        timed_out: true,
        ..fail(true, msg)
    }
}

/// Statuses worth retrying: throttling and transient server errors.
pub fn is_retryable_status(s: u16) -> bool {
    matches!(s, 429 | 500 | 502 | 503 | 504)
}

/// The IMDS client.
pub struct Client {
    settings: ImdsSettings,
    agent: ureq::Agent,
    state: Option<State>,
    token: Option<String>,
    v1: bool,
    /// Whose metadata service: EC2's (the token dance), Azure's or Google's
    /// (a fixed header, one listing document).
    cloud: Cloud,
    start: Instant,
    pub log: Vec<RequestLog>,
    pub counters: ImdsCounters,
}

impl Client {
    /// A client whose deadline starts now. `state` enables the shared cache.
    pub fn new(settings: ImdsSettings, state: Option<State>) -> Client {
        Client::flavoured(Cloud::Ec2, settings, state)
    }

    /// A client of `cloud`'s metadata service (see [`Metadata`]).
    pub(crate) fn flavoured(cloud: Cloud, settings: ImdsSettings, state: Option<State>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Never through a proxy, never to another host.
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent("hotplug-hook")
            .build()
            .into();
        let state = state.filter(|s| s.ensure().is_ok());
        Client {
            settings,
            agent,
            state,
            token: None,
            v1: false,
            cloud,
            start: Instant::now(),
            log: Vec::new(),
            counters: ImdsCounters::default(),
        }
    }

    fn remaining(&self) -> Option<Duration> {
        self.settings
            .deadline
            .checked_sub(self.start.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// One HTTP exchange, no retries. Returns status and (for 200) the body.
    fn exchange(
        &self,
        put: bool,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, String), Failure> {
        let remaining = self
            .remaining()
            .ok_or_else(|| fail(false, "IMDS deadline exceeded"))?;
        let url = format!("{}{path}", self.settings.endpoint);
        let connect = self.settings.connect_timeout.min(remaining);
        let total = (self.settings.connect_timeout + self.settings.read_timeout).min(remaining);
        let result = if put {
            self.agent
                .put(&url)
                .config()
                .timeout_connect(Some(connect))
                .timeout_global(Some(total))
                .build()
                .header(TTL_HEADER, self.settings.token_ttl_secs.to_string())
                .send_empty()
        } else {
            let mut req = self
                .agent
                .get(&url)
                .config()
                .timeout_connect(Some(connect))
                .timeout_global(Some(total))
                .build();
            if let Some(t) = token {
                req = req.header(TOKEN_HEADER, t);
            }
            match self.cloud {
                Cloud::Azure => req = req.header("Metadata", "true"),
                Cloud::Gce => req = req.header("Metadata-Flavor", "Google"),
                Cloud::Ec2 | Cloud::None => {}
            }
            req.call()
        };
        let mut resp = result.map_err(|e| match e {
            ureq::Error::Timeout(_) => timed_out("timed out"),
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                timed_out(format!("connection failed: {e}"))
            }
            ureq::Error::Io(e) => fail(true, format!("connection failed: {e}")),
            ureq::Error::ConnectionFailed => fail(true, "connection failed"),
            ureq::Error::Protocol(e) => fail(true, format!("bad HTTP response: {e}")),
            other => fail(false, other.to_string()),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Ok((status, String::new()));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.settings.max_body)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(n) => {
                    fail(false, format!("response body over {n} bytes refused"))
                }
                ureq::Error::Timeout(_) => timed_out("timed out reading the body"),
                other => fail(true, format!("failed to read the body: {other}")),
            })?;
        let text = validate_text(&body).map_err(|e| fail(false, e))?;
        Ok((status, text))
    }

    /// `exchange`, logged and counted.
    fn request(
        &mut self,
        put: bool,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, String), Failure> {
        let t0 = Instant::now();
        let r = self.exchange(put, path, token);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let (status, error, timed_out) = match &r {
            Ok((s, _)) => (Some(*s), None, false),
            Err(f) => (None, Some(f.msg.clone()), f.timed_out),
        };
        // The deadline check fails before anything is sent: not a request.
        if !matches!(&r, Err(f) if f.msg == "IMDS deadline exceeded") {
            self.counters
                .request(path_kind(path), status, timed_out, ms);
            self.log.push(RequestLog {
                method: if put { "PUT" } else { "GET" },
                path: path.to_string(),
                status,
                error,
                latency_ms: ms,
                cached: false,
            });
        }
        r
    }

    fn cached(&mut self, method: &'static str, path: &str, kind: &str) {
        self.counters.cache_hit(kind);
        self.log.push(RequestLog {
            method,
            path: path.to_string(),
            status: None,
            error: None,
            latency_ms: 0.0,
            cached: true,
        });
    }

    /// Runs `f` with bounded retries and jittered exponential backoff, all
    /// within the deadline. `f` maps statuses to success or failure.
    fn with_retries<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Self) -> Result<T, Failure>,
    ) -> Result<T> {
        let mut attempt = 0u32;
        loop {
            match f(self) {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable && attempt < self.settings.retries => {
                    let Some(remaining) = self.remaining() else {
                        bail!("{what}: {} (deadline reached)", e.msg);
                    };
                    let base = Duration::from_millis(100u64 << attempt.min(6));
                    let pause = jitter(base).min(remaining);
                    crate::log::debug(&format!("{what}: {}; retrying in {pause:?}", e.msg));
                    thread::sleep(pause);
                    self.counters.retries += 1;
                    attempt += 1;
                }
                Err(e) => {
                    let tries = if e.retryable {
                        format!(" after {} attempts", attempt + 1)
                    } else {
                        String::new()
                    };
                    bail!("{what}: {}{tries}", e.msg);
                }
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.endpoint)
    }

    /// GET a metadata path (absolute, e.g. `/latest/meta-data/...`).
    /// 404 is `Absent`; a 401 drops the token and retries once with a new one.
    pub fn get(&mut self, path: &str) -> Result<Fetched> {
        let what = format!("GET {}", self.url(path));
        let mut reauthed = false;
        loop {
            let token = self.token()?;
            let got = self.with_retries(&what, |c| {
                let (status, body) = c.request(false, path, token.as_deref())?;
                match status {
                    200 => Ok(Some(Fetched::Found(body))),
                    404 => Ok(Some(Fetched::Absent)),
                    401 => Ok(None),
                    s if (300..400).contains(&s) => {
                        Err(fail(false, format!("HTTP {s}: redirect refused")))
                    }
                    s => Err(fail(is_retryable_status(s), format!("HTTP {s}"))),
                }
            })?;
            match got {
                Some(f) => return Ok(f),
                None if !reauthed && !self.v1 && self.cloud == Cloud::Ec2 => {
                    crate::log::debug("IMDS answered 401: dropping the cached token");
                    self.drop_token();
                    reauthed = true;
                }
                None if self.cloud != Cloud::Ec2 => bail!("{what}: HTTP 401"),
                None => bail!("{what}: HTTP 401 with a fresh token"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
