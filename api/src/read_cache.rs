//! Per-process memory of credential checks and generation pages: the reads nearly every
//! request makes (its credential check) or repeats (a client polling its list) skip the
//! database while nothing they depend on has changed.
//!
//! Correctness rests on invalidation, expiry is only a backstop:
//! - triggers on the tables these reads come from NOTIFY [`CHANNEL`] with the user's id on
//!   commit (`a:<id>` or `g:<id>`, migration `000140`), whichever process or tool made the
//!   change;
//! - a change made in this process marks its user as being written ([`ReadCache::writing`])
//!   from before it touches anything until after it committed, so nothing cached here is
//!   served while the change may already be visible elsewhere;
//! - every read takes a [`Stamp`] before it queries, and its result is kept only if no
//!   invalidation of its user arrived since, so an answer read before a change never lands
//!   after the change's invalidation;
//! - while the LISTEN connection is down, nothing is served or kept.
//!
//! A change committed by another process is therefore seen here once its notification
//! arrives (a fraction of a millisecond on one host).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntCounterVec};
use uuid::Uuid;

pub const CHANNEL: &str = "gi2_changes";
/// Even an entry nothing invalidated is read again from the database after this long (and a
/// credential's "last used" time is then written, see `auth::extract`).
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Pages kept per user (status filter × cursor × limit); a user over it starts afresh.
const PAGES_PER_USER: usize = 16;

/// A session found valid: it stays so until its expiry unless a notification says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCheck {
    pub expires_at: DateTime<Utc>,
}

/// An API key found valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyCheck {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Taken before a read queries the database; see the module notes.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(u64);

pub struct ReadCache {
    /// Users with entries at most; 0 turns the cache off.
    capacity: usize,
    inner: Mutex<Inner>,
    /// Hits and misses per kind, resolved once (a labelled lookup per request costs a lock).
    lookups: [[IntCounter; 2]; 3],
}

#[derive(Clone, Copy)]
enum Kind {
    Session,
    ApiKey,
    Page,
}

#[derive(Default)]
struct Inner {
    capacity: usize,
    listening: bool,
    /// Counts invalidations; a stamp is its value when taken.
    seq: u64,
    /// No result stamped before this is kept: raised on (re)connect, and to the last
    /// invalidation of any evicted user (whose own record of it is gone).
    floor: u64,
    users: HashMap<Uuid, UserEntry>,
    /// API key hash → owner, for every key cached under its owner.
    key_owners: HashMap<Vec<u8>, Uuid>,
}

#[derive(Default)]
struct UserEntry {
    /// `seq` at this user's last invalidation.
    changed: u64,
    /// Changes in flight in this process.
    writers: usize,
    sessions: HashMap<Uuid, Timed<SessionCheck>>,
    api_keys: HashMap<Vec<u8>, Timed<ApiKeyCheck>>,
    pages: HashMap<String, Timed<Bytes>>,
}

struct Timed<T> {
    value: T,
    until: Instant,
}

impl<T: Clone> Timed<T> {
    fn new(value: T, max_age: Duration) -> Self {
        Self {
            value,
            until: Instant::now() + max_age.min(MAX_AGE),
        }
    }

    fn fresh(&self) -> Option<T> {
        (Instant::now() < self.until).then(|| self.value.clone())
    }
}

impl UserEntry {
    fn forget(&mut self, key_owners: &mut HashMap<Vec<u8>, Uuid>) {
        for hash in self.api_keys.keys() {
            key_owners.remove(hash);
        }
        self.sessions.clear();
        self.api_keys.clear();
        self.pages.clear();
    }
}

impl Inner {
    fn invalidate(&mut self, user: Uuid) {
        self.seq += 1;
        let seq = self.seq;
        if !self.users.contains_key(&user) {
            self.make_room();
        }
        let Inner {
            users, key_owners, ..
        } = self;
        let entry = users.entry(user).or_default();
        entry.changed = seq;
        entry.forget(key_owners);
    }

