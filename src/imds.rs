//! A frugal IMDSv2 client: token and MAC listing cached in the state dir and
//! fetched single-flight across processes, short timeouts under one total
//! deadline, bounded retries with jittered backoff, and every request
//! counted and logged.
//!
//! Never used inside udev's RUN context (udevd has `IPAddressDeny=any` and
//! kills its children when the event ends): only the worker, `classify` and
//! `imds get` call it.

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

use crate::clock::{age_ms, boot_ms};
use crate::error::{invalid, quote};
use crate::metrics::ImdsCounters;
use crate::state::{State, open_nofollow, read_state_file, write_atomic};

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
    msg: String,
}

fn fail(retryable: bool, msg: impl Into<String>) -> Failure {
    Failure {
        retryable,
        msg: msg.into(),
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
    start: Instant,
    pub log: Vec<RequestLog>,
    pub counters: ImdsCounters,
}

impl Client {
    /// A client whose deadline starts now. `state` enables the shared cache.
    pub fn new(settings: ImdsSettings, state: Option<State>) -> Client {
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
            req.call()
        };
        let mut resp = result.map_err(|e| match e {
            ureq::Error::Timeout(_) => fail(true, "timed out"),
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
                ureq::Error::Timeout(_) => fail(true, "timed out reading the body"),
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
        let (status, error) = match &r {
            Ok((s, _)) => (Some(*s), None),
            Err(f) => (None, Some(f.msg.clone())),
        };
        // The deadline check fails before anything is sent: not a request.
        if !matches!(&r, Err(f) if f.msg == "IMDS deadline exceeded") {
            self.counters.request(path_kind(path), status, ms);
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
                None if !reauthed && !self.v1 => {
                    crate::log::debug("IMDS answered 401: dropping the cached token");
                    self.drop_token();
                    reauthed = true;
                }
                None => bail!("{what}: HTTP 401 with a fresh token"),
            }
        }
    }

    fn token_file(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| s.dir().join("imds-token.json"))
    }

    /// Forgets the token, here and in the cache.
    fn drop_token(&mut self) {
        self.token = None;
        if let Some(p) = self.token_file() {
            let _ = fs::remove_file(p);
        }
    }

    /// A token still good for a while, from the cache file. Stamps are
    /// boot-clock milliseconds ([`boot_ms`]); a file without them (an older
    /// release's) or fetched "in the future" counts as expired.
    fn cached_token(&self) -> Option<String> {
        let text = read_state_file(&self.token_file()?, CACHE_MAX)?;
        let v: Value = serde_json::from_str(&text).ok()?;
        if v.get("endpoint")?.as_str()? != self.settings.endpoint {
            return None;
        }
        let fetched = v.get("fetched_boot_ms")?.as_u64()?;
        if !token_fresh(fetched, v.get("ttl_secs")?.as_u64()?, boot_ms()) {
            return None;
        }
        validate_token(v.get("token")?.as_str()?).ok()
    }

    /// The session token: memory, then cache, then one PUT shared by every
    /// process waiting on the lock. `None` once fallen back to IMDSv1.
    fn token(&mut self) -> Result<Option<String>> {
        if self.v1 {
            return Ok(None);
        }
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.cached_token() {
            self.cached("PUT", TOKEN_PATH, "token");
            self.token = Some(t.clone());
            return Ok(Some(t));
        }
        let _guard = self.single_flight("imds-token.lock")?;
        if let Some(t) = self.cached_token() {
            self.cached("PUT", TOKEN_PATH, "token");
            self.token = Some(t.clone());
            return Ok(Some(t));
        }
        let what = format!("PUT {}", self.url(TOKEN_PATH));
        self.counters.token_fetches += 1;
        let asked_boot_ms = boot_ms();
        let fetched = self.with_retries(&what, |c| {
            let (status, body) = c.request(true, TOKEN_PATH, None)?;
            match status {
                200 => validate_token(&body).map_err(|e| fail(false, e)),
                s => Err(fail(is_retryable_status(s), format!("HTTP {s}"))),
            }
        });
        match fetched {
            Ok(t) => {
                if let Some(p) = self.token_file() {
                    // Stamped when the PUT was sent: IMDS counts the TTL from
                    // about then, never from later.
                    let doc = json!({
                        "endpoint": self.settings.endpoint,
                        "token": t,
                        "fetched_boot_ms": asked_boot_ms,
                        "ttl_secs": self.settings.token_ttl_secs,
                    });
                    if let Err(e) =
                        write_atomic(&p, doc.to_string().as_bytes(), crate::state::FILE_MODE)
                    {
                        crate::log::warn(&format!("not caching the IMDS token: {e:#}"));
                    }
                }
                self.token = Some(t.clone());
                Ok(Some(t))
            }
            Err(e) if self.settings.v1_fallback => {
                crate::log::warn(&format!("{e:#}; falling back to IMDSv1"));
                self.v1 = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes an exclusive lock in the state dir, waiting at most until the
    /// deadline. `None` without a state dir (no cache, no sharing).
    fn single_flight(&self, name: &str) -> Result<Option<Flock<File>>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let path = state.dir().join(name);
        let Ok(mut file) = open_nofollow(&path, true) else {
            return Ok(None);
        };
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(lock)),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if self.remaining().is_none() {
                        bail!(
                            "timed out waiting for another hotplug-hook's IMDS request ({})",
                            path.display()
                        );
                    }
                    file = f;
                    thread::sleep(Duration::from_millis(2));
                }
                Err((_, e)) => return Err(anyhow!("failed to lock {}: {e}", path.display())),
            }
        }
    }

    fn macs_file(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| s.dir().join("imds-macs.json"))
    }

    fn cached_macs(&self) -> Option<Vec<String>> {
        let text = read_state_file(&self.macs_file()?, CACHE_MAX)?;
        let v: Value = serde_json::from_str(&text).ok()?;
        if v.get("endpoint")?.as_str()? != self.settings.endpoint {
            return None;
        }
        // Boot-clock stamp: a file without one, or from "the future", is stale.
        let age = age_ms(v.get("fetched_boot_ms")?.as_u64()?, boot_ms())?;
        if age > self.settings.listing_ttl.as_millis() as u64 {
            return None;
        }
        v.get("macs")?
            .as_array()?
            .iter()
            .map(|m| m.as_str().filter(|m| is_mac(m)).map(str::to_string))
            .collect()
    }

    /// The attached MACs (`macs/` listing), cached for `listing_ttl` and
    /// fetched once for a burst of events.
    pub fn macs(&mut self) -> Result<Vec<String>> {
        if let Some(m) = self.cached_macs() {
            self.cached("GET", MACS_PATH, "macs");
            return Ok(m);
        }
        let _guard = self.single_flight("imds-macs.lock")?;
        if let Some(m) = self.cached_macs() {
            self.cached("GET", MACS_PATH, "macs");
            return Ok(m);
        }
        let asked_boot_ms = boot_ms();
        let macs = match self.get(MACS_PATH)? {
            Fetched::Found(body) => {
                parse_mac_listing(&body).map_err(|e| anyhow!("GET {}: {e}", self.url(MACS_PATH)))?
            }
            Fetched::Absent => Vec::new(),
        };
        if let Some(p) = self.macs_file() {
            let doc = json!({
                "endpoint": self.settings.endpoint,
                "fetched_boot_ms": asked_boot_ms,
                "macs": macs,
            });
            let _ = write_atomic(&p, doc.to_string().as_bytes(), crate::state::FILE_MODE);
        }
        Ok(macs)
    }

    /// `macs/<mac>/<key>`.
    pub fn mac_key(&mut self, mac: &str, key: &str) -> Result<Fetched> {
        let mac =
            normalize_mac(mac).ok_or_else(|| invalid(format!("invalid MAC {}", quote(mac))))?;
        self.get(&format!("{MACS_PATH}{mac}/{key}"))
    }

    /// Is this MAC detached? Absent from the listing, or listed while its
    /// `device-number` answers 404 (IMDS lags after a detach).
    pub fn detached(&mut self, mac: &str) -> Presence {
        let Some(mac) = normalize_mac(mac) else {
            return Presence::Unknown(format!("invalid MAC {}", quote(mac)));
        };
        match self.macs() {
            Err(e) => Presence::Unknown(format!("{e:#}")),
            Ok(list) if !list.contains(&mac) => {
                Presence::Detached(format!("{mac} is not in the macs/ listing"))
            }
            Ok(_) => self.attachment(&mac, "listed, but"),
        }
    }

    /// Is this MAC attached? Its per-MAC keys, without the listing (which
    /// adds nothing once `device-number` answers).
    pub fn attached(&mut self, mac: &str) -> Presence {
        let Some(mac) = normalize_mac(mac) else {
            return Presence::Unknown(format!("invalid MAC {}", quote(mac)));
        };
        self.attachment(&mac, "")
    }

    fn attachment(&mut self, mac: &str, prefix: &str) -> Presence {
        let device_number = match self.mac_key(mac, "device-number") {
            Err(e) => return Presence::Unknown(format!("{e:#}")),
            Ok(Fetched::Absent) => {
                return Presence::Detached(format!(
                    "{prefix}{}macs/{mac}/device-number answers 404",
                    if prefix.is_empty() { "" } else { " " }
                ));
            }
            Ok(Fetched::Found(n)) => match valid_device_number(n.trim()) {
                Some(n) => n,
                // Not what IMDS sends: nothing to confirm with, and never
                // passed on to the command.
                None => {
                    return Presence::Unknown(format!(
                        "macs/{mac}/device-number is not a small integer: {}",
                        quote(n.trim())
                    ));
                }
            },
        };
        let mut optional =
            |key: &str, valid: fn(&str) -> Option<String>| match self.mac_key(mac, key) {
                Ok(Fetched::Found(v)) => {
                    let v = valid(v.trim());
                    if v.is_none() {
                        crate::log::warn(&format!("ignoring macs/{mac}/{key}: not a valid {key}"));
                    }
                    v
                }
                _ => None,
            };
        let network_card_index = optional("network-card-index", valid_device_number);
        let interface_id = optional("interface-id", valid_interface_id);
        Presence::Attached(Attachment {
            device_number,
            network_card_index,
            interface_id,
        })
    }

    /// Adds this client's counters to the state dir's.
    pub fn flush_metrics(&self, prom: Option<&std::path::Path>) {
        if self.counters.is_empty() {
            return;
        }
        if let Some(state) = &self.state
            && let Err(e) = crate::metrics::update(state, prom, |m| m.imds.merge(&self.counters))
        {
            crate::log::warn(&format!("failed to save IMDS counters: {e:#}"));
        }
    }
}

