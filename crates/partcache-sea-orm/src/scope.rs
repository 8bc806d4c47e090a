//! What a cached read needs to know of the connection it runs on: the query cache its
//! writes invalidate and, inside a transaction, what the transaction has written.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use sea_orm::ConnectionTrait;

use crate::plan::WritePlan;
use crate::query_cache::QueryCache;

/// A connection a cached query can run on: a [`CachingConnection`](crate::CachingConnection) or a
/// [`CachingTransaction`](crate::CachingTransaction). Sealed: what it exposes is crate-private.
pub trait CacheAware: ConnectionTrait + Send + Sync {
    /// Where this connection's writes go and which transaction it is in.
    #[doc(hidden)]
    fn cache_scope(&self) -> CacheScope<'_>;
}

/// The query cache and (inside a transaction) the transaction's pending writes.
#[doc(hidden)]
#[derive(Debug)]
pub struct CacheScope<'a> {
    pub(crate) cache: &'a QueryCache,
    pub(crate) tx: Option<&'a TxState>,
}

/// The bumps a transaction owes the store, applied at its commit, and the tables its
/// reads must take from the database.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) keys: BTreeSet<String>,
    /// Tables written by this transaction or one nested in it (read-your-writes).
    tables: HashSet<String>,
    everything: bool,
}

impl Pending {
    /// Records that a transaction nested in this one wrote `tables` (or unknown tables):
    /// this one shares its connection, so its reads see those writes too. The bumps
    /// stay with the nested transaction until it is released into this one.
    fn saw(&mut self, tables: &[String], everything: bool) {
        self.tables.extend(tables.iter().cloned());
        self.everything |= everything;
    }

    pub(crate) fn absorb(&mut self, plan: WritePlan) {
        self.keys.extend(plan.keys);
        self.tables.extend(plan.tables);
        self.everything |= plan.everything;
    }

    pub(crate) fn merge(&mut self, other: Pending) {
        self.keys.extend(other.keys);
        self.tables.extend(other.tables);
        self.everything |= other.everything;
    }
}

/// What a transaction (and its enclosing ones, for a nested transaction) has written.
#[derive(Debug)]
pub struct TxState {
    pub(crate) own: Arc<Mutex<Pending>>,
    /// Enclosing transactions, outermost first: their writes are visible here too.
    pub(crate) ancestors: Vec<Arc<Mutex<Pending>>>,
}

impl TxState {
    /// Records what a write of this transaction planned: its bumps are owed at the
    /// commit, and it is visible to the reads of this transaction and of every
    /// enclosing one (a savepoint's write is read by its parent on the same connection,
    /// while the savepoint is open and after it is released).
    pub(crate) fn record(&self, plan: WritePlan) {
        for ancestor in &self.ancestors {
            ancestor.lock().saw(&plan.tables, plan.everything);
        }
        self.own.lock().absorb(plan);
    }

    /// Whether this transaction, an enclosing one, or one nested in either wrote any of
    /// `tables` (or something the connection could not attribute to tables).
    pub(crate) fn wrote_any(&self, tables: &[String]) -> bool {
        self.ancestors
            .iter()
            .chain(std::iter::once(&self.own))
            .any(|pending| {
                let pending = pending.lock();
                pending.everything || tables.iter().any(|t| pending.tables.contains(t))
            })
    }
}
