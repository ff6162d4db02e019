//! Online profiles: each user's latest actions since the batch generation being served,
//! clustered by the same model as the batch, kept in memory.
//!
//! The batch generation's `now` is the boundary: an action at or before it is covered by the
//! batch profile, a later one is online. Every accepted event later than the boundary updates
//! its user's online actions (the most recent [`DEFAULT_ONLINE_ACTIONS`] are kept) and the user
//! is re-clustered at once. When a new batch generation is served, [`OnlineProfiles::roll_over`]
//! moves the boundary, drops what the batch now covers and adopts the generation's alpha and
//! lambda, so that online clusters are always cut like the batch clusters they merge with. After a restart,
//! [`OnlineProfiles::recover`] rebuilds the state from the event store: the store is the source
//! of truth, this is a cache of it.
//!
//! Importance is measured at the boundary, like the batch's (see [`pinnersage_core::merge`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use pinnersage_catalog::catalog::Catalog;
use pinnersage_core::hash::stable_hash;
use pinnersage_core::{Clusterer, CoreError, ProfileParams};
use pinnersage_store::events::{EventStore, EventStoreError};
use pinnersage_store::settings::GenerationSettings;
use rayon::prelude::*;

use crate::clustering::UserActions;

/// Latest actions per user clustered online, as in the paper.
pub const DEFAULT_ONLINE_ACTIONS: usize = 20;

const SHARDS: usize = 64;

/// One online action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineAction {
    /// The item's catalog row.
    pub row: u32,
    /// Unix seconds.
    pub time: i64,
    /// The action's weight.
    pub weight: f32,
}

/// One online cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineCluster {
    /// The medoid's catalog row.
    pub medoid: u32,
    /// Importance at the boundary.
    pub importance: f64,
    /// Member rows, most recent first (an item engaged twice appears twice).
    pub members: Vec<u32>,
    /// Latest member time.
    pub latest_time: i64,
}

/// One user's online state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnlineUser {
    /// The kept actions, oldest first.
    pub actions: Vec<OnlineAction>,
    /// Their clusters, most important first.
    pub clusters: Vec<OnlineCluster>,
    /// Their clusters cut at each variant alpha of the served generation (its profiles cut at
    /// other alphas, read by experiment arms): `(alpha, clusters)`.
    pub variants: Vec<(f64, Vec<OnlineCluster>)>,
    /// The [`Catalog::instance`] the rows are of.
    pub catalog: u64,
}

/// An accepted event, resolved to a catalog row.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// External user id.
    pub user: &'a str,
    /// The item's id (resolved again if the catalog changed since its row was found).
    pub item: &'a str,
    /// The action.
    pub action: OnlineAction,
}

/// Online profiles of every user with actions after the boundary.
pub struct OnlineProfiles {
    /// The boundary, the clustering parameters and the catalog; held for reading while events are applied so
    /// that a roll-over never interleaves with an update. Always taken before a shard's lock.
    served: RwLock<Served>,
    shards: Vec<Mutex<Shard>>,
    /// Users kept in memory at most (across shards); the least recently active are evicted.
    max_users: usize,
    /// The event store evicted users are rebuilt from.
    store: OnceLock<Arc<EventStore>>,
    /// Orders updates, for eviction by least recent activity.
    clock: AtomicU64,
    /// Users evicted so far.
    evictions: AtomicU64,
    /// Store writes of events applied here ahead of them (see [`OnlineProfiles::apply_ahead`]):
    /// a rebuild from the store waits for the writes it must see.
    writes: Mutex<Writes>,
    /// Signalled when a write ends.
    written: Condvar,
}

/// Store writes of events applied ahead of them: writes `1..=begun` began, in order, and
/// `1..=ended` ended (written, or failed and their users forgotten).
#[derive(Debug, Default)]
struct Writes {
    begun: u64,
    ended: u64,
}

/// A store write of events applied ahead of it ([`OnlineProfiles::apply_ahead`]); hand it to
/// [`OnlineProfiles::written`] once the write is done.
#[derive(Debug)]
#[must_use = "rebuilds from the store wait until the write is reported done"]
pub struct PendingWrite(u64);

