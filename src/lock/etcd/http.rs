//! The HTTP/1.1 under the gateway: one POST per call, on the connection an
//! earlier call to the endpoint left open (keep-alive) or a new one (in TLS
//! for an https endpoint), bounded by a deadline that covers the connect,
//! the handshake, every write and every read (an endpoint that dribbles its answer a byte
//! at a time is cut off at the deadline, not timed per read), answers
//! capped in size. A watch's answer is a stream: newline-separated JSON
//! messages in a chunked body, read one at a time as they come.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::tls::{self, Connection};

/// How long an endpoint may take to accept a connection before the next is
/// tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer read (a stream's, all its messages together): etcd's
/// answers to me-only's calls are a few hundred bytes; a larger one is not
/// etcd's (or not sane).
const MAX_ANSWER: usize = 1 << 20;

/// One etcd client URL, `http://HOST:PORT` or `https://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The host's addresses, once resolved for good (see `resolved`).
    addresses: Option<Vec<SocketAddr>>,
}

impl Endpoint {
    /// `url`; one without a scheme (`HOST:PORT`, as etcdctl takes them)
    /// is https if `bare_is_tls`.
    pub fn parse(url: &str, bare_is_tls: bool) -> Result<Endpoint, String> {
        let bad = || format!("'{url}' is not an etcd endpoint (http[s]://HOST:PORT)");
        let (tls, authority) = match url.split_once("://") {
            Some(("http", authority)) => (false, authority),
            Some(("https", authority)) => (true, authority),
            Some(_) => return Err(bad()),
            None => (bare_is_tls, url),
        };
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
            tls,
            addresses: None,
        })
    }

    /// The same endpoint, its host resolved now and for good (or left to
    /// be resolved at each call if it cannot be now).
    pub fn resolved(&self) -> Endpoint {
        Endpoint {
            addresses: self.addresses().ok(),
            ..self.clone()
        }
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

/// Why an endpoint gave no answer that counts: the call moves on to the
/// next.
pub enum NoAnswer {
    /// It did not answer within the call's time.
    Slow,
    Failed(String),
    /// A member that cannot serve (no leader, no quorum): its HTTP status
    /// and etcd's message.
    Unavailable(u16, String),
    /// Something that answers, but not as an etcd client endpoint does (a
    /// peer port, another HTTP server): what it answered.
    NotEtcd(String),
    /// The TLS handshake failed: why, in words that say what to check.
    Tls(String),
    /// The answer is larger than MAX_ANSWER: any member would send the
    /// same, so asking another is no use; a smaller request may fit.
    TooLarge,
}

/// What a request carries besides its body.
#[derive(Clone, Copy, Default)]
pub struct Access<'a> {
    /// For https endpoints.
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
    /// etcd's auth token, sent as the Authorization header.
    pub token: Option<&'a str>,
}

/// What a working member answered: its answer, or its refusal (etcd's
/// message).
pub type Answer = Result<Value, String>;

/// One request, its whole answer read by `deadline`: on the connection an
/// earlier call left in `kept` if there is one, else on a new one; the
/// connection goes back in `kept` if the server leaves it open. A kept
/// connection the server has closed meanwhile (nothing at all comes back
/// on it) makes way for a new one.
pub fn post(
    endpoint: &Endpoint,
    access: Access,
    path: &str,
    body: &Value,
    deadline: Instant,
    kept: &mut Option<Connection>,
) -> Result<Answer, NoAnswer> {
    let request = request(endpoint, access, path, &body.to_string(), true);
    if let Some(mut connection) = kept.take() {
        match exchange(&mut connection, &request, deadline) {
            Err(Exchange::Nothing) => log::trace!("{}: a kept connection was closed", endpoint.url),
            done => return answered(done, connection, kept),
        }
    }
    let mut connection = connect(endpoint, access, deadline)?;
    let done = exchange(&mut connection, &request, deadline);
    answered(done, connection, kept)
}

/// How an exchange on a connection failed.
enum Exchange {
    /// Nothing came back, not a byte: the server had closed it.
    Nothing,
    Failed(NoAnswer),
}

impl From<NoAnswer> for Exchange {
    fn from(no_answer: NoAnswer) -> Exchange {
        Exchange::Failed(no_answer)
    }
}

/// A response: status, body, and whether the connection stays open.
type Response = (u16, Vec<u8>, bool);

/// Judges the answer of an exchange, keeping the connection if it stays
/// open.
fn answered(
    done: Result<Response, Exchange>,
    connection: Connection,
    kept: &mut Option<Connection>,
) -> Result<Answer, NoAnswer> {
    match done {
        Ok((status, body, open)) => {
            if open {
                *kept = Some(connection);
            }
            judge(status, &body)
        }
        Err(Exchange::Nothing) => Err(NoAnswer::Failed(
            "it closed the connection without an answer".into(),
        )),
        Err(Exchange::Failed(no_answer)) => Err(no_answer),
    }
}

