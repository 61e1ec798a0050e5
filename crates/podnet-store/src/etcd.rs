//! The etcd backend: etcd's v3 API through its JSON gateway (`/v3/kv/*`,
//! `/v3/watch`, `/v3/lease/*`, `/v3/auth/*`), over blocking HTTP or HTTPS
//! (rustls; client certificates and etcd's username/password tokens).
//!
//! Why the gateway and not gRPC: the agent's calls are few and small, a
//! blocking client needs no async runtime, and the binary stays small.
//! Measured (`bench/run.sh agent`, 100k services and 300k endpoints, 2
//! cores): one change reaches the kernel about 1.2 ms after its write
//! began, the watch carrying the value; the first full sync (JSON and
//! base64 for 200k keys, two listings in parallel) takes 2.2 s, within the
//! 3 s the agent is allowed; gRPC could lower only that figure, at the cost
//! of an async runtime and a protobuf stack in the binary. Keys and values
//! travel base64-encoded and 64-bit numbers as strings, as the gateway's
//! JSON mapping prescribes.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::error::StoreError;
use crate::etcd_security::{probe_handshake, tls_failure, Credentials, EtcdSecurity};
use crate::kv::{Changes, KvBackend, Listing, Txn, Waited};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per range request: a page of services (about 400 bytes each) is
/// about a megabyte of JSON, far from any limit, and few round trips.
const PAGE: u64 = 2000;
/// How long a call waits for etcd to elect a leader (etcd answers 503
/// meanwhile); its default election timeout is 1 s.
const ELECTION_WAIT: Duration = Duration::from_secs(5);
/// How often a call retries while etcd elects a leader.
const ELECTION_POLL: Duration = Duration::from_millis(100);
/// How long a watch may take to deliver history that exists.
const HISTORY_WAIT: Duration = Duration::from_secs(2);

/// A client of an etcd cluster, given as one or more member endpoints
/// (`http://HOST:PORT` or, with TLS, `https://HOST:PORT`, comma-separated).
/// Calls go to one member; when it cannot be reached, the next ones are
/// tried in turn.
pub struct EtcdKv {
    endpoints: Vec<String>,
    /// Index of the member calls go to.
    current: AtomicUsize,
    agent: ureq::Agent,
    /// The TLS configuration every connection uses (watches included).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Who we authenticate as, when etcd's authentication is on.
    credentials: Option<Credentials>,
    /// The token etcd gave for `credentials`, until it expires.
    token: Mutex<Option<String>>,
    /// Lease IDs of the keys this client keeps alive.
    leases: Mutex<HashMap<String, String>>,
}

impl EtcdKv {
    /// A client for `endpoints` (comma-separated), plain HTTP without
    /// authentication; nothing is contacted yet.
    pub fn new(endpoints: &str) -> Result<Self, StoreError> {
        Self::with_security(endpoints, &EtcdSecurity::default())
    }

