//! A small blocking client for etcd's v3 JSON gateway (etcd 3.4+): one
//! HTTP/1.1 POST per call, `Connection: close`. Every call has one deadline
//! that bounds all of it: every endpoint tried, every connect, every read
//! (a server that dribbles its answer a byte at a time is cut off at the
//! deadline, not timed per read), and answers are capped in size. Keys and
//! values travel base64-encoded, 64-bit numbers as strings.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// How long an endpoint may take to accept a connection before the next is
/// tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an ordinary call may take, all endpoints tried included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often taking a lock reads and tries its transaction again when
/// keys under its name changed in between.
const TXN_ATTEMPTS: usize = 10;
/// The largest answer read: etcd's answers to me-only's calls are a few
/// hundred bytes; a larger one is not etcd's (or not sane).
const MAX_ANSWER: usize = 1 << 20;

/// The deadline of an ordinary call made now.
pub fn soon() -> Instant {
    Instant::now() + CALL_TIMEOUT
}

/// One etcd client URL, `http://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    host: String,
    port: u16,
    /// The host's addresses, once resolved for good (see `Gateway::resolved`).
    addresses: Option<Vec<SocketAddr>>,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = || format!("'{url}' is not an etcd endpoint (http://HOST:PORT)");
        let authority = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 || host.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        Ok(Endpoint {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            addresses: None,
        })
    }

    fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        if let Some(addresses) = &self.addresses {
            return Ok(addresses.clone());
        }
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|err| format!("cannot resolve {}: {err}", self.host))
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint answered as a working etcd member: why not, for the last
    /// one tried, naming it.
    Unreachable(String),
    /// etcd answered, and refused (its message).
    Refused(String),
    /// The call's own time ran out while etcd was reachable (a lock wait).
    TimedOut,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "{why}"),
            CallError::Refused(message) => write!(f, "etcd says: {message}"),
            CallError::TimedOut => write!(f, "timed out"),
        }
    }
}

/// The etcd cluster, as its client URLs.
#[derive(Debug, Clone)]
pub struct Gateway {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last, tried first next time: one that
    /// failed costs its share of a call's time once, not every call.
    preferred: Cell<usize>,
}

impl Gateway {
    /// `http://a:2379,http://b:2379`.
    pub fn parse(list: &str) -> Result<Gateway, String> {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        Ok(Gateway {
            endpoints,
            preferred: Cell::new(0),
        })
    }

    /// The same cluster, each endpoint's host resolved now and for good:
    /// for the keeper, whose renewals must fit a deadline that a name
    /// lookup (which cannot be bounded) could overrun.
    pub fn resolved(&self) -> Gateway {
        let endpoints = self
            .endpoints
            .iter()
            .map(|endpoint| Endpoint {
                addresses: endpoint.addresses().ok(),
                ..endpoint.clone()
            })
            .collect();
        Gateway {
            endpoints,
            preferred: self.preferred.clone(),
        }
    }

    /// POSTs `body` to `path`, trying endpoint after endpoint until one
    /// answers as a working member, all before `deadline`. Each endpoint
    /// gets an equal share of the time left, so that a silent one leaves
    /// time for the next.
    pub fn call(&self, path: &str, body: &Value, deadline: Instant) -> Result<Value, CallError> {
        self.call_until(path, body, deadline, false)
    }