/// Sends `request` on `connection` and reads the whole response, by
/// `deadline`.
fn exchange(
    connection: &mut Connection,
    request: &[u8],
    deadline: Instant,
) -> Result<Response, Exchange> {
    let closed = |err: &std::io::Error| {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        matches!(err.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
    };
    connection
        .socket()
        .set_write_timeout(Some(time_left(deadline)?))
        .map_err(io_failure)?;
    if let Err(err) = connection
        .write_all(request)
        .and_then(|()| connection.flush())
    {
        return Err(match closed(&err) {
            true => Exchange::Nothing,
            false => Exchange::Failed(io_failure(err)),
        });
    }
    let mut raw = Vec::new();
    loop {
        if let Some(response) = parse_response(&raw, false) {
            return Ok(response);
        }
        let before = raw.len();
        match read_some(connection, &mut raw, deadline) {
            Ok(()) if raw.len() > before => {}
            Ok(()) if raw.is_empty() => return Err(Exchange::Nothing),
            // The end of an answer that ends with the connection.
            Ok(()) => {
                return parse_response(&raw, true).ok_or_else(|| {
                    Exchange::Failed(NoAnswer::NotEtcd("not an HTTP answer".into()))
                });
            }
            Err(NoAnswer::Failed(_)) if raw.is_empty() => return Err(Exchange::Nothing),
            Err(no_answer) => return Err(Exchange::Failed(no_answer)),
        }
    }
}

/// A streamed answer, as to a watch: JSON messages, one per line.
pub struct Stream {
    socket: Connection,
    /// Read, not yet taken out of its chunks.
    raw: Vec<u8>,
    /// Taken out of its chunks, not yet a whole message.
    body: Vec<u8>,
    read: usize,
}

/// Sends a request whose answer is a stream, and reads the answer's head
/// by `deadline`. The body is `messages`, one after the other (etcd's
/// gateway reads a stream's requests so). An answer that is not a stream
/// (an error) is judged as `post` judges it.
pub fn open_stream(
    endpoint: &Endpoint,
    access: Access,
    path: &str,
    messages: &[Value],
    deadline: Instant,
) -> Result<Result<Stream, String>, NoAnswer> {
    let mut socket = connect(endpoint, access, deadline)?;
    socket
        .socket()
        .set_write_timeout(Some(time_left(deadline)?))
        .map_err(io_failure)?;
    let body: Vec<String> = messages.iter().map(Value::to_string).collect();
    let request = request(endpoint, access, path, &body.join("\n"), false);
    socket
        .write_all(&request)
        .and_then(|()| socket.flush())
        .map_err(io_failure)?;
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            break end;
        }
        read_some(&mut socket, &mut raw, deadline)?;
    };
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| NoAnswer::NotEtcd("not an HTTP answer".into()))?;
    let status = status_of(head);
    if status != Some(200) {
        // An error answer, whole once the server closes the connection.
        read_to_end(&mut socket, &mut raw, deadline)?;
        let (status, body, _) = parse_response(&raw, true)
            .ok_or_else(|| NoAnswer::NotEtcd("not an HTTP answer".into()))?;
        return match judge(status, &body)? {
            Err(message) => Ok(Err(message)),
            Ok(_) => Err(NoAnswer::NotEtcd(format!("HTTP {status}"))),
        };
    }
    if !is_chunked(head) {
        return Err(NoAnswer::NotEtcd("an answer that is not a stream".into()));
    }
    let read = raw.len();
    raw.drain(..head_end + 4);
    Ok(Ok(Stream {
        socket,
        raw,
        body: Vec::new(),
        read,
    }))
}

impl Stream {
    /// The next message, or None if `until` comes first.
    pub fn next(&mut self, until: Instant) -> Result<Option<Value>, NoAnswer> {
        loop {
            if let Some(end) = self.body.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=end).collect();
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|_| NoAnswer::NotEtcd("a stream that is not JSON".into()));
            }
            let ended = dechunk(&mut self.raw, &mut self.body)
                .ok_or_else(|| NoAnswer::NotEtcd("a malformed chunked answer".into()))?;
            if self.body.contains(&b'\n') {
                continue;
            }
            if ended {
                return Err(NoAnswer::Failed("its stream ended".into()));
            }
            let before = self.raw.len();
            match read_some(&mut self.socket, &mut self.raw, until) {
                Ok(()) => {}
                Err(NoAnswer::Slow) => return Ok(None),
                Err(other) => return Err(other),
            }
            if self.raw.len() == before {
                return Err(NoAnswer::Failed("it closed the stream".into()));
            }
            self.read += self.raw.len() - before;
            if self.read > MAX_ANSWER {
                return Err(NoAnswer::TooLarge);
            }
        }
    }
}