    /// A client for `endpoints` with TLS and credentials. `https://`
    /// endpoints need the CA; TLS files with `http://` endpoints are refused
    /// (they would silently go unused). Files are read now; nothing is
    /// contacted yet.
    pub fn with_security(endpoints: &str, security: &EtcdSecurity) -> Result<Self, StoreError> {
        let list: Vec<String> = endpoints
            .split(',')
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .collect();
        let scheme = |s: &str| list.iter().all(|e| e.starts_with(s));
        let tls = if !list.is_empty() && scheme("https://") {
            Some(security.tls_config()?)
        } else if !list.is_empty() && scheme("http://") {
            if security.uses_tls() {
                return Err(StoreError::Config {
                    field: "etcd-cafile",
                    reason: format!(
                        "TLS files given but {endpoints} is plain http://; use https://"
                    ),
                });
            }
            None
        } else {
            return Err(StoreError::Unreachable {
                endpoint: endpoints.to_string(),
                reason: "give one or more endpoints, all http:// or all https://, comma-separated"
                    .into(),
            });
        };
        Ok(EtcdKv {
            endpoints: list,
            current: AtomicUsize::new(0),
            agent: agent(CALL_TIMEOUT, tls.clone()),
            tls,
            credentials: security.credentials()?,
            token: Mutex::new(None),
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// The member calls go to now.
    fn base(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Moves on to the next member after a transport failure.
    fn fail_over(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// A request to the current member, carrying the auth token when we have one.
    fn post(&self, agent: &ureq::Agent, path: &str, token: Option<&str>) -> ureq::Request {
        let request = agent.post(&format!("{}{path}", self.base()));
        match token {
            Some(token) => request.set("Authorization", token),
            None => request,
        }
    }

    /// One call, to the current member or, if it cannot be reached, to the
    /// others in turn. Every write we send is conditional (a transaction) or
    /// idempotent (a put of the same value), so resending one that did reach
    /// a member that then went away is safe.
    fn call(&self, path: &str, op: &'static str, body: Value) -> Result<Value, StoreError> {
        self.call_as(path, op, body)
    }

    /// [`Self::call`], the reply read straight into `T` (no JSON tree: at
    /// 100k services a listing is 100 MB of JSON). An expired token is
    /// renewed once; a transport failure moves on to the next member (and
    /// back to the first, once); a TLS failure is reported at once (every member shares
    /// the CA, so trying the next one would only say it again).
    fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        op: &'static str,
        body: Value,
    ) -> Result<T, StoreError> {
        self.send(path, op, body, true)
    }

    /// One call as [`Self::call_as`] describes, with the auth token when
    /// `authenticated` (the authentication call itself goes without).
    fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        op: &'static str,
        body: Value,
        authenticated: bool,
    ) -> Result<T, StoreError> {
        let text = body.to_string();
        let mut last = None;
        let mut renewed = false;
        let unavailable_until = Instant::now() + ELECTION_WAIT;
        let mut tries = 0;
        // One more try than members: a pooled connection the member (or a
        // middlebox) closed fails once and is then replaced.
        while tries <= self.endpoints.len() {
            let token = if authenticated { self.token()? } else { None };
            match self
                .post(&self.agent, path, token.as_deref())
                .send_string(&text)
            {
                // Read as a stream: no reply is too big for a buffer (a
                // failure here is a bad reply, not an unreachable store).
                Ok(response) => {
                    return serde_json::from_reader(BufReader::new(response.into_reader()))
                        .map_err(|e| self.protocol(op, format!("reading the reply: {e}")));
                }
                Err(ureq::Error::Status(code, reply)) => {
                    let body = reply.into_string().unwrap_or_default();
                    if !renewed && token.is_some() && body.contains("invalid auth token") {
                        renewed = true;
                        self.forget_token();
                        continue;
                    }
                    // etcd is electing a leader (a member went away): wait
                    // for the election, a bounded while.
                    if code == 503 && Instant::now() < unavailable_until {
                        std::thread::park_timeout(ELECTION_POLL);
                        continue;
                    }
                    return Err(self.status_error(op, code, &body));
                }
                Err(ureq::Error::Transport(t)) => {
                    let error = self.transport_error(&t);
                    if matches!(error, StoreError::Tls { .. }) {
                        return Err(error);
                    }
                    last = Some(error);
                    self.fail_over();
                    tries += 1;
                }
            }
        }
        Err(last.unwrap_or_else(|| self.unreachable("no endpoint".into())))
    }

    /// The auth token to send: none without credentials, else the one we
    /// hold or a fresh one from `/v3/auth/authenticate`.
    fn token(&self) -> Result<Option<String>, StoreError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(Some(token));
        }
        let body = json!({ "name": credentials.user, "password": credentials.password });
        let reply: Value = self.send("/v3/auth/authenticate", "authenticate", body, false)?;
        let token = reply["token"]
            .as_str()
            .ok_or_else(|| self.protocol("authenticate", reply.to_string()))?
            .to_string();
        if let Ok(mut held) = self.token.lock() {
            *held = Some(token.clone());
        }
        Ok(Some(token))
    }

    /// Drops the held token (expired or refused); the next call authenticates.
    fn forget_token(&self) {
        if let Ok(mut held) = self.token.lock() {
            *held = None;
        }
    }

    /// What an HTTP error status means: authentication and permission
    /// refusals say so, with what to do; the rest is a protocol error.
    fn status_error(&self, op: &'static str, code: u16, body: &str) -> StoreError {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v["error"]
                    .as_str()
                    .or(v["message"].as_str())
                    .map(String::from)
            })
            .unwrap_or_else(|| body.trim().to_string());
        let auth = |reason: String| StoreError::Auth {
            endpoint: self.base().to_string(),
            user: self.credentials.as_ref().map(|c| c.user.clone()),
            reason,
        };
        if message.contains("user name is empty") {
            auth("etcd has authentication enabled: give --etcd-username and a password".into())
        } else if message.contains("authentication failed")
            || message.contains("invalid auth token")
        {
            auth(format!(
                "{message} (check --etcd-username and the password)"
            ))
        } else if message.contains("permission denied") {
            auth(format!(
                "{message} ({op}: the user's roles do not grant it)"
            ))
        } else if message.contains("authentication is not enabled") {
            auth(format!(
                "{message} (drop --etcd-username, or enable auth in etcd)"
            ))
        } else {
            let status = if code == 0 {
                String::new()
            } else {
                format!("HTTP {code}: ")
            };
            self.protocol(op, format!("{status}{message}"))
        }
    }

    /// A transport failure: a TLS failure with its meaning, or an unreachable
    /// member. A connection that broke after the TLS handshake is probed
    /// (a member refusing our certificate under TLS 1.3 looks like that).
    fn transport_error(&self, t: &ureq::Transport) -> StoreError {
        let broken = t.kind() == ureq::ErrorKind::Io;
        let tls = tls_failure(t).or_else(|| {
            let config = self.tls.as_ref().filter(|_| broken)?;
            probe_handshake(config, self.base(), CONNECT_TIMEOUT)
        });
        match tls {
            Some(reason) => StoreError::Tls {
                endpoint: self.base().to_string(),
                reason,
            },
            None => self.unreachable(t.to_string()),
        }
    }

    fn unreachable(&self, reason: String) -> StoreError {
        StoreError::Unreachable {
            endpoint: self.endpoints.join(","),
            reason,
        }
    }

    fn protocol(&self, op: &'static str, detail: String) -> StoreError {
        StoreError::Protocol {
            endpoint: self.base().to_string(),
            op,
            detail,
        }
    }

    fn grant_and_put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let ttl_s = ttl.as_secs().max(1);
        let grant = self.call(
            "/v3/lease/grant",
            "lease grant",
            json!({ "TTL": ttl_s.to_string() }),
        )?;
        let id = grant["ID"]
            .as_str()
            .ok_or_else(|| self.protocol("lease grant", grant.to_string()))?
            .to_string();
        self.call(
            "/v3/kv/put",
            "put",
            json!({ "key": b64(key), "value": b64(value), "lease": id }),
        )?;
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(key.to_string(), id);
        }
        Ok(())
    }
}