/// One shard of the users.
#[derive(Default)]
struct Shard {
    users: HashMap<String, Resident>,
    /// Stable hashes of users evicted from memory: their online actions are in the store.
    evicted: HashSet<u64>,
    /// Users forgotten so far ([`OnlineProfiles::forget`]): an update that read a user's state
    /// before a forget starts again from the store.
    forgets: u64,
}

/// A user held in memory.
struct Resident {
    state: Arc<OnlineUser>,
    /// The [`OnlineProfiles::clock`] value of the user's latest update.
    touched: u64,
}

/// What [`OnlineProfiles::resident`] found of a user.
struct Lookup {
    /// The user's state, if any.
    state: Option<Arc<OnlineUser>>,
    /// Whether it was rebuilt from the store just now.
    rebuilt: bool,
    /// The shard's [`Shard::forgets`] when it was read.
    forgets: u64,
}

/// Users kept in memory by default (about 1–2 KB each with 20 online actions).
pub const DEFAULT_MAX_USERS: usize = 1_000_000;

/// What the online state follows: the served batch generation and the served catalog.
struct Served {
    /// The generation's `now` (unix seconds): actions later than this are online.
    since: i64,
    /// The generation's alpha and lambda; `max_actions` is the number of latest actions kept.
    params: ProfileParams,
    /// The generation's variant alphas: each user is also cut at these.
    variant_alphas: Vec<f64>,
    /// The catalog rows are resolved through.
    catalog: Arc<Catalog>,
    /// The catalog served before it ([`OnlineProfiles::rebase`]): users whose rows are of it are
    /// moved to the new one when next touched.
    previous: Option<Arc<Catalog>>,
}

impl std::fmt::Debug for OnlineProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineProfiles")
            .field("since", &self.since())
            .field("users", &self.users())
            .finish()
    }
}

impl OnlineProfiles {
    /// Empty online state over `catalog`, clustering with `params` (alpha and lambda as in the
    /// batch; `max_actions` is the number of latest actions kept per user) and the boundary
    /// `since` (the served batch generation's `now`; `i64::MIN` when there is none).
    pub fn new(
        catalog: Arc<Catalog>,
        params: ProfileParams,
        since: i64,
    ) -> Result<Self, CoreError> {
        params.validate()?;
        Ok(Self {
            served: RwLock::new(Served {
                since,
                params,
                variant_alphas: Vec::new(),
                catalog,
                previous: None,
            }),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            max_users: DEFAULT_MAX_USERS,
            store: OnceLock::new(),
            clock: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            writes: Mutex::new(Writes::default()),
            written: Condvar::new(),
        })
    }

    /// Keeps at most `max_users` users in memory (at least one per shard): beyond it the least
    /// recently active are evicted, and rebuilt from the event store (see
    /// [`OnlineProfiles::attach_store`]) when they are asked for or act again. Nothing is lost:
    /// the store holds every event.
    pub fn with_max_users(mut self, max_users: usize) -> Self {
        self.max_users = max_users;
        self
    }

    /// Also cuts every user at `alphas` (the served generation's variant alphas, see
    /// [`OnlineUser::variants`]; [`OnlineProfiles::roll_over`] follows a new generation's).
    /// Invalid alphas change nothing.
    pub fn with_variant_alphas(self, alphas: &[f64]) -> Result<Self, CoreError> {
        {
            let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
            check_variants(&served.params, alphas)?;
            served.variant_alphas = alphas.to_vec();
        }
        Ok(self)
    }

    /// The event store evicted users are rebuilt from (the one events are applied from).
    pub fn attach_store(&self, store: Arc<EventStore>) {
        let _ = self.store.set(store);
    }

    /// Users evicted from memory so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The boundary: actions later than this are online.
    pub fn since(&self) -> i64 {
        self.read_served().since
    }

    /// The clustering parameters (those of the served generation).
    pub fn params(&self) -> ProfileParams {
        self.read_served().params.clone()
    }