/// The request's bytes; `keep_alive` asks the server to leave the
/// connection open after the answer.
fn request(
    endpoint: &Endpoint,
    access: Access,
    path: &str,
    body: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let authorization = match access.token {
        Some(token) => format!("Authorization: {token}\r\n"),
        None => String::new(),
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         {authorization}Content-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        endpoint.host,
        endpoint.port,
        body.len()
    )
    .into_bytes()
}

/// Sorts an answer: etcd's answer, its refusal, or no answer that counts.
fn judge(status: u16, body: &[u8]) -> Result<Answer, NoAnswer> {
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    match (status, answer) {
        (200, Some(answer)) => Ok(Ok(answer)),
        (500..=599, answer) => Err(NoAnswer::Unavailable(
            status,
            answer
                .as_ref()
                .and_then(etcd_message)
                .unwrap_or_else(|| "no message".into()),
        )),
        (_, Some(answer)) if etcd_message(&answer).is_some() => {
            Ok(Err(etcd_message(&answer).unwrap_or_default()))
        }
        // etcd's gateway, with auth on, refuses a client certificate that
        // names a user (CN), in plain text.
        (400, None) if body.starts_with(b"CommonName of client") => Ok(Err(format!(
            "{} (with auth on, etcd's gateway takes only a client certificate \
             without a CommonName)",
            String::from_utf8_lossy(body).trim()
        ))),
        _ => Err(NoAnswer::NotEtcd(format!("HTTP {status}"))),
    }
}

/// The message of an error answer, as etcd's gateway words it (flat, or
/// nested under "error" by some versions).
pub fn etcd_message(answer: &Value) -> Option<String> {
    [
        &answer["message"],
        &answer["error"],
        &answer["error"]["message"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .map(str::to_owned)
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
    if let Some(why) = tls::failure(&err) {
        return NoAnswer::Tls(why);
    }
    match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NoAnswer::Slow,
        _ => NoAnswer::Failed(err.to_string()),
    }
}

/// What TooLarge means, in words.
pub fn too_large() -> String {
    format!("its answer is larger than {} KiB", MAX_ANSWER / 1024)
}

/// Reads until the server closes the connection, by `deadline`.
fn read_to_end(
    stream: &mut Connection,
    answer: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), NoAnswer> {
    loop {
        let before = answer.len();
        read_some(stream, answer, deadline)?;
        if answer.len() == before {
            return Ok(());
        }
    }
}

/// Reads what has come (nothing at the end of the answer), waiting for it
/// until `deadline`; MAX_ANSWER in all at most.
fn read_some(
    stream: &mut Connection,
    into: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), NoAnswer> {
    let mut chunk = [0; 16 * 1024];
    loop {
        stream
            .socket()
            .set_read_timeout(Some(time_left(deadline)?))
            .map_err(io_failure)?;
        match stream.read(&mut chunk) {
            Ok(read) if into.len() + read > MAX_ANSWER => return Err(NoAnswer::TooLarge),
            Ok(read) => {
                into.extend_from_slice(&chunk[..read]);
                return Ok(());
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io_failure(err)),
        }
    }
}

/// A connection to `endpoint`, in TLS if it is https (the handshake then
/// happens with the first write, under its timeout).
fn connect(endpoint: &Endpoint, access: Access, deadline: Instant) -> Result<Connection, NoAnswer> {
    let socket = connect_tcp(endpoint, deadline)?;
    if !endpoint.tls {
        return Ok(Connection::Plain(socket));
    }
    let config = access
        .tls
        .ok_or_else(|| NoAnswer::Tls("no TLS configuration".into()))?;
    Connection::tls(socket, config, &endpoint.host).map_err(NoAnswer::Tls)
}

/// A TCP connection to `endpoint`, with Nagle's algorithm off: a request
/// goes out whole at once, where Nagle held a write back until etcd
/// acknowledged the one before, which etcd delays (~40 ms): a TLS
/// handshake's last flight, a request's head and body. The keeper's revoke
/// came that much after COMMAND's exit, and a launch right after was
/// refused.
fn connect_tcp(endpoint: &Endpoint, deadline: Instant) -> Result<TcpStream, NoAnswer> {
    let mut last = format!("{}: no address", endpoint.host);
    for address in endpoint.addresses().map_err(NoAnswer::Failed)? {
        let timeout = time_left(deadline)?.min(CONNECT_TIMEOUT);
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(io_failure)?;
                return Ok(stream);
            }
            Err(err) => last = err.to_string(),
        }
    }
    Err(NoAnswer::Failed(last))
}

