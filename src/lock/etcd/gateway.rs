//! A small blocking client for etcd's v3 JSON gateway (etcd 3.4+), on the
//! HTTP of http.rs. Every call has one deadline that bounds all of it:
//! every endpoint tried, each with its share of the time. Keys and values
//! travel base64-encoded, 64-bit numbers as strings.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::http::{self, Access, Endpoint, NoAnswer};
use super::tls::Connection;
use super::tls::TlsOptions;

/// How long an ordinary call may take, all endpoints tried included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often taking a lock reads and tries its transaction again when
/// keys under its name changed in between.
const TXN_ATTEMPTS: usize = 10;
/// How many keys one range call reads at first: a range is read a page at
/// a time, as etcd's `limit` and `more` allow, because every answer must
/// fit in http.rs's 1 MiB; a page too large for it (long key names) is
/// read again in halves, down to one key. etcd itself would send more (its gateway answered a
/// whole 8 MiB range on 3.4; --max-request-bytes, 1.5 MiB by default,
/// bounds requests, so one value may be that large). A key costs about
/// 110 bytes of JSON beside its name, base64 (4/3 of it): 500 keys fit
/// while names average under 1.4 KiB. Values are read with the keys only
/// where they are me-only's own (a lock's line), never for --list's whole
/// keyspace, where another program's values may be of any size.
const PAGE_KEYS: usize = 500;
/// How often a paged read starts again when etcd compacted the revision
/// its first page was read at before the last one was.
const PAGED_READ_ATTEMPTS: usize = 3;

/// The least time a call made under a wait's limit is given (see
/// `Gateway::limited`).
const LIMITED_CALL: Duration = Duration::from_secs(1);

/// The deadline of an ordinary call made now.
pub fn soon() -> Instant {
    Instant::now() + CALL_TIMEOUT
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint answered as a working etcd member: why not, for the last
    /// one tried, naming it.
    Unreachable(String),
    /// etcd answered, and refused (its message).
    Refused(String),
    /// etcd refused to log the user in (its message).
    LoginRefused { user: String, message: String },
    /// The answer was too large to read (why, naming the endpoint): a
    /// range may be read again in smaller pages.
    TooLarge(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) | CallError::TooLarge(why) => write!(f, "{why}"),
            CallError::Refused(message) => write!(f, "etcd says: {message}"),
            CallError::LoginRefused { user, message } => {
                write!(f, "etcd refused to log in user {user}: {message}")
            }
        }
    }
}

/// Who me-only is to a cluster with auth enabled.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, password hidden)", self.user)
    }
}

/// The etcd cluster, as its client URLs.
#[derive(Debug, Clone)]
pub struct Gateway {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last, tried first next time: one that
    /// failed costs its share of a call's time once, not every call.
    preferred: Cell<usize>,
    /// When the request that got the last answer was sent (not when its
    /// call began, endpoints that failed first included): etcd acted on it
    /// later, so a lease it granted or renewed lasts its TTL from then.
    sent: Cell<Instant>,
    /// For https endpoints.
    tls: Option<Arc<rustls::ClientConfig>>,
    login: Option<Login>,
    /// The auth token of the last login, sent with every call.
    token: RefCell<Option<String>>,
    /// Connections the endpoints left open, for the next call.
    kept: Kept,
    /// A bound on every call's deadline: a bounded wait's (see
    /// `limit_calls_to`).
    limit: Cell<Option<Instant>>,
}

/// A connection per endpoint, kept open between calls (HTTP keep-alive):
/// the keeper renews without a new TCP and TLS handshake each time. Never
/// shared: a copy of the gateway (the keeper's) starts with none.
#[derive(Default)]
struct Kept(RefCell<Vec<Option<Connection>>>);

impl Kept {
    /// Runs `call` with endpoint `index`'s kept connection (None if none).
    fn with<T>(&self, index: usize, call: impl FnOnce(&mut Option<Connection>) -> T) -> T {
        let mut kept = self.0.borrow_mut();
        if kept.len() <= index {
            kept.resize_with(index + 1, || None);
        }
        call(&mut kept[index])
    }
}