impl EtcdKv {
    /// Every key under `prefix` in pages, all read at `revision` (0: the
    /// first page's).
    fn list_pages(&self, prefix: &str, revision: u64) -> Result<Listing, StoreError> {
        let end = b64(&prefix_end(prefix));
        let mut from = prefix.to_string();
        let mut listing = Listing {
            revision,
            ..Listing::default()
        };
        loop {
            let mut body =
                json!({ "key": b64(&from), "range_end": end, "limit": PAGE.to_string() });
            if listing.revision > 0 {
                body["revision"] = json!(listing.revision.to_string());
            }
            let page: RangePage = self.call_as("/v3/kv/range", "range", body)?;
            if listing.revision == 0 {
                listing.revision = page.header.revision.parse().unwrap_or(0);
            }
            for kv in page.kvs {
                let key = decode(&kv.key).ok_or_else(|| self.protocol("range", kv.key.clone()))?;
                let value = decode(&kv.value).unwrap_or_default();
                listing.entries.push((key, value));
            }
            match listing.entries.last() {
                Some((last, _)) if page.more => from = format!("{last}\0"),
                _ => return Ok(listing),
            }
        }
    }
}

/// One page of a range reply, as the gateway writes it (false booleans and
/// empty values omitted, numbers as strings).
#[derive(serde::Deserialize)]
struct RangePage {
    header: RangeHeader,
    #[serde(default)]
    kvs: Vec<RangeKv>,
    #[serde(default)]
    more: bool,
}

