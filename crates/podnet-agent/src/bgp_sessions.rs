//! Watches BIRD's BGP sessions over its control socket: logs every change
//! of a session's state, and asks often while sessions are coming up.
//!
//! Asking often is what keeps a join under a second. BIRD 2.0.12 (Debian
//! 12) sends a new session's first routes from its work queue, and an event
//! scheduled there does not wake its poll loop: the UPDATE waits for BIRD's
//! next timer or socket event, up to the keepalive time (fixed upstream in
//! BIRD 2.14, "IO: Fix race condition in event processing"). Any command on
//! the control socket wakes the loop, so while a session is new or has just
//! come up the watcher asks every [`FAST`]; otherwise every [`SLOW`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podnet_bgp::{BirdControl, Protocol};

/// How often to ask while sessions are settling.
pub const FAST: Duration = Duration::from_millis(20);
/// How often to ask otherwise (the longest a session that came back up
/// after a flap may wait for its first UPDATE).
pub const SLOW: Duration = Duration::from_millis(500);
/// How long a new session is watched closely for coming up.
const NEW_SESSION: Duration = Duration::from_secs(10);
/// How long a session that came up is watched closely (its first routes go
/// out on the first wake-up after BIRD has fed them to the session).
const JUST_UP: Duration = Duration::from_millis(500);

/// A session's state as `show protocols` gives it: `Established`, `Active`,
/// `Connect`, `Idle`, ... (the first word of BGP's info column).
fn session_state(p: &Protocol) -> String {
    p.info
        .split_whitespace()
        .next()
        .unwrap_or(p.state.as_str())
        .to_string()
}

/// One change the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// A session was configured (with its first state).
    Added(String, String),
    /// A session changed state: name, from, to, BIRD's detail.
    Changed(String, String, String, String),
    /// A session was removed from the configuration.
    Removed(String),
}

/// What the watcher knows between two looks: each session's state, and
/// until when to keep asking often.
#[derive(Debug, Default)]
pub struct SessionWatch {
    states: BTreeMap<String, String>,
    fast_until: Option<Instant>,
}

impl SessionWatch {
    /// Takes in one `show protocols` at `now`: the changes since the last
    /// look, and how long to wait before the next.
    pub fn look(&mut self, protocols: &[Protocol], now: Instant) -> (Vec<SessionChange>, Duration) {
        let mut changes = Vec::new();
        let mut seen = BTreeMap::new();
        for p in protocols.iter().filter(|p| p.proto == "BGP") {
            let state = session_state(p);
            match self.states.get(&p.name) {
                None => {
                    changes.push(SessionChange::Added(p.name.clone(), state.clone()));
                    self.hurry(
                        now + if state == "Established" {
                            JUST_UP
                        } else {
                            NEW_SESSION
                        },
                    );
                }
                Some(old) if *old != state => {
                    let detail = p.info.trim_start_matches(state.as_str()).trim().to_string();
                    changes.push(SessionChange::Changed(
                        p.name.clone(),
                        old.clone(),
                        state.clone(),
                        detail,
                    ));
                    if state == "Established" {
                        self.hurry(now + JUST_UP);
                    }
                }
                Some(_) => {}
            }
            seen.insert(p.name.clone(), state);
        }
        for gone in self.states.keys().filter(|n| !seen.contains_key(*n)) {
            changes.push(SessionChange::Removed(gone.clone()));
        }
        self.states = seen;
        let fast = self.fast_until.is_some_and(|t| now < t);
        (changes, if fast { FAST } else { SLOW })
    }

    /// Keeps asking often until at least `until`.
    fn hurry(&mut self, until: Instant) {
        self.fast_until = Some(self.fast_until.map_or(until, |t| t.max(until)));
    }
}