    /// Forgets everything; only the count of writes in flight survives.
    fn reset(&mut self) {
        self.seq += 1;
        self.floor = self.seq;
        self.key_owners.clear();
        self.users.retain(|_, entry| entry.writers > 0);
        let Inner {
            users, key_owners, ..
        } = self;
        for entry in users.values_mut() {
            entry.forget(key_owners);
        }
    }

    /// The entry of `user` if it may be served from.
    fn readable(&self, user: &Uuid) -> Option<&UserEntry> {
        self.users
            .get(user)
            .filter(|entry| self.listening && entry.writers == 0)
    }

    /// The entry a result stamped `stamp` may be kept in, made room for if needed.
    fn keepable(&mut self, stamp: Stamp, user: Uuid) -> Option<&mut UserEntry> {
        if self.capacity == 0 || !self.listening || stamp.0 < self.floor {
            return None;
        }
        if !self.users.contains_key(&user) {
            self.make_room();
        }
        let entry = self.users.entry(user).or_default();
        (entry.writers == 0 && entry.changed <= stamp.0).then_some(entry)
    }

    /// Evicts users (never one being written) until one more fits.
    fn make_room(&mut self) {
        while self.users.len() >= self.capacity.max(1) {
            let Some(victim) = self
                .users
                .iter()
                .find(|(_, entry)| entry.writers == 0)
                .map(|(id, _)| *id)
            else {
                return;
            };
            if let Some(mut entry) = self.users.remove(&victim) {
                self.floor = self.floor.max(entry.changed);
                entry.forget(&mut self.key_owners);
            }
        }
    }
}

impl ReadCache {
    /// `lookups` is labelled by kind and outcome (`metrics.rs`).
    pub fn new(capacity: usize, lookups: &IntCounterVec) -> Self {
        let counters =
            |kind| ["hit", "miss"].map(|outcome| lookups.with_label_values(&[kind, outcome]));
        Self {
            capacity,
            inner: Mutex::new(Inner {
                capacity,
                ..Inner::default()
            }),
            lookups: ["session", "api_key", "page"].map(counters),
        }
    }

    fn counted<T>(&self, kind: Kind, found: Option<T>) -> Option<T> {
        if self.enabled() {
            self.lookups[kind as usize][usize::from(found.is_none())].inc();
        }
        found
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in here panics mid-update; a poisoned lock holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stamp(&self) -> Stamp {
        Stamp(self.lock().seq)
    }

    pub fn session(&self, user: Uuid, session: Uuid) -> Option<SessionCheck> {
        let found = (|| self.lock().readable(&user)?.sessions.get(&session)?.fresh())();
        self.counted(Kind::Session, found)
    }

    pub fn keep_session(&self, stamp: Stamp, user: Uuid, session: Uuid, check: SessionCheck) {
        let mut inner = self.lock();
        if let Some(entry) = inner.keepable(stamp, user) {
            entry.sessions.insert(session, Timed::new(check, MAX_AGE));
        }
    }

    pub fn api_key(&self, hash: &[u8]) -> Option<ApiKeyCheck> {
        let found = (|| {
            let inner = self.lock();
            let owner = inner.key_owners.get(hash)?;
            inner.readable(owner)?.api_keys.get(hash)?.fresh()
        })();
        self.counted(Kind::ApiKey, found)
    }

    pub fn keep_api_key(&self, stamp: Stamp, hash: Vec<u8>, check: ApiKeyCheck) {
        let mut inner = self.lock();
        let Some(entry) = inner.keepable(stamp, check.user_id) else {
            return;
        };
        entry
            .api_keys
            .insert(hash.clone(), Timed::new(check, MAX_AGE));
        inner.key_owners.insert(hash, check.user_id);
    }

    /// A serialized page of `user`'s, under a key naming everything the page depends on.
    pub fn page(&self, user: Uuid, key: &str) -> Option<Bytes> {
        let found = (|| self.lock().readable(&user)?.pages.get(key)?.fresh())();
        self.counted(Kind::Page, found)
    }

    pub fn keep_page(&self, stamp: Stamp, user: Uuid, key: String, body: Bytes, max_age: Duration) {
        let mut inner = self.lock();
        if let Some(entry) = inner.keepable(stamp, user) {
            if entry.pages.len() >= PAGES_PER_USER {
                entry.pages.clear();
            }
            entry.pages.insert(key, Timed::new(body, max_age));
        }
    }

    /// Forgets what is cached for `user`.
    pub fn invalidate(&self, user: Uuid) {
        if self.enabled() {
            self.lock().invalidate(user);
        }
    }

    /// Marks `user` as being changed by this process until the guard drops (after the
    /// change committed, or failed): meanwhile their entries are neither served nor kept.
    pub fn writing(self: &Arc<Self>, user: Uuid) -> WriteGuard {
        if self.enabled() {
            let mut inner = self.lock();
            if !inner.users.contains_key(&user) {
                inner.make_room();
            }
            inner.users.entry(user).or_default().writers += 1;
        }
        WriteGuard {
            cache: Arc::clone(self),
            user,
        }
    }
}

/// See [`ReadCache::writing`].
pub struct WriteGuard {
    cache: Arc<ReadCache>,
    user: Uuid,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if !self.cache.enabled() {
            return;
        }
        let mut inner = self.cache.lock();
        if let Some(entry) = inner.users.get_mut(&self.user) {
            entry.writers = entry.writers.saturating_sub(1);
        }
        inner.invalidate(self.user);
    }
}