#[derive(serde::Deserialize)]
struct RangeHeader {
    #[serde(default)]
    revision: String,
}

#[derive(serde::Deserialize)]
struct RangeKv {
    key: String,
    #[serde(default)]
    value: String,
}

/// A base64 text as a UTF-8 string.
fn decode(text: &str) -> Option<String> {
    String::from_utf8(B64.decode(text).ok()?).ok()
}

impl KvBackend for EtcdKv {
    /// Pages of [`PAGE`] keys, all read at the revision of the first page,
    /// so the listing is one consistent snapshot however large it is. A
    /// compaction between pages starts the listing over.
    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.retry_compacted(|| self.list_pages(prefix, 0))
    }

    /// Every prefix at one revision (the store's now), each listed by its
    /// own thread: the gateway's JSON costs more than the round trips, and
    /// two listings share the two cores.
    fn list_many(&self, prefixes: &[&str]) -> Result<Vec<Listing>, StoreError> {
        self.retry_compacted(|| {
            let revision = self.current_revision(prefixes.first().copied().unwrap_or("/"))?;
            std::thread::scope(|s| {
                let threads: Vec<_> = prefixes
                    .iter()
                    .map(|p| s.spawn(move || self.list_pages(p, revision)))
                    .collect();
                threads
                    .into_iter()
                    .map(|t| {
                        t.join().unwrap_or_else(|_| {
                            Err(self.protocol("range", "a listing thread panicked".into()))
                        })
                    })
                    .collect()
            })
        })
    }

    fn transact(&self, txn: &Txn) -> Result<bool, StoreError> {
        let mut compare = Vec::new();
        for k in &txn.absent {
            compare.push(json!({ "key": b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0" }));
        }
        for (k, v) in &txn.equal {
            compare.push(
                json!({ "key": b64(k), "target": "VALUE", "result": "EQUAL", "value": b64(v) }),
            );
        }
        let mut success = Vec::new();
        for k in &txn.deletes {
            success.push(json!({ "request_delete_range": { "key": b64(k) } }));
        }
        for (k, v) in &txn.puts {
            success.push(json!({ "request_put": { "key": b64(k), "value": b64(v) } }));
        }
        let reply = self.call(
            "/v3/kv/txn",
            "txn",
            json!({ "compare": compare, "success": success }),
        )?;
        // The gateway omits false booleans.
        Ok(reply["succeeded"].as_bool().unwrap_or(false))
    }

    fn wait(&self, prefix: &str, after: u64, timeout: Duration) -> Result<Option<u64>, StoreError> {
        Ok(match self.wait_changes(prefix, after, timeout)? {
            Waited::Changed(revision, _) => Some(revision),
            Waited::Quiet => None,
        })
    }

    /// A watch from `after`: its first message with events carries every
    /// change up to its header revision (a watcher that starts behind gets
    /// its history in that message; one that is current gets each
    /// revision's events as they are written), so the notice is the change.
    fn wait_changes(
        &self,
        prefix: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<Waited, StoreError> {
        let reader = self.open_watch(prefix, after, timeout)?;
        wait_for_event(reader, self, after)
    }

    fn refresh_lease(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let known = self.leases.lock().ok().and_then(|l| l.get(key).cloned());
        if let Some(id) = known {
            let reply = self.call(
                "/v3/lease/keepalive",
                "lease keepalive",
                json!({ "ID": id }),
            )?;
            if number(&reply["result"]["TTL"]) > 0 {
                return Ok(());
            }
        }
        // No lease yet, or it expired (etcd was away longer than the TTL).
        self.grant_and_put(key, value, ttl)
    }

    fn endpoint(&self) -> String {
        self.endpoints.join(",")
    }

    /// Below etcd's default `--max-txn-ops` of 128.
    fn max_txn_ops(&self) -> usize {
        120
    }

    /// The changes as a watch from `after` delivers them, with their values:
    /// no listing. etcd sends a late watcher its history in order, in
    /// messages whose header revision says how far they bring it; reading
    /// stops at the store's revision as of the start. `None` when the
    /// history is compacted away or does not come in time: the caller lists.
    fn changes_since(&self, prefix: &str, after: u64) -> Result<Option<Changes>, StoreError> {
        let now = self.current_revision(prefix)?;
        if now <= after {
            return Ok(Some(Changes {
                revision: after,
                entries: Vec::new(),
            }));
        }
        let reader = self.open_watch(prefix, after, HISTORY_WAIT)?;
        read_history(reader, self, now)
    }
}

impl EtcdKv {
    /// Turns etcd's authentication on for podnet, as an operator would with
    /// `etcdctl`: a `root` user with `root_password`, a user `user` whose
    /// one role may read and write the keys under `prefix` (podnet's) and
    /// nothing else, then `auth enable`. For a fresh etcd (the lab's, the
    /// tests'); this client must not hold credentials yet.
    pub fn enable_auth(
        &self,
        root_password: &str,
        user: &str,
        password: &str,
        prefix: &str,
    ) -> Result<(), StoreError> {
        let role = format!("{user}-role");
        let steps = [
            (
                "/v3/auth/user/add",
                json!({ "name": "root", "password": root_password }),
            ),
            (
                "/v3/auth/user/grant",
                json!({ "user": "root", "role": "root" }),
            ),
            (
                "/v3/auth/user/add",
                json!({ "name": user, "password": password }),
            ),
            ("/v3/auth/role/add", json!({ "name": role })),
            (
                "/v3/auth/role/grant",
                json!({ "name": role, "perm": {
                    "permType": "READWRITE", "key": b64(prefix), "range_end": b64(&prefix_end(prefix)),
                }}),
            ),
            ("/v3/auth/user/grant", json!({ "user": user, "role": role })),
            ("/v3/auth/enable", json!({})),
        ];
        for (path, body) in steps {
            self.call(path, "enable auth", body)?;
        }
        Ok(())
    }
}

impl EtcdKv {
    /// Runs a listing again when etcd compacted the revision it was reading
    /// at between two pages (at most three times).
    fn retry_compacted<T>(
        &self,
        mut read: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempts = 0;
        loop {
            match read() {
                Err(StoreError::Protocol { detail, .. })
                    if detail.contains("compacted") && attempts < 3 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// A watch of `prefix` from revision `after + 1`, as a stream of JSON
    /// messages that ends after `timeout` without one. An unreachable
    /// member moves calls on to the next.
    fn open_watch(
        &self,
        prefix: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<BufReader<Box<dyn Read + Send + Sync>>, StoreError> {
        let body = json!({ "create_request": {
            "key": b64(prefix),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": (after + 1).to_string(),
        }});
        let token = self.token()?;
        match self
            .post(
                &agent(timeout, self.tls.clone()),
                "/v3/watch",
                token.as_deref(),
            )
            .send_string(&body.to_string())
        {
            Ok(response) => Ok(BufReader::new(response.into_reader())),
            Err(ureq::Error::Status(code, reply)) => {
                let body = reply.into_string().unwrap_or_default();
                Err(self.refused("watch", code, &body))
            }
            Err(ureq::Error::Transport(t)) => {
                let error = self.transport_error(&t);
                if !matches!(error, StoreError::Tls { .. }) {
                    self.fail_over();
                }
                Err(error)
            }
        }
    }

    /// [`Self::status_error`] for a call that is not retried: a refused
    /// token is forgotten so that the next call authenticates afresh.
    fn refused(&self, op: &'static str, code: u16, body: &str) -> StoreError {
        if body.contains("invalid auth token") {
            self.forget_token();
        }
        self.status_error(op, code, body)
    }

    /// The error a watch stream carried.
    fn watch_error(&self, message: &Value) -> StoreError {
        self.refused("watch", 0, &message.to_string())
    }

    /// The store's revision now (a count-only range: no keys travel).
    fn current_revision(&self, prefix: &str) -> Result<u64, StoreError> {
        let reply = self.call(
            "/v3/kv/range",
            "range",
            json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)), "count_only": true }),
        )?;
        Ok(number(&reply["header"]["revision"]))
    }
}

/// Collects a watch's history up to revision `until`; `None` when it is
/// compacted away or stops coming (the caller then lists everything).
fn read_history(
    reader: impl Read,
    etcd: &EtcdKv,
    until: u64,
) -> Result<Option<Changes>, StoreError> {
    let mut changes = Changes::default();
    let stream = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    for message in stream {
        let message = match message {
            Ok(m) => m,
            Err(e) if e.is_io() => return Ok(None),
            Err(e) => return Err(etcd.protocol("watch", e.to_string())),
        };
        if message.get("error").is_some() {
            return Err(etcd.watch_error(&message));
        }
        let result = &message["result"];
        if number(&result["compact_revision"]) > 0 {
            return Ok(None);
        }
        // The first message confirms the watch; its revision is the store's,
        // not how far the history has come.
        if result["created"].as_bool() == Some(true) && result.get("events").is_none() {
            continue;
        }
        changes.entries.extend(events(result, etcd)?);
        let synced_to = number(&result["header"]["revision"]);
        if synced_to >= until {
            changes.revision = synced_to;
            return Ok(Some(changes));
        }
    }
    Ok(None)
}

/// Reads watch messages until one carries events (or the stream ends or
/// times out); a compacted history is a change without values.
fn wait_for_event(reader: impl Read, etcd: &EtcdKv, after: u64) -> Result<Waited, StoreError> {
    let stream = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    for message in stream {
        let message = match message {
            Ok(m) => m,
            Err(e) if e.is_io() => return Ok(Waited::Quiet),
            Err(e) => return Err(etcd.protocol("watch", e.to_string())),
        };
        if message.get("error").is_some() {
            return Err(etcd.watch_error(&message));
        }
        let result = &message["result"];
        let compacted = number(&result["compact_revision"]);
        if compacted > 0 {
            // What we wanted is compacted away: the caller must re-read everything.
            return Ok(Waited::Changed(compacted.max(after + 1), None));
        }
        if result["events"].as_array().is_some_and(|e| !e.is_empty()) {
            let revision = number(&result["header"]["revision"]).max(after + 1);
            let entries = events(result, etcd)?;
            return Ok(Waited::Changed(
                revision,
                Some(Changes { revision, entries }),
            ));
        }
    }
    Ok(Waited::Quiet)
}

/// The `(key, value or None for a delete)` pairs of one watch message.
fn events(result: &Value, etcd: &EtcdKv) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut out = Vec::new();
    for ev in result["events"].as_array().into_iter().flatten() {
        let kv = &ev["kv"];
        let key = unb64(&kv["key"]).ok_or_else(|| etcd.protocol("watch", kv.to_string()))?;
        // The gateway omits the PUT type (0): only deletes say so.
        let value = match ev["type"].as_str() {
            Some("DELETE") => None,
            _ => Some(unb64(&kv["value"]).unwrap_or_default()),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// An HTTP agent with these timeouts and, for `https://`, this TLS configuration.
fn agent(read_timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(read_timeout)
        .timeout_write(CALL_TIMEOUT);
    match tls {
        Some(tls) => builder.tls_config(tls),
        None => builder,
    }
    .build()
}

/// The key just past every key starting with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    "\0".to_string()
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn unb64(v: &Value) -> Option<String> {
    decode(v.as_str()?)
}

/// etcd's int64 fields arrive as strings (and are omitted when zero).
fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/podnet/"), "/podnet0");
        assert_eq!(number(&json!("42")), 42);
        assert_eq!(number(&Value::Null), 0);
        assert_eq!(unb64(&json!(b64("x/y"))), Some("x/y".into()));
    }
}