    /// As `call`, but when `slow_is_final`, an endpoint still silent at
    /// `deadline` ends the call (TimedOut): for calls that wait on purpose,
    /// which give the first endpoint all the time.
    fn call_until(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        slow_is_final: bool,
    ) -> Result<Value, CallError> {
        let mut last = None;
        let count = self.endpoints.len();
        for tried in 0..count {
            let index = (self.preferred.get() + tried) % count;
            let endpoint = &self.endpoints[index];
            let started = Instant::now();
            let untried = (count - tried) as u32;
            let share = match slow_is_final {
                true => deadline,
                false => started + deadline.saturating_duration_since(started) / untried,
            };
            let why = match post(endpoint, path, body, share) {
                Ok(answer) => {
                    self.preferred.set(index);
                    return answer;
                }
                Err(NoAnswer::Slow) if slow_is_final => return Err(CallError::TimedOut),
                Err(NoAnswer::Slow) => format!(
                    "etcd at {} does not answer: no answer within {:.1} s",
                    endpoint.url,
                    started.elapsed().as_secs_f64()
                ),
                Err(NoAnswer::Failed(reason)) => {
                    format!("etcd at {} does not answer: {reason}", endpoint.url)
                }
                Err(NoAnswer::Unavailable(status, message)) => format!(
                    "etcd at {} is unavailable (HTTP {status}): {message}",
                    endpoint.url
                ),
                Err(NoAnswer::NotEtcd(what)) => {
                    format!("{} is not an etcd client endpoint ({what})", endpoint.url)
                }
            };
            log::debug!("{why}");
            last = Some(CallError::Unreachable(why));
        }
        Err(last.unwrap_or(CallError::Refused("no endpoint".into())))
    }

    pub fn grant(&self, ttl: i64) -> Result<i64, CallError> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl }), soon())?;
        number(&answer["ID"]).ok_or_else(|| refused(&answer))
    }

    pub fn revoke(&self, lease: i64, deadline: Instant) -> Result<(), CallError> {
        self.call(
            "/v3/lease/revoke",
            &json!({ "ID": lease.to_string() }),
            deadline,
        )
        .map(drop)
    }

    /// Renews the lease once; its remaining TTL, 0 if it is gone.
    pub fn keep_alive(&self, lease: i64, deadline: Instant) -> Result<i64, CallError> {
        let answer = self.call(
            "/v3/lease/keepalive",
            &json!({ "ID": lease.to_string() }),
            deadline,
        )?;
        Ok(number(&answer["result"]["TTL"]).unwrap_or(0))
    }

    /// Creates `key` (with `value`, on `lease`) if no lock key is under
    /// `prefix` (see `lock_keys`): read, then a transaction that creates the
    /// key only if nothing under `prefix` changed since the read, tried
    /// again if something did (a nested lock's key may have). The new key's
    /// create revision, or None when another key holds the lock.
    pub fn create_if_no_holder(
        &self,
        prefix: &[u8],
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<Option<i64>, CallError> {
        for _ in 0..TXN_ATTEMPTS {
            let (read_at, holders) = self.lock_keys(prefix)?;
            if !holders.is_empty() {
                return Ok(None);
            }
            let body = json!({
                "compare": [{
                    "key": BASE64.encode(prefix),
                    "range_end": BASE64.encode(prefix_end(prefix)),
                    "target": "MOD",
                    "mod_revision": (read_at + 1).to_string(),
                    "result": "LESS",
                }],
                "success": [{ "request_put": {
                    "key": BASE64.encode(key),
                    "value": BASE64.encode(value),
                    "lease": lease.to_string(),
                }}],
            });
            let answer = self.call("/v3/kv/txn", &body, soon())?;
            if answer["succeeded"] == json!(true) {
                // The put's revision is the new key's create revision.
                return number(&answer["header"]["revision"])
                    .map(Some)
                    .ok_or_else(|| refused(&answer));
            }
        }
        Err(CallError::Refused(format!(
            "the keys under the lock changed {TXN_ATTEMPTS} times while it was taken"
        )))
    }

    /// The oldest lock key under `prefix` (the holder, where keys queue by
    /// create revision): its key, value and create revision.
    pub fn first_under(&self, prefix: &[u8]) -> Result<Option<KeyValue>, CallError> {
        Ok(self.lock_keys(prefix)?.1.into_iter().next())
    }

    /// The keys of the lock `prefix` names, oldest first, and the revision
    /// they were read at: those right under `prefix` (`NAME/<lease>`, as
    /// me-only and etcd's lock service make them), not those of a lock
    /// nested in it (`NAME/inner/<lease>`), which lie under `prefix` too.
    fn lock_keys(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), CallError> {
        let body = json!({
            "key": BASE64.encode(prefix),
            "range_end": BASE64.encode(prefix_end(prefix)),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
        });
        let answer = self.call("/v3/kv/range", &body, soon())?;
        let read_at = number(&answer["header"]["revision"]).ok_or_else(|| refused(&answer))?;
        let keys = answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(KeyValue::from_json)
            .filter(|kv| !kv.key[prefix.len().min(kv.key.len())..].contains(&b'/'))
            .collect();
        Ok((read_at, keys))
    }

    /// The key, if it exists.
    pub fn get(&self, key: &[u8], deadline: Instant) -> Result<Option<KeyValue>, CallError> {
        let answer = self.call(
            "/v3/kv/range",
            &json!({ "key": BASE64.encode(key) }),
            deadline,
        )?;
        Ok(answer["kvs"].get(0).and_then(KeyValue::from_json))
    }

    pub fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), CallError> {
        let body = json!({
            "key": BASE64.encode(key),
            "value": BASE64.encode(value),
            "lease": lease.to_string(),
        });
        self.call("/v3/kv/put", &body, soon()).map(drop)
    }

    /// etcd's lock service: queues a key `NAME/<lease>` behind older ones
    /// and returns it once it is the oldest, or TimedOut at `deadline`.
    pub fn lock(
        &self,
        name: &[u8],
        lease: i64,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, CallError> {
        // A wait without deadline still re-asks now and then, in case the
        // connection silently died.
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(24 * 3600));
        if deadline <= Instant::now() {
            return Err(CallError::TimedOut);
        }
        let body = json!({ "name": BASE64.encode(name), "lease": lease.to_string() });
        let answer = self.call_until("/v3/lock/lock", &body, deadline, true)?;
        answer["key"]
            .as_str()
            .and_then(|key| BASE64.decode(key).ok())
            .ok_or_else(|| refused(&answer))
    }
}

