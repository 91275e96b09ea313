//! A small blocking client for etcd's v3 JSON gateway (etcd 3.4+): one
//! HTTP/1.1 POST per call, `Connection: close`, every step bounded in time.
//! Keys and values travel base64-encoded, 64-bit numbers as strings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// How long an endpoint may take to accept a connection before the next is
/// tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an ordinary call may take once connected.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One etcd client URL, `http://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    host: String,
    port: u16,
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
        })
    }

    fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
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
    /// No endpoint answered: the last one tried, and why.
    Unreachable { endpoint: String, reason: String },
    /// etcd answered, and refused (its message).
    Refused(String),
    /// The call's own time ran out while etcd was reachable (a lock wait).
    TimedOut,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable { endpoint, reason } => {
                write!(f, "etcd at {endpoint} does not answer: {reason}")
            }
            CallError::Refused(message) => write!(f, "etcd says: {message}"),
            CallError::TimedOut => write!(f, "timed out"),
        }
    }
}

/// The etcd cluster, as its client URLs.
#[derive(Debug, Clone)]
pub struct Gateway {
    endpoints: Vec<Endpoint>,
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
        Ok(Gateway { endpoints })
    }

    /// POSTs `body` to `path` on the first endpoint that answers; `timeout`
    /// bounds the call once connected, and an endpoint that takes longer is
    /// given up for the next.
    pub fn call(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, CallError> {
        self.call_until(path, body, timeout, false)
    }

    /// As `call`, but when `slow_is_final`, an endpoint that took the whole
    /// `timeout` ends the call (TimedOut): for calls that wait on purpose.
    fn call_until(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
        slow_is_final: bool,
    ) -> Result<Value, CallError> {
        let mut last = None;
        for endpoint in &self.endpoints {
            let reason = match post(endpoint, path, body, timeout) {
                Ok(answer) => return answer,
                Err(NoAnswer::Slow) if slow_is_final => return Err(CallError::TimedOut),
                Err(NoAnswer::Slow) => format!("no answer within {timeout:?}"),
                Err(NoAnswer::Failed(reason)) => reason,
            };
            log::debug!("{}: {reason}", endpoint.url);
            last = Some(CallError::Unreachable {
                endpoint: endpoint.url.clone(),
                reason,
            });
        }
        Err(last.unwrap_or(CallError::Refused("no endpoint".into())))
    }

    pub fn grant(&self, ttl: i64) -> Result<i64, CallError> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl }), CALL_TIMEOUT)?;
        number(&answer["ID"]).ok_or_else(|| refused(&answer))
    }

    pub fn revoke(&self, lease: i64, timeout: Duration) -> Result<(), CallError> {
        self.call(
            "/v3/lease/revoke",
            &json!({ "ID": lease.to_string() }),
            timeout,
        )
        .map(drop)
    }

    /// Renews the lease once; its remaining TTL, 0 if it is gone.
    pub fn keep_alive(&self, lease: i64, timeout: Duration) -> Result<i64, CallError> {
        let answer = self.call(
            "/v3/lease/keepalive",
            &json!({ "ID": lease.to_string() }),
            timeout,
        )?;
        Ok(number(&answer["result"]["TTL"]).unwrap_or(0))
    }

    /// Creates `key` (with `value`, on `lease`) if no key under `prefix`
    /// exists, in one transaction. The new key's create revision, or None
    /// when another key holds the prefix.
    pub fn create_if_prefix_empty(
        &self,
        prefix: &[u8],
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<Option<i64>, CallError> {
        let body = json!({
            "compare": [{
                "key": BASE64.encode(prefix),
                "range_end": BASE64.encode(prefix_end(prefix)),
                "target": "CREATE",
                "create_revision": "0",
                "result": "EQUAL",
            }],
            "success": [{ "request_put": {
                "key": BASE64.encode(key),
                "value": BASE64.encode(value),
                "lease": lease.to_string(),
            }}],
        });
        let answer = self.call("/v3/kv/txn", &body, CALL_TIMEOUT)?;
        if answer["succeeded"] != json!(true) {
            return Ok(None);
        }
        // The put's revision is the new key's create revision.
        number(&answer["header"]["revision"])
            .map(Some)
            .ok_or_else(|| refused(&answer))
    }

    /// The oldest key under `prefix` (the holder, where keys queue by create
    /// revision): its key, value and create revision.
    pub fn first_under(&self, prefix: &[u8]) -> Result<Option<KeyValue>, CallError> {
        let body = json!({
            "key": BASE64.encode(prefix),
            "range_end": BASE64.encode(prefix_end(prefix)),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
            "limit": "1",
        });
        let answer = self.call("/v3/kv/range", &body, CALL_TIMEOUT)?;
        Ok(answer["kvs"].get(0).and_then(KeyValue::from_json))
    }

    /// The key, if it exists.
    pub fn get(&self, key: &[u8], timeout: Duration) -> Result<Option<KeyValue>, CallError> {
        let answer = self.call(
            "/v3/kv/range",
            &json!({ "key": BASE64.encode(key) }),
            timeout,
        )?;
        Ok(answer["kvs"].get(0).and_then(KeyValue::from_json))
    }

    pub fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), CallError> {
        let body = json!({
            "key": BASE64.encode(key),
            "value": BASE64.encode(value),
            "lease": lease.to_string(),
        });
        self.call("/v3/kv/put", &body, CALL_TIMEOUT).map(drop)
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
        let timeout = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(24 * 3600),
        };
        if timeout.is_zero() {
            return Err(CallError::TimedOut);
        }
        let body = json!({ "name": BASE64.encode(name), "lease": lease.to_string() });
        let answer = self.call_until("/v3/lock/lock", &body, timeout, true)?;
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
    CallError::Refused(
        answer["message"]
            .as_str()
            .or(answer["error"].as_str())
            .map_or_else(|| answer.to_string(), str::to_owned),
    )
}

/// Why an endpoint gave no answer.
enum NoAnswer {
    /// It did not answer within the call's time.
    Slow,
    Failed(String),
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

/// One request on a fresh connection. Err: the endpoint did not answer (try
/// the next); Ok(Err): it answered with an error.
fn post(
    endpoint: &Endpoint,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Result<Value, CallError>, NoAnswer> {
    let mut stream = connect(endpoint)?;
    let io = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NoAnswer::Slow,
        _ => NoAnswer::Failed(err.to_string()),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        endpoint.host,
        endpoint.port,
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let (status, body) = parse_response(&response).ok_or("not an HTTP answer")?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|err| NoAnswer::Failed(err.to_string()))?;
    if status != 200 {
        return Ok(Err(refused(&answer)));
    }
    Ok(Ok(answer))
}

fn connect(endpoint: &Endpoint) -> Result<TcpStream, String> {
    let mut last = format!("{}: no address", endpoint.host);
    for address in endpoint.addresses()? {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err.to_string(),
        }
    }
    Err(last)
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