    /// The catalog the online state's rows are of.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.read_served().catalog.clone()
    }

    /// Follows a newly served catalog (a new generation, or the same one reopened): its rows
    /// number items differently, so from now on events are resolved through it, and every
    /// user's state is moved to it (row by row through the item ids) when next read or
    /// updated. A user whose rows are of an older catalog still is rebuilt from the store.
    pub fn rebase(&self, catalog: Arc<Catalog>) {
        let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
        let previous = std::mem::replace(&mut served.catalog, catalog);
        served.previous = Some(previous);
    }

    /// The shard of `user`, locked.
    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let h = stable_hash(user.as_bytes());
        let shard = &self.shards[(h % SHARDS as u64) as usize];
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The boundary and parameters, held for reading.
    fn read_served(&self) -> RwLockReadGuard<'_, Served> {
        self.served.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The online state of `user`, if they have actions after the boundary (rebuilt from the
    /// store if they were evicted from memory).
    pub fn get(&self, user: &str) -> Option<Arc<OnlineUser>> {
        let served = self.read_served();
        // Events applied here ahead of their writes are visible: a rebuild waits for them.
        let through = self.writes().begun;
        self.resident(user, &served, through).state
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, Writes> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the store writes `1..=through` have ended.
    fn wait_written(&self, through: u64) {
        let mut writes = self.writes();
        while writes.ended < through {
            writes = self
                .written
                .wait(writes)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// `user`'s state in memory; an evicted user is rebuilt from the store once the writes
    /// `1..=through` have ended (waiting outside the shard's lock, as ending a write may need
    /// it to forget users; rebuilding under it, so no update of theirs interleaves).
    fn resident(&self, user: &str, served: &Served, through: u64) -> Lookup {
        let h = stable_hash(user.as_bytes());
        let mut waited = false;
        loop {
            let mut shard = self.shard(user);
            let forgets = shard.forgets;
            let mut state = shard.users.get(user).map(|r| r.state.clone());
            if let Some(stale) = state.take_if(|s| s.catalog != served.catalog.instance()) {
                // Rows of another catalog: moved to the served one under the shard's lock.
                state = self.moved(user, &stale, served).map(Arc::new);
                match &state {
                    Some(moved) => self.insert(&mut shard, user, moved.clone()),
                    None => {
                        shard.users.remove(user);
                    }
                }
            }
            if state.is_some() || !shard.evicted.contains(&h) {
                return Lookup {
                    state,
                    rebuilt: false,
                    forgets,
                };
            }
            if waited {
                shard.evicted.remove(&h);
                let state = self.rebuild(user, served).map(Arc::new);
                if let Some(state) = &state {
                    self.insert(&mut shard, user, state.clone());
                }
                return Lookup {
                    state,
                    rebuilt: true,
                    forgets,
                };
            }
            drop(shard);
            self.wait_written(through);
            waited = true;
        }
    }

    /// `state`, whose rows are of another catalog, over the served one: each action's item
    /// found again by id (a deleted item's last row: its vector still places the action), then
    /// clustered again. From the store if `state` is of an older catalog than the previous one.
    fn moved(&self, user: &str, state: &OnlineUser, served: &Served) -> Option<OnlineUser> {
        let Some(previous) = served
            .previous
            .as_ref()
            .filter(|p| p.instance() == state.catalog)
        else {
            return self.rebuild(user, served);
        };
        let actions: Vec<OnlineAction> = state
            .actions
            .iter()
            .filter_map(|a| {
                let row = served.catalog.last_row_of(previous.id(a.row as usize))?;
                Some(OnlineAction {
                    row: row as u32,
                    ..*a
                })
            })
            .collect();
        if actions.is_empty() {
            return None;
        }
        let mut clusterer = Clusterer::new(served.params.clone()).ok()?;
        Some(self.build(&mut clusterer, actions, served))
    }

    /// `user`'s state from the store's events after the boundary; `None` without any.
    fn rebuild(&self, user: &str, served: &Served) -> Option<OnlineUser> {
        let store = self.store.get()?;
        let events = store.user_events_after(user, served.since).ok()?;
        let actions: Vec<OnlineAction> = events
            .iter()
            .filter_map(|e| {
                let row = served.catalog.row_of(&e.item)?;
                Some(OnlineAction {
                    row: row as u32,
                    time: e.time,
                    weight: e.weight,
                })
            })
            .collect();
        if actions.is_empty() {
            return None;
        }
        let mut clusterer = Clusterer::new(served.params.clone()).ok()?;
        Some(self.build(&mut clusterer, actions, served))
    }

    /// Stores `state` as `user`'s and evicts the least recently active users of the shard when
    /// it is over its share of `max_users` (down to seven eighths of it, so evictions are rare).
    fn insert(&self, shard: &mut Shard, user: &str, state: Arc<OnlineUser>) {
        let touched = self.clock.fetch_add(1, Ordering::Relaxed);
        shard
            .users
            .insert(user.to_owned(), Resident { state, touched });
        let cap = (self.max_users / SHARDS).max(1);
        if shard.users.len() <= cap {
            return;
        }
        let keep = (cap - cap / 8).max(1);
        let mut ages: Vec<u64> = shard.users.values().map(|r| r.touched).collect();
        let cut = ages.len() - keep;
        let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
        let before = shard.users.len();
        let mut evicted = Vec::new();
        shard.users.retain(|u, r| {
            let keep = r.touched >= oldest_kept;
            if !keep {
                evicted.push(stable_hash(u.as_bytes()));
            }
            keep
        });
        shard.evicted.extend(evicted);
        self.evictions
            .fetch_add((before - shard.users.len()) as u64, Ordering::Relaxed);
    }

    /// Drops what is held in memory for `users`, so that each is rebuilt from the store when
    /// next needed: after events were applied here but their store write failed, the store
    /// (the source of truth) decides again. An update of theirs under way starts again.
    pub fn forget<'a>(&self, users: impl IntoIterator<Item = &'a str>) {
        for user in users {
            let mut shard = self.shard(user);
            shard.forgets += 1;
            if shard.users.remove(user).is_some() {
                shard.evicted.insert(stable_hash(user.as_bytes()));
            }
        }
    }

    /// Users with online actions held in memory.
    pub fn users(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).users.len())
            .sum()
    }

    /// Adds newly stored events (duplicates must be left out by the caller) and re-clusters
    /// their users. Events at or before the boundary are ignored: the batch covers them. Their
    /// rows were found in the catalog whose [`Catalog::instance`] is `resolved_by` (another
    /// than the served one: they are found again by item id).
    pub fn apply(&self, events: &[Accepted<'_>], resolved_by: u64) {
        let through = self.writes().begun;
        self.update(events, resolved_by, through, true);
    }

    /// Adds new events before their store write (duplicates of stored or earlier applied events
    /// must be left out by the caller) and re-clusters their users, so they are visible while
    /// the write runs. Writes are begun in the order of these calls and must be reported done
    /// with [`OnlineProfiles::written`] in the same order, failed ones after
    /// [`OnlineProfiles::forget`]ting their users. An evicted user is rebuilt from the store
    /// once the earlier writes are done, then gets these events.
    pub fn apply_ahead(&self, events: &[Accepted<'_>], resolved_by: u64) -> PendingWrite {
        let write = {
            let mut writes = self.writes();
            writes.begun += 1;
            writes.begun
        };
        self.update(events, resolved_by, write - 1, false);
        PendingWrite(write)
    }

    /// The store write of events applied ahead of it ended (written, or failed and its users
    /// forgotten): rebuilds waiting for it go on.
    pub fn written(&self, write: PendingWrite) {
        let mut writes = self.writes();
        writes.ended = writes.ended.max(write.0);
        self.written.notify_all();
    }

    /// Adds `events` and re-clusters their users; evicted users are rebuilt from the store once
    /// the writes `1..=through` ended. `stored`: the store has the events (a rebuilt user has
    /// them already).
    fn update(&self, events: &[Accepted<'_>], resolved_by: u64, through: u64, stored: bool) {
        let served = self.read_served();
        let resolved = resolved_by == served.catalog.instance();
        let mut by_user: HashMap<&str, Vec<OnlineAction>> = HashMap::new();
        for e in events.iter().filter(|e| e.action.time > served.since) {
            let row = if resolved {
                Some(e.action.row)
            } else {
                served.catalog.row_of(e.item).map(|r| r as u32)
            };
            if let Some(row) = row {
                by_user
                    .entry(e.user)
                    .or_default()
                    .push(OnlineAction { row, ..e.action });
            }
        }
        let by_user: Vec<(&str, Vec<OnlineAction>)> = by_user.into_iter().collect();
        let update = |clusterer: &mut Clusterer, (user, fresh): &(&str, Vec<OnlineAction>)| {
            loop {
                let current = self.resident(user, &served, through);
                // A user rebuilt from the store already has stored events.
                if stored && current.rebuilt && current.state.is_some() {
                    return;
                }
                let mut actions = current.state.map(|u| u.actions.clone()).unwrap_or_default();
                actions.extend_from_slice(fresh);
                let state = Arc::new(self.build(clusterer, actions, &served));
                let mut shard = self.shard(user);
                // Forgotten meanwhile: what it was built on may be gone from the store.
                if shard.forgets == current.forgets {
                    self.insert(&mut shard, user, state);
                    return;
                }
            }
        };
        let new_clusterer = || Clusterer::new(served.params.clone()).expect("validated before");
        if by_user.len() < 16 {
            let mut c = new_clusterer();
            by_user.iter().for_each(|u| update(&mut c, u));
        } else {
            by_user.par_iter().for_each_init(new_clusterer, update);
        }
    }

    /// Keeps the latest `max_actions` actions and clusters them.
    fn build(
        &self,
        clusterer: &mut Clusterer,
        mut actions: Vec<OnlineAction>,
        served: &Served,
    ) -> OnlineUser {
        let since = served.since;
        // A total order (weights too): replicas that received the same events in another
        // order build the same state.
        actions.sort_by(|a, b| {
            (a.time, a.row)
                .cmp(&(b.time, b.row))
                .then(a.weight.total_cmp(&b.weight))
        });
        let keep = served.params.max_actions;
        if actions.len() > keep {
            actions.drain(..actions.len() - keep);
        }
        let mut user = UserActions::default();
        for (k, a) in actions.iter().enumerate() {
            user.push(k, a.row as usize, a.time, a.weight);
        }
        let alphas: Vec<f64> = std::iter::once(clusterer.params().alpha)
            .chain(served.variant_alphas.iter().copied())
            .collect();
        // Catalog embeddings are validated finite at import and the alphas were checked, so
        // clustering cannot fail; an empty cluster list would only hide the online actions.
        let profiles = user
            .cluster_at(clusterer, &*served.catalog, since, &alphas)
            .unwrap_or_default();
        let times = &user.times;
        let mut cuts = profiles.into_iter().map(|profile| {
            profile
                .clusters
                .into_iter()
                .map(|c| {
                    let mut members = c.members.clone();
                    members.sort_by_key(|&m| std::cmp::Reverse((times[m], m)));
                    OnlineCluster {
                        medoid: actions[c.medoid].row,
                        importance: c.importance,
                        members: members.iter().map(|&m| actions[m].row).collect(),
                        latest_time: c.latest_time,
                    }
                })
                .collect::<Vec<_>>()
        });
        let clusters = cuts.next().unwrap_or_default();
        let variants = alphas[1..].iter().copied().zip(cuts).collect();
        OnlineUser {
            actions,
            clusters,
            variants,
            catalog: served.catalog.instance(),
        }
    }

    /// `user`'s state with their kept actions clustered at `alpha` instead of the served
    /// generation's: what an experiment arm that reads a variant of the generation (its
    /// profiles cut at another alpha) merges them with. The cut made when the user last
    /// changed for a variant alpha of the generation; for another alpha, clustered in this
    /// call. A state over another catalog than the served one (a swap under way) is returned
    /// as it is.
    pub fn cut_at(&self, user: &OnlineUser, alpha: f64) -> Result<OnlineUser, CoreError> {
        if let Some((_, clusters)) = user.variants.iter().find(|(a, _)| *a == alpha) {
            return Ok(OnlineUser {
                actions: user.actions.clone(),
                clusters: clusters.clone(),
                variants: Vec::new(),
                catalog: user.catalog,
            });
        }
        let served = self.read_served();
        if user.catalog != served.catalog.instance() {
            return Ok(user.clone());
        }
        let mut clusterer = Clusterer::new(ProfileParams {
            alpha,
            ..served.params.clone()
        })?;
        Ok(self.build(&mut clusterer, user.actions.clone(), &served))
    }

    /// Follows a newly served batch generation with `settings` and `variant_alphas`: moves the
    /// boundary to its `now` and clusters with its `alpha` and `lambda` (and cuts at its variant
    /// alphas) from now on (the number of online actions kept stays). Actions at or before the
    /// boundary are dropped and users left without actions are removed; the users whose actions
    /// changed are re-clustered, and every user when alpha, lambda or the variants changed. Returns the number of users removed. Invalid parameters change nothing.
    pub fn roll_over(
        &self,
        settings: &GenerationSettings,
        variant_alphas: &[f64],
    ) -> Result<usize, CoreError> {
        let since = settings.now;
        let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
        let params = ProfileParams {
            alpha: settings.params.alpha,
            lambda: settings.params.lambda,
            ..served.params.clone()
        };
        let mut clusterer = Clusterer::new(params.clone())?;
        check_variants(&params, variant_alphas)?;
        let recluster_all = params != served.params || variant_alphas != served.variant_alphas;
        served.since = since;
        served.params = params;
        served.variant_alphas = variant_alphas.to_vec();
        let mut removed = 0;
        for shard in &self.shards {
            let users = &mut shard.lock().unwrap_or_else(PoisonError::into_inner).users;
            let before = users.len();
            users.retain(|_, u| u.state.actions.iter().any(|a| a.time > since));
            removed += before - users.len();
            for resident in users.values_mut() {
                let state = &mut resident.state;
                if recluster_all || state.actions.iter().any(|a| a.time <= since) {
                    let kept = state
                        .actions
                        .iter()
                        .copied()
                        .filter(|a| a.time > since)
                        .collect();
                    *state = Arc::new(self.build(&mut clusterer, kept, &served));
                }
            }
        }
        Ok(removed)
    }

    /// Rebuilds the state from every stored event after the boundary (after a restart).
    /// Events on items missing from the catalog are skipped. Returns the number of events read.
    /// The store is also where evicted users are rebuilt from ([`OnlineProfiles::attach_store`]).
    pub fn recover(&self, store: &Arc<EventStore>) -> Result<u64, EventStoreError> {
        self.attach_store(store.clone());
        let (since, keep, catalog) = {
            let served = self.read_served();
            (
                served.since,
                served.params.max_actions,
                served.catalog.clone(),
            )
        };
        let mut latest: HashMap<String, Vec<(OnlineAction, String)>> = HashMap::new();
        let mut read = 0u64;
        store.for_each_after(since, |user, e| {
            read += 1;
            if let Some(row) = catalog.row_of(&e.item) {
                let actions = latest.entry(user.to_owned()).or_default();
                let action = OnlineAction {
                    row: row as u32,
                    time: e.time,
                    weight: e.weight,
                };
                actions.push((action, e.item.clone()));
                // Events come in time order: keep a bounded tail per user.
                if actions.len() >= 2 * keep {
                    actions.drain(..actions.len() - keep);
                }
            }
        })?;
        let events: Vec<Accepted<'_>> = latest
            .iter()
            .flat_map(|(user, actions)| {
                actions.iter().map(move |(action, item)| Accepted {
                    user,
                    item,
                    action: *action,
                })
            })
            .collect();
        self.apply(&events, catalog.instance());
        Ok(read)
    }
}

/// Checks variant alphas as the generation's own alpha is checked.
fn check_variants(params: &ProfileParams, alphas: &[f64]) -> Result<(), CoreError> {
    alphas.iter().try_for_each(|&alpha| {
        ProfileParams {
            alpha,
            ..params.clone()
        }
        .validate()
    })
}