/// A key as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub lease: i64,
}

impl KeyValue {
    fn from_json(kv: &Value) -> Option<KeyValue> {
        let bytes = |field: &Value| match field.as_str() {
            Some(text) => BASE64.decode(text).ok(),
            None => Some(Vec::new()),
        };
        Some(KeyValue {
            key: bytes(&kv["key"])?,
            value: bytes(&kv["value"])?,
            create_revision: number(&kv["create_revision"])?,
            lease: number(&kv["lease"]).unwrap_or(0),
        })
    }
}

/// The end of the range of keys that start with `prefix`: the prefix with
/// its last byte raised by one.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

/// A 64-bit number, which the gateway writes as a string.
fn number(field: &Value) -> Option<i64> {
    match field {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

fn refused(answer: &Value) -> CallError {
    CallError::Refused(etcd_message(answer).unwrap_or_else(|| answer.to_string()))
}

/// The message of an error answer, as etcd's gateway words it (flat, or
/// nested under "error" by some versions).
fn etcd_message(answer: &Value) -> Option<String> {
    [
        &answer["message"],
        &answer["error"],
        &answer["error"]["message"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .map(str::to_owned)
}

/// Why an endpoint gave no answer that counts: the call moves on to the
/// next.
enum NoAnswer {
    /// It did not answer within the call's time.
    Slow,
    Failed(String),
    /// A member that cannot serve (no leader, no quorum): its HTTP status
    /// and etcd's message.
    Unavailable(u16, String),
    /// Something that answers, but not as an etcd client endpoint does (a
    /// peer port, another HTTP server): what it answered.
    NotEtcd(String),
}

impl From<String> for NoAnswer {
    fn from(reason: String) -> NoAnswer {
        NoAnswer::Failed(reason)
    }
}

impl From<&str> for NoAnswer {
    fn from(reason: &str) -> NoAnswer {
        NoAnswer::Failed(reason.to_owned())
    }
}

/// One request on a fresh connection. Err: the endpoint did not answer as
/// a working member (try the next); Ok(Err): it answered with an error.
fn post(
    endpoint: &Endpoint,
    path: &str,
    body: &Value,
    deadline: Instant,
) -> Result<Result<Value, CallError>, NoAnswer> {
    let mut stream = connect(endpoint, deadline)?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        endpoint.host,
        endpoint.port,
        body.len()
    );
    stream
        .set_write_timeout(Some(time_left(deadline)?))
        .map_err(io_failure)?;
    stream.write_all(request.as_bytes()).map_err(io_failure)?;
    let response = read_answer(&mut stream, deadline)?;
    let (status, body) =
        parse_response(&response).ok_or_else(|| NoAnswer::NotEtcd("not an HTTP answer".into()))?;
    let answer: Option<Value> = serde_json::from_slice(&body).ok();
    match (status, answer) {
        (200, Some(answer)) => Ok(Ok(answer)),
        (500..=599, answer) => Err(NoAnswer::Unavailable(
            status,
            answer
                .as_ref()
                .and_then(etcd_message)
                .unwrap_or_else(|| "no message".into()),
        )),
        (_, Some(answer)) if etcd_message(&answer).is_some() => Ok(Err(refused(&answer))),
        _ => Err(NoAnswer::NotEtcd(format!("HTTP {status}"))),
    }
}

/// What is left of the time until `deadline`; none left is Slow.
fn time_left(deadline: Instant) -> Result<Duration, NoAnswer> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(NoAnswer::Slow);
    }
    Ok(left)
}

fn io_failure(err: std::io::Error) -> NoAnswer {
    match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NoAnswer::Slow,
        _ => NoAnswer::Failed(err.to_string()),
    }
}

