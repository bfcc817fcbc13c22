//! The token and MAC-listing caches in the state dir, shared across
//! processes and fetched single-flight: when many workers start at once, one
//! asks IMDS and the others wait on a lock and reuse its answer.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

use super::*;
use crate::clock::{age_ms, boot_ms};
use crate::state::{open_nofollow, read_state_file, write_atomic};

impl Client {
    fn token_file(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| s.dir().join("imds-token.json"))
    }

    /// Forgets the token, here and in the cache.
    pub(super) fn drop_token(&mut self) {
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
    pub(super) fn token(&mut self) -> Result<Option<String>> {
        // The token PUT is EC2's alone.
        if self.v1 || self.cloud != Cloud::Ec2 {
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
        let name = match self.cloud {
            Cloud::Ec2 | Cloud::None => "imds-macs.json".to_string(),
            other => format!("imds-macs-{}.json", other.as_str()),
        };
        self.state.as_ref().map(|s| s.dir().join(name))
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
        let (path, parse): (&str, ParseListing) = match self.cloud {
            Cloud::Azure => (
                super::clouds::AZURE_NETWORK_PATH,
                super::clouds::parse_azure_network,
            ),
            Cloud::Gce => (
                super::clouds::GCE_NICS_PATH,
                super::clouds::parse_gce_interfaces,
            ),
            Cloud::Ec2 | Cloud::None => (MACS_PATH, parse_mac_listing),
        };
        if let Some(m) = self.cached_macs() {
            self.cached("GET", path, "macs");
            return Ok(m);
        }
        let _guard = self.single_flight("imds-macs.lock")?;
        if let Some(m) = self.cached_macs() {
            self.cached("GET", path, "macs");
            return Ok(m);
        }
        let asked_boot_ms = boot_ms();
        let macs = match self.get(path)? {
            Fetched::Found(body) => {
                parse(&body).map_err(|e| anyhow!("GET {}: {e}", self.url(path)))?
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
}

/// Parses a cloud's listing into lower-case MACs.
type ParseListing = fn(&str) -> Result<Vec<String>, String>;

/// Whether a token fetched at `fetched` (boot-clock ms) with a TTL of
/// `ttl_secs` is still worth using at `now`: it is renewed shortly before it
/// expires (a quarter of the TTL before, at most a minute), and one stamped
/// in the future is never trusted.
pub(super) fn token_fresh(fetched: u64, ttl_secs: u64, now: u64) -> bool {
    let ttl_ms = ttl_secs.saturating_mul(1000);
    let margin = (ttl_ms / 4).min(60_000);
    age_ms(fetched, now).is_some_and(|age| age.saturating_add(margin) < ttl_ms)
}