/// Whether a token fetched at `fetched` (boot-clock ms) with a TTL of
/// `ttl_secs` is still worth using at `now`: it is renewed shortly before it
/// expires (a quarter of the TTL before, at most a minute), and one stamped
/// in the future is never trusted.
fn token_fresh(fetched: u64, ttl_secs: u64, now: u64) -> bool {
    let ttl_ms = ttl_secs.saturating_mul(1000);
    let margin = (ttl_ms / 4).min(60_000);
    age_ms(fetched, now).is_some_and(|age| age.saturating_add(margin) < ttl_ms)
}

/// The kind of path, for counters.
pub fn path_kind(path: &str) -> &'static str {
    if path == TOKEN_PATH {
        "token"
    } else if path == MACS_PATH {
        "macs"
    } else if path.starts_with(MACS_PATH) {
        "mac-key"
    } else {
        "other"
    }
}

fn jitter(d: Duration) -> Duration {
    // Seeded per process from the OS: enough to spread retries apart.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let frac = 0.5 + (r % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

/// Refuses bodies that are not text: invalid UTF-8 or control characters
/// other than newline, tab and carriage return.
pub fn validate_text(body: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(body).map_err(|_| "response is not UTF-8 text".to_string())?;
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("response contains control characters".into());
    }
    Ok(s.to_string())
}