fn find(bytes: &[u8], what: &[u8]) -> Option<usize> {
    bytes.windows(what.len()).position(|w| w == what)
}

fn status_of(head: &str) -> Option<u16> {
    head.split("\r\n").next()?.split(' ').nth(1)?.parse().ok()
}

fn is_chunked(head: &str) -> bool {
    header(head, "transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
}

/// The status code, the body (chunked transfer undone) and whether the
/// connection stays open, of an HTTP/1.1 response, once it is whole: its
/// body as long as Content-Length says, or up to the last chunk, or (with
/// neither) up to the end of the connection, which `at_end` says has come.
fn parse_response(response: &[u8], at_end: bool) -> Option<Response> {
    let head_end = find(response, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..head_end]).ok()?;
    let status = status_of(head)?;
    let mut body = response[head_end + 4..].to_vec();
    let closes =
        header(head, "connection").is_some_and(|value| value.eq_ignore_ascii_case("close"));
    if is_chunked(head) {
        let mut joined = Vec::new();
        return match dechunk(&mut body, &mut joined)? {
            true => Some((status, joined, !closes)),
            false => None,
        };
    }
    match header(head, "content-length").and_then(|length| length.parse::<usize>().ok()) {
        Some(length) if body.len() >= length => {
            body.truncate(length);
            Some((status, body, !closes))
        }
        Some(_) => None,
        None if at_end => Some((status, body, false)),
        None => None,
    }
}

/// The value of the header `name` (lower case) in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Moves the whole chunks at the start of `raw` into `body`: Some(true)
/// once the last (empty) chunk came, Some(false) while more may come, None
/// if `raw` is not chunked transfer.
fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) -> Option<bool> {
    loop {
        let Some(size_end) = find(raw, b"\r\n") else {
            return Some(false);
        };
        let size = std::str::from_utf8(&raw[..size_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        let data = size_end + 2;
        if raw.len() < data + size + 2 {
            return Some(false);
        }
        body.extend_from_slice(&raw[data..data + size]);
        raw.drain(..data + size + 2);
        if size == 0 {
            return Some(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_or_https_host_port() {
        assert_eq!(
            Endpoint::parse("http://[::1]:2379", false).unwrap().host,
            "::1"
        );
        let named = Endpoint::parse("http://etcd-2:2379/", true).unwrap();
        assert_eq!(
            (named.host.as_str(), named.port, named.tls),
            ("etcd-2", 2379, false)
        );
        assert!(Endpoint::parse("https://etcd-2:2379", false).unwrap().tls);
        // No scheme, as etcdctl takes them: TLS where TLS options are given.
        assert!(!Endpoint::parse("10.0.0.5:2379", false).unwrap().tls);
        assert!(Endpoint::parse("10.0.0.5:2379", true).unwrap().tls);
        for bad in [
            "",
            "ftp://h:2379",
            "http://h",
            "http://h:x",
            "http://:1",
            "h",
        ] {
            assert!(Endpoint::parse(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunked_answers_are_joined() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(response, false),
            Some((200, b"{\"a\":1}".to_vec(), true))
        );
        let cut_short = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n";
        assert_eq!(parse_response(cut_short, false), None);
    }

    #[test]
    fn an_answer_is_whole_at_its_length_or_at_the_end() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(plain, false),
            Some((404, b"{}".to_vec(), true))
        );
        assert_eq!(parse_response(&plain[..plain.len() - 1], false), None);
        let closing = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}";
        assert_eq!(
            parse_response(closing, false),
            Some((200, b"{}".to_vec(), false))
        );
        let unframed = b"HTTP/1.1 200 OK\r\n\r\n{}";
        assert_eq!(parse_response(unframed, false), None);
        assert_eq!(
            parse_response(unframed, true),
            Some((200, b"{}".to_vec(), false))
        );
    }

    #[test]
    fn chunks_are_taken_as_they_come_whole() {
        let mut raw = b"3\r\nab\n\r\n5\r\ncd".to_vec();
        let mut body = Vec::new();
        assert_eq!(dechunk(&mut raw, &mut body), Some(false));
        assert_eq!((&body[..], &raw[..]), (&b"ab\n"[..], &b"5\r\ncd"[..]));
        raw.extend_from_slice(b"ef\n\r\n0\r\n\r\n");
        assert_eq!(dechunk(&mut raw, &mut body), Some(true));
        assert_eq!(body, b"ab\ncdef\n");
        assert_eq!(dechunk(&mut b"zz\r\n".to_vec(), &mut body), None);
    }
}