/// The user a change notification names (migration `000140`): `a:<user id>` when one of their
/// credentials changed (the user row, a session, an API key), `g:<user id>` when one of their
/// generations did. Either forgets all the user keeps here: a change is rare next to reads.
fn changed_user(payload: &str) -> Option<Uuid> {
    match payload.split_once(':')? {
        ("a" | "g", id) => id.parse().ok(),
        _ => None,
    }
}

impl crate::db::listen::Subscriber for ReadCache {
    fn listening(&self) {
        let mut inner = self.lock();
        inner.reset();
        inner.listening = true;
    }

    fn notified(&self, payload: &str) {
        match changed_user(payload) {
            Some(user) => self.invalidate(user),
            // Unknown payloads cannot be scoped to a user: forget everyone.
            None => {
                tracing::warn!(
                    payload,
                    "unexpected change notification; clearing the read cache"
                );
                self.lock().reset();
            }
        }
    }

    fn deaf(&self) {
        let mut inner = self.lock();
        inner.listening = false;
        inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::listen::Subscriber;

    fn new(capacity: usize) -> ReadCache {
        ReadCache::new(capacity, &crate::metrics::Metrics::new().read_cache_lookups)
    }

    fn listening(capacity: usize) -> Arc<ReadCache> {
        let cache = Arc::new(new(capacity));
        cache.listening();
        cache
    }

    fn check() -> SessionCheck {
        SessionCheck {
            expires_at: Utc::now() + chrono::Duration::hours(1),
        }
    }

    #[test]
    fn a_kept_result_is_served_until_its_user_is_invalidated() {
        let cache = listening(10);
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        cache.keep_session(cache.stamp(), user, sid, check());
        assert!(cache.session(user, sid).is_some());
        cache.notified(&format!("a:{}", Uuid::new_v4()));
        cache.notified(&format!("g:{}", Uuid::new_v4()));
        assert!(cache.session(user, sid).is_some(), "another user's change");
        cache.notified(&format!("a:{user}"));
        assert!(cache.session(user, sid).is_none());
        cache.keep_session(cache.stamp(), user, sid, check());
        cache.notified(&format!("g:{user}"));
        assert!(cache.session(user, sid).is_none());
    }

    #[test]
    fn what_the_triggers_send_names_one_user_and_anything_else_forgets_everyone() {
        let user = Uuid::new_v4();
        assert_eq!(changed_user(&format!("a:{user}")), Some(user));
        assert_eq!(changed_user(&format!("g:{user}")), Some(user));
        for unknown in [
            user.to_string(),
            format!("x:{user}"),
            "a:".into(),
            "".into(),
        ] {
            assert_eq!(changed_user(&unknown), None, "{unknown}");
        }
        let cache = listening(10);
        let sid = Uuid::new_v4();
        cache.keep_session(cache.stamp(), user, sid, check());
        cache.notified("something else");
        assert!(cache.session(user, sid).is_none());
    }

    #[test]
    fn a_result_read_before_an_invalidation_is_not_kept_after_it() {
        let cache = listening(10);
        let user = Uuid::new_v4();
        let stamp = cache.stamp();
        cache.notified(&format!("g:{user}"));
        cache.keep_page(stamp, user, "p".into(), Bytes::from_static(b"old"), MAX_AGE);
        assert!(cache.page(user, "p").is_none());
        // Read after the invalidation: kept.
        let stamp = cache.stamp();
        cache.keep_page(stamp, user, "p".into(), Bytes::from_static(b"new"), MAX_AGE);
        assert_eq!(cache.page(user, "p").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn nothing_is_served_or_kept_while_a_write_is_in_flight() {
        let cache = listening(10);
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        cache.keep_session(cache.stamp(), user, sid, check());
        let guard = cache.writing(user);
        assert!(cache.session(user, sid).is_none());
        let during = cache.stamp();
        cache.keep_session(during, user, sid, check());
        assert!(cache.session(user, sid).is_none());
        drop(guard);
        assert!(cache.session(user, sid).is_none(), "dropped with the write");
        cache.keep_session(during, user, sid, check());
        assert!(cache.session(user, sid).is_none(), "read during the write");
        cache.keep_session(cache.stamp(), user, sid, check());
        assert!(cache.session(user, sid).is_some());
    }

    #[test]
    fn nothing_is_served_or_kept_while_deaf_and_a_reconnect_starts_afresh() {
        let cache = listening(10);
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        cache.keep_session(cache.stamp(), user, sid, check());
        let before = cache.stamp();
        cache.deaf();
        assert!(cache.session(user, sid).is_none());
        cache.keep_session(cache.stamp(), user, sid, check());
        assert!(cache.session(user, sid).is_none());
        cache.listening();
        cache.keep_session(before, user, sid, check());
        assert!(
            cache.session(user, sid).is_none(),
            "stamped before the reconnect"
        );
        cache.keep_session(cache.stamp(), user, sid, check());
        assert!(cache.session(user, sid).is_some());
    }

    #[test]
    fn an_evicted_users_invalidation_still_refuses_older_results() {
        let cache = listening(1);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let stamp = cache.stamp();
        cache.notified(&format!("a:{a}"));
        // b's entry evicts a's tombstone, and with it the record of a's invalidation.
        cache.keep_page(cache.stamp(), b, "p".into(), Bytes::new(), MAX_AGE);
        cache.keep_page(stamp, a, "p".into(), Bytes::new(), MAX_AGE);
        assert!(cache.page(a, "p").is_none());
    }

    #[test]
    fn api_keys_are_found_by_hash_and_forgotten_with_their_owner() {
        let cache = listening(10);
        let user = Uuid::new_v4();
        let key = ApiKeyCheck {
            key_id: Uuid::new_v4(),
            user_id: user,
            expires_at: None,
        };
        cache.keep_api_key(cache.stamp(), vec![1; 32], key);
        assert_eq!(cache.api_key(&[1; 32]), Some(key));
        cache.invalidate(user);
        assert_eq!(cache.api_key(&[1; 32]), None);
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = Arc::new(new(0));
        cache.listening();
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        drop(cache.writing(user));
        cache.keep_session(cache.stamp(), user, sid, check());
        assert!(cache.session(user, sid).is_none());
    }
}