impl Clone for Kept {
    fn clone(&self) -> Kept {
        Kept::default()
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.0.borrow().iter().flatten().count();
        write!(f, "Kept({open} open)")
    }
}

impl Gateway {
    /// `http://a:2379,https://b:2379`; one without a scheme (`b:2379`) is
    /// https if `bare_is_tls`.
    pub fn parse(list: &str, bare_is_tls: bool) -> Result<Gateway, String> {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| Endpoint::parse(url, bare_is_tls))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        Ok(Gateway {
            endpoints,
            preferred: Cell::new(0),
            sent: Cell::new(Instant::now()),
            tls: None,
            login: None,
            token: RefCell::new(None),
            kept: Kept::default(),
            limit: Cell::new(None),
        })
    }

    /// The same cluster reached with `tls` (its files read now, where an
    /// endpoint is https) and logged in to as `login`: Err says which file
    /// could not be used.
    pub fn with_access(self, tls: &TlsOptions, login: Option<Login>) -> Result<Gateway, String> {
        let tls = match self.endpoints.iter().any(|endpoint| endpoint.tls) {
            true => Some(tls.config()?),
            false => None,
        };
        Ok(Gateway { tls, login, ..self })
    }

    /// The user logged in as, if any.
    pub fn user(&self) -> Option<&str> {
        self.login.as_ref().map(|login| login.user.as_str())
    }

    /// The same cluster, each endpoint's host resolved now and for good:
    /// for the keeper, whose renewals must fit a deadline that a name
    /// lookup (which cannot be bounded) could overrun.
    pub fn resolved(&self) -> Gateway {
        let endpoints = self.endpoints.iter().map(Endpoint::resolved).collect();
        Gateway {
            endpoints,
            // A keeper's renewals have deadlines of their own, never a
            // wait's that is over.
            limit: Cell::new(None),
            ..self.clone()
        }
    }

    /// Every call made from now on ends by `deadline` at the latest (None:
    /// by its own deadline alone): a bounded wait must not last longer
    /// for an etcd that does not answer.
    pub fn limit_calls_to(&self, deadline: Option<Instant>) {
        self.limit.set(deadline);
    }

    /// `deadline`, or the limit set, whichever comes first; but a call gets
    /// LIMITED_CALL at least, so that the last try of a wait (or the only
    /// one of `--timeout 0`), made as its deadline comes, can still be
    /// answered.
    fn limited(&self, deadline: Instant) -> Instant {
        self.limit.get().map_or(deadline, |limit| {
            deadline.min(limit.max(Instant::now() + LIMITED_CALL))
        })
    }

    /// POSTs `body` to `path`, trying endpoint after endpoint until one
    /// answers as a working member, all before `deadline`.
    pub fn call(&self, path: &str, body: &Value, deadline: Instant) -> Result<Value, CallError> {
        let deadline = self.limited(deadline);
        self.logged_in(deadline, |access| {
            self.on_any_endpoint(deadline, |index, endpoint, share| {
                self.post(index, endpoint, access, path, body, share)
            })
        })
    }

    /// POSTs on endpoint `index`, on the connection kept for it if any.
    fn post(
        &self,
        index: usize,
        endpoint: &Endpoint,
        access: Access,
        path: &str,
        body: &Value,
        share: Instant,
    ) -> Result<http::Answer, NoAnswer> {
        self.kept.with(index, |kept| {
            http::post(endpoint, access, path, body, share, kept)
        })
    }

    /// Runs `call` with the auth token, logging in first if a login is
    /// given and no token held, and once more after a new login if etcd
    /// says the token is no longer good (it expired, or the auth store
    /// changed), all before `deadline`.
    fn logged_in<T>(
        &self,
        deadline: Instant,
        call: impl Fn(Access) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let Some(login) = &self.login else {
            return call(self.access(None));
        };
        let held = self.token.borrow().clone();
        let token = match held {
            Some(token) => token,
            None => self.log_in(login, deadline)?,
        };
        match call(self.access(Some(&token))) {
            Err(CallError::Refused(message)) if is_stale_token(&message) => {
                log::debug!("etcd: {message}: logging in again");
                let token = self.log_in(login, deadline)?;
                call(self.access(Some(&token)))
            }
            other => other,
        }
    }

    fn access<'a>(&'a self, token: Option<&'a str>) -> Access<'a> {
        Access {
            tls: self.tls.as_ref(),
            token,
        }
    }

    /// Logs in as `login` and keeps the token for later calls.
    fn log_in(&self, login: &Login, deadline: Instant) -> Result<String, CallError> {
        let body = json!({ "name": login.user, "password": login.password });
        let answer = self
            .on_any_endpoint(deadline, |index, endpoint, share| {
                let path = "/v3/auth/authenticate";
                self.post(index, endpoint, self.access(None), path, &body, share)
            })
            .map_err(|err| match err {
                CallError::Refused(message) => CallError::LoginRefused {
                    user: login.user.clone(),
                    message,
                },
                other => other,
            })?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| refused(&answer))?
            .to_owned();
        *self.token.borrow_mut() = Some(token.clone());
        Ok(token)
    }

    /// Runs `attempt` on endpoint after endpoint until one answers as a
    /// working member, all before `deadline`, the one that answered last
    /// first. Each gets an equal share of the time left, so that a silent
    /// one leaves time for the next.
    fn on_any_endpoint<T>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut(usize, &Endpoint, Instant) -> Result<Result<T, String>, NoAnswer>,
    ) -> Result<T, CallError> {
        let mut last = None;
        // An answer too large may be one endpoint's fault, so the others
        // are asked too; if none answered, a range can be read again in
        // smaller pages.
        let mut too_large = None;
        let count = self.endpoints.len();
        for tried in 0..count {
            let index = (self.preferred.get() + tried) % count;
            let endpoint = &self.endpoints[index];
            let started = Instant::now();
            let untried = (count - tried) as u32;
            let share = started + deadline.saturating_duration_since(started) / untried;
            let no_answer = match attempt(index, endpoint, share) {
                Ok(answer) => {
                    self.preferred.set(index);
                    self.sent.set(started);
                    return answer.map_err(CallError::Refused);
                }
                Err(no_answer) => no_answer,
            };
            let large = matches!(no_answer, NoAnswer::TooLarge);
            let why = why_not(endpoint, no_answer, started);
            log::debug!("{why}");
            if large {
                too_large = Some(CallError::TooLarge(why.clone()));
            }
            last = Some(CallError::Unreachable(why));
        }
        Err(too_large
            .or(last)
            .unwrap_or(CallError::Refused("no endpoint".into())))
    }

    /// When the request that got the last answer was sent.
    pub fn last_sent(&self) -> Instant {
        self.sent.get()
    }

    /// Makes the endpoint after the one that answered last the first to be
    /// tried: after a call that got no answer, the next starts elsewhere
    /// (a member that holds requests while it has no leader costs a share
    /// of one call, not of every call).
    pub fn prefer_next(&self) {
        self.preferred
            .set((self.preferred.get() + 1) % self.endpoints.len());
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
    /// again if something did (a nested lock's key may have).
    pub fn create_if_no_holder(
        &self,
        prefix: &[u8],
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<Created, CallError> {
        for _ in 0..TXN_ATTEMPTS {
            let (read_at, holders) = self.lock_keys(prefix, soon())?;
            if let Some(holder) = holders.into_iter().next() {
                return Ok(Created::Held { holder, read_at });
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
                    .map(Created::Ours)
                    .ok_or_else(|| refused(&answer));
            }
        }
        Err(CallError::Refused(format!(
            "the keys under the lock changed {TXN_ATTEMPTS} times while it was taken"
        )))
    }

    /// Rewrites the holder's key with `value`, on its own lease, if it is
    /// still the key it was (same create revision): how --replace asks the
    /// holder's keeper to stop it. Whether it was.
    pub fn mark_holder(&self, holder: &KeyValue, value: &[u8]) -> Result<bool, CallError> {
        self.put_if_still(holder, value, false)
    }

    /// Rewrites the holder's key with `value` as mark_holder does, but only
    /// if it also still holds the value it was read with: a --replace mark
    /// put meanwhile is kept. Whether it was.
    pub fn rewrite_unchanged(&self, holder: &KeyValue, value: &[u8]) -> Result<bool, CallError> {
        self.put_if_still(holder, value, true)
    }

    fn put_if_still(
        &self,
        holder: &KeyValue,
        value: &[u8],
        same_value: bool,
    ) -> Result<bool, CallError> {
        let key = BASE64.encode(&holder.key);
        let mut compare = vec![json!({
            "key": key,
            "target": "CREATE",
            "create_revision": holder.create_revision.to_string(),
            "result": "EQUAL",
        })];
        if same_value {
            compare.push(json!({
                "key": key,
                "target": "VALUE",
                "value": BASE64.encode(&holder.value),
                "result": "EQUAL",
            }));
        }
        let body = json!({
            "compare": compare,
            "success": [{ "request_put": {
                "key": key,
                "value": BASE64.encode(value),
                "lease": holder.lease.to_string(),
            }}],
        });
        let answer = self.call("/v3/kv/txn", &body, soon())?;
        Ok(answer["succeeded"] == json!(true))
    }

    /// The TTL a lease was granted with (0 if it is gone).
    pub fn granted_ttl(&self, lease: i64) -> Result<i64, CallError> {
        let answer = self.call(
            "/v3/lease/timetolive",
            &json!({ "ID": lease.to_string() }),
            soon(),
        )?;
        Ok(number(&answer["grantedTTL"]).unwrap_or(0))
    }

    /// The oldest lock key under `prefix` (the holder, where keys queue by
    /// create revision): its key, value and create revision.
    pub fn first_under(&self, prefix: &[u8]) -> Result<Option<KeyValue>, CallError> {
        Ok(self.lock_keys(prefix, soon())?.1.into_iter().next())
    }

    /// The keys of the lock `prefix` names, oldest first, and the revision
    /// they were read at: those right under `prefix` (`NAME/<lease>`, as
    /// me-only and etcd's lock service make them), not those of a lock
    /// nested in it (`NAME/inner/<lease>`), which lie under `prefix` too.
    pub fn lock_keys(
        &self,
        prefix: &[u8],
        deadline: Instant,
    ) -> Result<(i64, Vec<KeyValue>), CallError> {
        let (read_at, mut keys) = self.oldest_first(prefix, deadline)?;
        keys.retain(|kv| !kv.key[prefix.len().min(kv.key.len())..].contains(&b'/'));
        Ok((read_at, keys))
    }

    /// Every key that starts with `prefix` (all, for an empty one), oldest
    /// first, and the revision they were read at, all by `deadline`.
    fn oldest_first(
        &self,
        prefix: &[u8],
        deadline: Instant,
    ) -> Result<(i64, Vec<KeyValue>), CallError> {
        self.paged(prefix, Read::KeysAndValues, &|| deadline)
    }

    /// Every key that starts with `prefix` (all, for an empty one), oldest
    /// first, without their values (empty here): for --list, which reads
    /// the values of the holders alone. Each page has a call's time.
    pub fn keys_starting_with(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, CallError> {
        Ok(self.paged(prefix, Read::KeysOnly, &soon)?.1)
    }

    /// The keys that start with `prefix`, read a page of PAGE_KEYS at a
    /// time in key order, every page at the revision of the first so that
    /// together they are one moment's keys, then sorted oldest first; and
    /// that revision. A page's call must end by `deadline()`, asked as it
    /// starts.
    fn paged(
        &self,
        prefix: &[u8],
        read: Read,
        deadline: &dyn Fn() -> Instant,
    ) -> Result<(i64, Vec<KeyValue>), CallError> {
        let mut attempts = 1;
        loop {
            match self.pages(prefix, read, deadline) {
                Err(CallError::Refused(message))
                    if is_compacted(&message) && attempts < PAGED_READ_ATTEMPTS =>
                {
                    log::debug!("etcd: {message}: reading the range again");
                    attempts += 1;
                }
                Ok((read_at, mut keys)) => {
                    keys.sort_by_key(|kv| kv.create_revision);
                    return Ok((read_at, keys));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One pass of `paged`: the pages, in key order.
    fn pages(
        &self,
        prefix: &[u8],
        read: Read,
        deadline: &dyn Fn() -> Instant,
    ) -> Result<(i64, Vec<KeyValue>), CallError> {
        // etcd takes the key "\0" with range end "\0" as the whole keyspace;
        // an empty key is refused.
        let mut from: Vec<u8> = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.to_vec()
        };
        let end = BASE64.encode(prefix_end(prefix));
        let mut read_at: Option<i64> = None;
        let mut keys = Vec::new();
        let mut limit = PAGE_KEYS;
        loop {
            let mut body = json!({
                "key": BASE64.encode(&from),
                "range_end": end,
                "limit": limit.to_string(),
                "keys_only": read == Read::KeysOnly,
            });
            if let Some(revision) = read_at {
                body["revision"] = json!(revision.to_string());
            }
            let answer = match self.call("/v3/kv/range", &body, deadline()) {
                Err(CallError::TooLarge(why)) if limit > 1 => {
                    log::debug!("{why}: reading {} keys a page", limit / 2);
                    limit /= 2;
                    continue;
                }
                answer => answer?,
            };
            let revision = number(&answer["header"]["revision"]).ok_or_else(|| refused(&answer))?;
            let pinned = *read_at.get_or_insert(revision);
            let page: Vec<KeyValue> = answer["kvs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(KeyValue::from_json)
                .collect();
            let Some(last) = page.last() else {
                return Ok((pinned, keys));
            };
            // The next page starts right after the last key of this one.
            from = [last.key.as_slice(), &[0]].concat();
            keys.extend(page);
            if answer["more"] != json!(true) {
                return Ok((pinned, keys));
            }
        }
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

    /// Puts `key` (new: its lease is fresh) with `value` on `lease`; the
    /// put's revision, which is the new key's create revision.
    pub fn put_new(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, CallError> {
        let body = json!({
            "key": BASE64.encode(key),
            "value": BASE64.encode(value),
            "lease": lease.to_string(),
        });
        let answer = self.call("/v3/kv/put", &body, soon())?;
        number(&answer["header"]["revision"]).ok_or_else(|| refused(&answer))
    }

    /// Waits until one of `keys` is deleted (or changed) after `revision`,
    /// or until `until`: a watch of each, on one stream. The watches are
    /// made on the first endpoint that makes them within its share of the
    /// time, and waited on to the end.
    pub fn watch(
        &self,
        keys: &[&[u8]],
        revision: i64,
        until: Instant,
    ) -> Result<Watched, CallError> {
        let until = self.limited(until);
        if until <= Instant::now() {
            return Ok(Watched::Quiet);
        }
        let watches: Vec<Value> = keys
            .iter()
            .map(|key| {
                json!({ "create_request": {
                    "key": BASE64.encode(key),
                    "start_revision": (revision + 1).to_string(),
                    "filters": ["NOPUT"],
                }})
            })
            .collect();
        self.logged_in(until, |access| {
            self.on_any_endpoint(until, |_, endpoint, share| {
                watch_on(endpoint, access, &watches, share, until)
            })
        })
    }
}

/// The `watches` on `endpoint`, made by `share`, waited on until `until`.
fn watch_on(
    endpoint: &Endpoint,
    access: Access,
    watches: &[Value],
    share: Instant,
    until: Instant,
) -> Result<Result<Watched, String>, NoAnswer> {
    let started = Instant::now();
    let mut stream = match http::open_stream(endpoint, access, "/v3/watch", watches, share)? {
        Ok(stream) => stream,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // etcd says first that it made each watch, at once; a watch it
    // refused (no permission, a stale token) it makes and cancels.
    for _ in watches {
        match stream.next(share)? {
            Some(made) if made["result"]["created"] == json!(true) => {
                if let Some(reason) = made["result"]["cancel_reason"].as_str() {
                    return Ok(Err(reason.to_owned()));
                }
            }
            Some(other) => return Ok(Ok(watch_news(&other))),
            None => return Err(NoAnswer::Slow),
        }
    }
    Ok(Ok(loop {
        match stream.next(until) {
            Ok(None) => break Watched::Quiet,
            Ok(Some(news)) => match watch_news(&news) {
                Watched::Quiet => continue,
                changed => break changed,
            },
            // The watch broke (the member went away): look again.
            Err(broken) => break Watched::Broken(why_not(endpoint, broken, started)),
        }
    }))
}

/// Whether etcd's refusal says that the revision asked for is gone
/// (compacted away).
fn is_compacted(message: &str) -> bool {
    message.contains("required revision has been compacted")
}

/// What a range call reads of each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    KeysAndValues,
    KeysOnly,
}

/// Whether etcd's refusal says the token must be renewed by a new login.
fn is_stale_token(message: &str) -> bool {
    message.contains("invalid auth token") || message.contains("revision of auth store is old")
}

/// How a watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Watched {
    /// Nothing happened to the key by the time given.
    Quiet,
    /// The key changed (was deleted), or etcd cancelled the watch (its
    /// history was compacted): look again.
    Changed,
    /// The watch's connection broke (why): look again.
    Broken(String),
}

/// Why `endpoint`, asked at `started`, gave no answer that counts.
fn why_not(endpoint: &Endpoint, no_answer: NoAnswer, started: Instant) -> String {
    match no_answer {
        NoAnswer::Slow => format!(
            "etcd at {} does not answer: no answer within {:.1} s",
            endpoint.url,
            started.elapsed().as_secs_f64()
        ),
        NoAnswer::Failed(reason) => format!("etcd at {} does not answer: {reason}", endpoint.url),
        NoAnswer::Unavailable(status, message) => format!(
            "etcd at {} is unavailable (HTTP {status}): {message}",
            endpoint.url
        ),
        NoAnswer::NotEtcd(what) => {
            format!("{} is not an etcd client endpoint ({what})", endpoint.url)
        }
        NoAnswer::Tls(why) => format!("etcd at {}: {why}", endpoint.url),
        NoAnswer::TooLarge => format!("etcd at {}: {}", endpoint.url, http::too_large()),
    }
}

/// What one message of a watch says.
fn watch_news(message: &Value) -> Watched {
    let result = &message["result"];
    let has_events = result["events"].as_array().is_some_and(|e| !e.is_empty());
    if has_events || result["canceled"] == json!(true) || message.get("error").is_some() {
        Watched::Changed
    } else {
        Watched::Quiet
    }
}

/// How `create_if_no_holder` ended.
#[derive(Debug)]
pub enum Created {
    /// The key was created: its create revision.
    Ours(i64),
    /// Another key holds the lock: the oldest, as read at revision
    /// `read_at`.
    Held { holder: KeyValue, read_at: i64 },
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
    CallError::Refused(http::etcd_message(answer).unwrap_or_else(|| answer.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_host_port() {
        let gateway = Gateway::parse("http://127.0.0.1:2379, http://etcd-2:2379/", false).unwrap();
        assert_eq!(gateway.endpoints[0].host, "127.0.0.1");
        assert_eq!(gateway.endpoints[1].host, "etcd-2");
        assert_eq!(gateway.endpoints[1].port, 2379);
        for bad in ["", " , ", "http://h:1,ftp://h:2"] {
            assert!(Gateway::parse(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_end_raises_the_last_byte() {
        assert_eq!(prefix_end(b"lock/"), b"lock0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
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