/// A session token goes into a header: printable ASCII, no spaces, bounded.
pub fn validate_token(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.len() > 512 || !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err("IMDS returned a malformed token".into());
    }
    Ok(t.to_string())
}

/// `device-number` and `network-card-index`: a small decimal integer
/// (at most 4 digits), as it may go into the command's environment.
pub fn valid_device_number(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u16>().ok().map(|n| n.to_string()))
        .flatten()
}

/// `interface-id`: `eni-` and 1 to 32 lower-case hex digits.
pub fn valid_interface_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("eni-")?;
    (!hex.is_empty()
        && hex.len() <= 32
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then(|| s.to_string())
}

pub fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':').count() == 6
        && s.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Lower-cased MAC, or `None` if it is not one.
pub fn normalize_mac(s: &str) -> Option<String> {
    let m = s.trim().to_ascii_lowercase();
    is_mac(&m).then_some(m)
}

/// Parses the `macs/` listing: one `02:..:../` per line.
pub fn parse_mac_listing(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mac = line.strip_suffix('/').unwrap_or(line);
        match normalize_mac(mac) {
            Some(m) => out.push(m),
            None => {
                return Err(format!(
                    "unexpected line in the MAC listing: {}",
                    quote(line)
                ));
            }
        }
    }
    Ok(out)
}