/// Watches the sessions of the BIRD on `socket` until `halt`, logging their
/// changes. A BIRD not (yet) answering is waited for quietly: the
/// reconciler starts it and reports its failures.
pub(crate) fn run_session_watch(socket: &Path, halt: &AtomicBool) {
    let mut watch = SessionWatch::default();
    let mut control: Option<BirdControl> = None;
    while !halt.load(Ordering::Relaxed) {
        if control.is_none() {
            control = BirdControl::connect(socket).ok();
        }
        let wait = match control.as_mut().map(BirdControl::show_protocols) {
            Some(Ok(protocols)) => {
                let (changes, wait) = watch.look(&protocols, Instant::now());
                changes.iter().for_each(log_change);
                wait
            }
            Some(Err(e)) => {
                tracing::debug!(target: "podnet-agent", "BGP sessions: {e}");
                control = None;
                SLOW
            }
            None => SLOW,
        };
        std::thread::park_timeout(wait);
    }
}

fn log_change(change: &SessionChange) {
    match change {
        SessionChange::Added(name, state) => {
            tracing::info!(target: "podnet-agent", "BGP session {name}: {state}")
        }
        SessionChange::Changed(name, from, to, detail) if detail.is_empty() => {
            tracing::info!(target: "podnet-agent", "BGP session {name}: {from} -> {to}")
        }
        SessionChange::Changed(name, from, to, detail) => {
            tracing::info!(target: "podnet-agent", "BGP session {name}: {from} -> {to} ({detail})")
        }
        SessionChange::Removed(name) => {
            tracing::info!(target: "podnet-agent", "BGP session {name}: removed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgp(name: &str, info: &str) -> Protocol {
        Protocol {
            name: name.into(),
            proto: "BGP".into(),
            table: "---".into(),
            state: if info == "Established" { "up" } else { "start" }.into(),
            since: "12:00:00.000".into(),
            info: info.into(),
        }
    }

    #[test]
    fn a_new_session_is_watched_closely_until_shortly_after_it_is_up() {
        let (mut w, t0) = (SessionWatch::default(), Instant::now());
        let (changes, wait) = w.look(&[bgp("tor", "Active")], t0);
        assert_eq!(
            changes,
            vec![SessionChange::Added("tor".into(), "Active".into())]
        );
        assert_eq!(wait, FAST);
        let t1 = t0 + Duration::from_secs(1);
        let (changes, wait) = w.look(&[bgp("tor", "Established")], t1);
        assert_eq!(
            changes,
            vec![SessionChange::Changed(
                "tor".into(),
                "Active".into(),
                "Established".into(),
                String::new()
            )]
        );
        assert_eq!(wait, FAST);
        // Past the new-session window, a session that is up is asked slowly.
        let (changes, wait) = w.look(&[bgp("tor", "Established")], t0 + NEW_SESSION);
        assert!(changes.is_empty());
        assert_eq!(wait, SLOW);
    }

    #[test]
    fn a_session_coming_back_up_is_watched_closely_for_a_moment() {
        let (mut w, t0) = (SessionWatch::default(), Instant::now());
        w.look(&[bgp("tor", "Established")], t0);
        let later = t0 + Duration::from_secs(60);
        let (_, wait) = w.look(
            &[bgp("tor", "Active        Socket: Connection refused")],
            later,
        );
        assert_eq!(wait, SLOW, "a session going down needs no hurry");
        let (changes, wait) = w.look(&[bgp("tor", "Established")], later);
        assert_eq!(changes.len(), 1);
        assert_eq!(wait, FAST);
        let (_, wait) = w.look(&[bgp("tor", "Established")], later + JUST_UP);
        assert_eq!(wait, SLOW);
    }

    #[test]
    fn removed_sessions_and_other_protocols() {
        let (mut w, t0) = (SessionWatch::default(), Instant::now());
        let device = Protocol {
            proto: "Device".into(),
            ..bgp("device1", "")
        };
        let (changes, _) = w.look(&[device.clone(), bgp("node2", "Connect")], t0);
        assert_eq!(
            changes,
            vec![SessionChange::Added("node2".into(), "Connect".into())]
        );
        let (changes, _) = w.look(&[device], t0);
        assert_eq!(changes, vec![SessionChange::Removed("node2".into())]);
    }
}
