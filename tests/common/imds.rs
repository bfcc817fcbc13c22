//! An IMDS double on 127.0.0.1: IMDSv2 tokens with expiry, the
//! `network/interfaces/macs/` tree, fault injection, and a log of every
//! request so tests can assert how many calls were made. In Azure or
//! Google mode ([`ImdsDouble::start_cloud`]) it serves that cloud's one
//! network listing instead, behind that cloud's header, with the same faults.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const TOKEN_PATH: &str = "/latest/api/token";
pub const MACS: &str = "/latest/meta-data/network/interfaces/macs/";

#[derive(Clone, Debug)]
pub struct Eni {
    pub mac: String,
    pub device_number: u32,
    pub network_card_index: Option<u32>,
    pub interface_id: String,
    /// In the `macs/` listing.
    pub listed: bool,
    /// Its per-MAC keys answer (false: 404, as after a detach while the
    /// listing lags).
    pub keys: bool,
    /// After this many requests to the double, it is detached (unlisted, keys 404).
    pub vanish_after: Option<usize>,
    /// Not visible until this many requests have been served (attach lag).
    pub appear_after: Option<usize>,
    /// Per-MAC keys answered with this text instead (a hostile or broken
    /// IMDS): `("device-number", "1; rm -rf /")`.
    pub raw: Vec<(String, String)>,
}

impl Eni {
    pub fn new(mac: &str, device_number: u32) -> Eni {
        Eni {
            mac: mac.into(),
            device_number,
            network_card_index: Some(0),
            interface_id: format!("eni-{:017x}", device_number),
            listed: true,
            keys: true,
            vanish_after: None,
            appear_after: None,
            raw: Vec::new(),
        }
    }
}

/// Faults to inject. Counters (`*_next`) apply to that many requests, then stop.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub delay: Duration,
    /// Answer every request with this status...
    pub status: Option<u16>,
    /// ...for this many requests (None: forever).
    pub status_count: Option<usize>,
    /// Answer token PUTs with this status.
    pub token_status: Option<u16>,
    /// Reset this many connections without answering.
    pub reset_next: usize,
    /// Answer 401 to this many requests that carry a valid token.
    pub unauthorized_next: usize,
    /// 200 with binary garbage.
    pub garbage: bool,
    /// 200 with a 100 KiB body.
    pub oversized: bool,
    /// 301 to another host.
    pub redirect: bool,
    /// Accept GETs without a token (IMDSv1).
    pub allow_v1: bool,
}

/// One request as the double saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// None: the connection was reset.
    pub status: Option<u16>,
    pub had_token: bool,
    pub host: String,
}

#[derive(Default)]
pub struct Inner {
    /// "" (EC2), "azure" or "gce".
    pub cloud: &'static str,
    pub enis: Vec<Eni>,
    pub faults: Faults,
    pub seen: Vec<Seen>,
    tokens: HashMap<String, Instant>,
    issued: u64,
}

pub struct ImdsDouble {
    pub addr: SocketAddr,
    pub inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
}

impl ImdsDouble {
    pub fn start(enis: Vec<Eni>) -> ImdsDouble {
        Self::start_cloud("", enis)
    }

    /// A double of `cloud`'s metadata service: "azure", "gce" ("" is EC2).
    pub fn start_cloud(cloud: &'static str, enis: Vec<Eni>) -> ImdsDouble {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            cloud,
            enis,
            ..Inner::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (i, s) = (inner.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let i = i.clone();
                thread::spawn(move || serve(conn, &i));
            }
        });
        ImdsDouble { addr, inner, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.inner.lock().unwrap().faults);
    }

    pub fn enis(&self, f: impl FnOnce(&mut Vec<Eni>)) {
        f(&mut self.inner.lock().unwrap().enis);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }

    pub fn token_puts(&self) -> usize {
        self.count("PUT", TOKEN_PATH)
    }

    pub fn listings(&self) -> usize {
        self.count("GET", MACS)
    }

    pub fn total(&self) -> usize {
        self.seen().len()
    }

    /// Forgets every issued token (as if they expired).
    pub fn expire_tokens(&self) {
        self.inner.lock().unwrap().tokens.clear();
    }
}

impl Drop for ImdsDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(conn: &mut TcpStream) -> Option<(String, String, HashMap<String, String>)> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((method, path, headers))
}

fn reset(conn: TcpStream) {
    // SO_LINGER with a zero timeout: close() sends RST.
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and a correctly sized option value.
    unsafe {
        nix::libc::setsockopt(
            conn.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_LINGER,
            &linger as *const _ as *const nix::libc::c_void,
            std::mem::size_of::<nix::libc::linger>() as u32,
        );
    }
    drop(conn);
}

fn serve(mut conn: TcpStream, inner: &Mutex<Inner>) {
    let Some((method, path, headers)) = read_request(&mut conn) else {
        return;
    };
    let delay = inner.lock().unwrap().faults.delay;
    if !delay.is_zero() {
        thread::sleep(delay);
    }
    let answer = {
        let mut g = inner.lock().unwrap();
        let had_token = headers.contains_key("x-aws-ec2-metadata-token");
        let host = headers.get("host").cloned().unwrap_or_default();
        let a = route(&mut g, &method, &path, &headers);
        g.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            status: a.as_ref().map(|a| a.0),
            had_token,
            host,
        });
        a
    };
    let Some((status, extra, body)) = answer else {
        reset(conn);
        return;
    };
    let reason = match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}

type Answer = Option<(u16, Vec<(String, String)>, Vec<u8>)>;

fn text(status: u16, body: &str) -> Answer {
    Some((status, Vec::new(), body.as_bytes().to_vec()))
}