/// `http://...` without path, query or credentials; `ipv4`/`ipv6` name the
/// two IMDS addresses.
pub fn normalize_endpoint(s: &str) -> Result<String> {
    let e = match s {
        "ipv4" => DEFAULT_ENDPOINT,
        "ipv6" => IPV6_ENDPOINT,
        other => other.trim_end_matches('/'),
    };
    let Some(host) = e.strip_prefix("http://") else {
        return Err(invalid(format!(
            "IMDS endpoint {} must start with http://",
            quote(s)
        )));
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'));
    if !ok {
        return Err(invalid(format!(
            "IMDS endpoint {} must be http://HOST[:PORT] with no path",
            quote(s)
        )));
    }
    Ok(e.to_string())
}

/// A path for `imds get`: relative to `/latest/`, e.g. `meta-data/instance-id`.
pub fn metadata_path(p: &str) -> Result<String> {
    let p = p.trim_start_matches('/');
    let p = p.strip_prefix("latest/").unwrap_or(p);
    let ok = !p.is_empty()
        && p.len() <= 512
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
        && !p.contains("//")
        // No dot segments, and nothing that only looks unlike one (`...`):
        // no metadata path has two dots in a row.
        && !p.contains("..")
        && !p.split('/').any(|c| c == ".");
    if !ok {
        return Err(invalid(format!("invalid metadata path {}", quote(p))));
    }
    Ok(format!("/latest/{p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_listing() {
        let table: &[(&str, Result<Vec<&str>, ()>)] = &[
            (
                "02:AA:bb:cc:dd:01/\n02:aa:bb:cc:dd:02/",
                Ok(vec!["02:aa:bb:cc:dd:01", "02:aa:bb:cc:dd:02"]),
            ),
            ("02:aa:bb:cc:dd:01/\n", Ok(vec!["02:aa:bb:cc:dd:01"])),
            ("02:aa:bb:cc:dd:01", Ok(vec!["02:aa:bb:cc:dd:01"])),
            ("", Ok(vec![])),
            ("<html>", Err(())),
            ("02:aa:bb:cc:dd/", Err(())),
            ("02:aa:bb:cc:dd:0g/", Err(())),
        ];
        for (body, want) in table {
            let got = parse_mac_listing(body).map_err(|_| ());
            let want = want
                .clone()
                .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{body:?}");
        }
    }

    #[test]
    fn tokens_and_text() {
        assert_eq!(validate_token("AQAEAFTxyz==\n").unwrap(), "AQAEAFTxyz==");
        for bad in ["", "a b", "tok\r\nX-Evil: 1", &"x".repeat(513), "tök"] {
            assert!(validate_token(bad).is_err(), "{bad:?}");
        }
        assert!(validate_text(b"eni-0123\n").is_ok());
        assert!(validate_text(b"\x00\x01garbage").is_err());
        assert!(validate_text(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn endpoints_and_paths() {
        assert_eq!(
            normalize_endpoint("ipv6").unwrap(),
            "http://[fd00:ec2::254]"
        );
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "https://169.254.169.254",
            "http://a@b",
            "http://h/latest",
            "ftp://x",
            "http://",
        ] {
            assert!(normalize_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(
            metadata_path("meta-data/instance-id").unwrap(),
            "/latest/meta-data/instance-id"
        );
        assert_eq!(
            metadata_path("/latest/meta-data/").unwrap(),
            "/latest/meta-data/"
        );
        // "..." came from the fuzzer (fuzz/artifacts/imds_response).
        for bad in [
            "",
            "meta-data/../../x",
            "meta-data/a?b",
            "http://evil/",
            "...",
            "a/.../b",
            "./x",
        ] {
            assert!(metadata_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_freshness_uses_the_boot_clock() {
        // 6 h TTL: renewed a minute before it runs out.
        assert!(token_fresh(1_000, 21_600, 1_000));
        assert!(token_fresh(1_000, 21_600, 1_000 + 21_539_999));
        assert!(!token_fresh(1_000, 21_600, 1_000 + 21_540_000));
        // 4 s TTL: a quarter of it.
        assert!(token_fresh(0, 4, 2_999));
        assert!(!token_fresh(0, 4, 3_000));
        // Fetched "in the future" (another boot, a forged file): expired.
        assert!(!token_fresh(5_001, 21_600, 5_000));
        assert!(!token_fresh(u64::MAX, u64::MAX, 0));
    }

    #[test]
    fn statuses_and_kinds() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s));
        }
        for s in [200, 400, 401, 403, 404, 405] {
            assert!(!is_retryable_status(s));
        }
        assert_eq!(path_kind(TOKEN_PATH), "token");
        assert_eq!(path_kind(MACS_PATH), "macs");
        assert_eq!(
            path_kind(&format!("{MACS_PATH}02:aa:bb:cc:dd:01/device-number")),
            "mac-key"
        );
        assert_eq!(path_kind("/latest/meta-data/instance-id"), "other");
    }
}