/// Reads the whole answer (the server closes the connection after it),
/// by `deadline` however slowly it comes, and no more than MAX_ANSWER.
fn read_answer(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, NoAnswer> {
    let mut answer = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(time_left(deadline)?))
            .map_err(io_failure)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(read) if answer.len() + read > MAX_ANSWER => {
                return Err(NoAnswer::Failed(format!(
                    "its answer is larger than {} KiB",
                    MAX_ANSWER / 1024
                )));
            }
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io_failure(err)),
        }
    }
}

fn connect(endpoint: &Endpoint, deadline: Instant) -> Result<TcpStream, NoAnswer> {
    let mut last = format!("{}: no address", endpoint.host);
    for address in endpoint.addresses()? {
        let timeout = time_left(deadline)?.min(CONNECT_TIMEOUT);
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err.to_string(),
        }
    }
    Err(NoAnswer::Failed(last))
}

/// The status code and the body (chunked transfer undone) of a complete
/// HTTP/1.1 response.
fn parse_response(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..head_end]).ok()?;
    let body = &response[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut rest = body;
    let mut joined = Vec::new();
    loop {
        let size_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..size_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[size_end + 2..];
        if size == 0 {
            return Some((status, joined));
        }
        joined.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_host_port() {
        let gateway = Gateway::parse("http://127.0.0.1:2379, http://etcd-2:2379/").unwrap();
        assert_eq!(gateway.endpoints[0].host, "127.0.0.1");
        assert_eq!(gateway.endpoints[1].host, "etcd-2");
        assert_eq!(gateway.endpoints[1].port, 2379);
        assert_eq!(Endpoint::parse("http://[::1]:2379").unwrap().host, "::1");
        for bad in [
            "",
            "127.0.0.1:2379",
            "https://h:2379",
            "http://h",
            "http://h:x",
            "http://:1",
        ] {
            assert!(Gateway::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_end_raises_the_last_byte() {
        assert_eq!(prefix_end(b"lock/"), b"lock0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn chunked_answers_are_joined() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(response), Some((200, b"{\"a\":1}".to_vec())));
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((404, b"{}".to_vec())));
    }

    #[test]
    fn numbers_come_as_strings_or_numbers() {
        assert_eq!(
            number(&json!("2324035571122621701")),
            Some(2324035571122621701)
        );
        assert_eq!(number(&json!(7)), Some(7));
        assert_eq!(number(&json!(null)), None);
    }
}