fn route(g: &mut Inner, method: &str, path: &str, headers: &HashMap<String, String>) -> Answer {
    let served = g.seen.len();
    let f = &mut g.faults;
    if f.reset_next > 0 {
        f.reset_next -= 1;
        return None;
    }
    if let Some(s) = f.status {
        match &mut f.status_count {
            Some(0) => f.status = None,
            Some(n) => {
                *n -= 1;
                return text(s, "");
            }
            None => return text(s, ""),
        }
    }
    if f.redirect {
        return Some((
            301,
            vec![("Location".into(), format!("http://127.0.0.2{path}"))],
            Vec::new(),
        ));
    }
    if !g.cloud.is_empty() {
        return route_cloud(g, method, path, headers, served);
    }
    if method == "PUT" && path == TOKEN_PATH {
        if let Some(s) = f.token_status {
            return text(s, "");
        }
        let ttl: u64 = match headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.parse().ok())
        {
            Some(t) if (1..=21600).contains(&t) => t,
            _ => return text(400, ""),
        };
        g.issued += 1;
        let token = format!("AQAEA{:08}tok{}==", g.issued, std::process::id());
        g.tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        return Some((
            200,
            vec![(
                "X-aws-ec2-metadata-token-ttl-seconds".into(),
                ttl.to_string(),
            )],
            token.into_bytes(),
        ));
    }
    if method != "GET" {
        return text(405, "");
    }
    let token_ok = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|t| g.tokens.get(t))
        .is_some_and(|exp| *exp > Instant::now());
    let has_token = headers.contains_key("x-aws-ec2-metadata-token");
    if !token_ok && (has_token || !g.faults.allow_v1) {
        return text(401, "");
    }
    if token_ok && g.faults.unauthorized_next > 0 {
        g.faults.unauthorized_next -= 1;
        return text(401, "");
    }
    if g.faults.garbage {
        return Some((200, Vec::new(), vec![0, 159, 146, 150, 1, 2, 3, 0xff]));
    }
    if g.faults.oversized {
        return Some((200, Vec::new(), vec![b'a'; 100 * 1024]));
    }
    let visible = |e: &Eni| {
        e.vanish_after.is_none_or(|n| served < n) && e.appear_after.is_none_or(|n| served >= n)
    };
    if path == MACS {
        let body: String = g
            .enis
            .iter()
            .filter(|e| e.listed && visible(e))
            .map(|e| format!("{}/\n", e.mac))
            .collect();
        return text(200, body.trim_end());
    }
    if let Some(rest) = path.strip_prefix(MACS)
        && let Some((mac, key)) = rest.split_once('/')
    {
        let Some(e) = g.enis.iter().find(|e| e.mac == mac && e.keys && visible(e)) else {
            return text(404, "");
        };
        if let Some((_, v)) = e.raw.iter().find(|(k, _)| k == key) {
            return text(200, v);
        }
        return match key {
            "device-number" => text(200, &e.device_number.to_string()),
            "network-card-index" => match e.network_card_index {
                Some(n) => text(200, &n.to_string()),
                None => text(404, ""),
            },
            "interface-id" => text(200, &e.interface_id),
            "mac" => text(200, &e.mac),
            _ => text(404, ""),
        };
    }
    if path == "/latest/meta-data/instance-id" {
        return text(200, "i-0123456789abcdef0");
    }
    text(404, "")
}

pub const AZURE_NETWORK: &str = "/metadata/instance/network?api-version=2021-02-01";
pub const GCE_NICS: &str = "/computeMetadata/v1/instance/network-interfaces/?recursive=true";

/// Azure's or Google's metadata service: one listing, behind a header.
fn route_cloud(
    g: &mut Inner,
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    served: usize,
) -> Answer {
    if method != "GET" {
        return text(405, "");
    }
    let (header, value, listing) = match g.cloud {
        "azure" => ("metadata", "true", AZURE_NETWORK),
        _ => ("metadata-flavor", "Google", GCE_NICS),
    };
    if headers.get(header).map(String::as_str) != Some(value) {
        // Azure answers 400, Google 403, without the header.
        return text(if g.cloud == "azure" { 400 } else { 403 }, "");
    }
    if g.faults.garbage {
        return Some((200, Vec::new(), vec![0, 159, 146, 150, 1, 2, 3, 0xff]));
    }
    if g.faults.oversized {
        return Some((200, Vec::new(), vec![b'a'; 100 * 1024]));
    }
    if path != listing {
        return text(404, "");
    }
    let visible = |e: &&Eni| {
        e.listed
            && e.vanish_after.is_none_or(|n| served < n)
            && e.appear_after.is_none_or(|n| served >= n)
    };
    let mut enis: Vec<&Eni> = g.enis.iter().filter(visible).collect();
    enis.sort_by_key(|e| e.device_number);
    let body = if g.cloud == "azure" {
        let list: Vec<serde_json::Value> = enis
            .iter()
            .map(|e| {
                serde_json::json!({
                    "ipv4": {"ipAddress": [{"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}],
                             "subnet": [{"address": "10.0.0.0", "prefix": "24"}]},
                    "ipv6": {"ipAddress": []},
                    "macAddress": e.mac.replace(':', "").to_ascii_uppercase(),
                })
            })
            .collect();
        serde_json::json!({ "interface": list })
    } else {
        serde_json::Value::Array(
            enis.iter()
                .map(|e| {
                    serde_json::json!({
                        "accessConfigs": [], "gateway": "10.128.0.1", "ip": "10.128.0.2",
                        "mac": e.mac, "mtu": 1460,
                        "network": "projects/123/networks/default",
                    })
                })
                .collect(),
        )
    };
    text(200, &body.to_string())
}
