//! Delivery of a cache's events to this process's listeners in the order the server
//! made them: JSR-107 §8.3 requires the events of one key to be delivered in order.
//!
//! Events reach this process by several paths: the replies of its own calls (a put's,
//! the reaper's, each handled by the task that made the call) and the subscription
//! connection (other processes' writes). Handed on as they come, a put's `Created`
//! could overtake the reaper's `Expired` of the same key when the reaper's task waits
//! for a worker after its reply came back. So every event carries its number in its
//! partition (`<P>sq`, taken in the same atomic step as the change, `lua/common.lua`),
//! and each partition's events are held until every event made before them is in
//! hand, then put on the channel in number order.
//!
//! Which events were made before is known from the calls in flight: every call whose
//! reply returns events takes a ticket of its partition when it is sent. A call that
//! ran on the server before a reply `R` was sent before `R` came back, so its ticket is
//! older than `R`'s arrival. Once every ticket older than `R`'s arrival is resolved
//! (its reply handed in, or the call failed or was given up), every event numbered
//! below `R`'s is in hand, and those up to `R`'s go out, in order. A call sent after
//! `R` came back ran after it: it cannot hold an earlier event, so nobody waits for
//! calls that start later, and a busy partition never starves.
//!
//! A call returns once its own events are on the channel (the events of a call reach
//! listeners before it returns), which may be after an older call in flight on its
//! partition comes back. It waits for that at most until its own deadline: a call
//! whose future is kept but no longer polled would otherwise hold its partition's
//! events for good, so past the deadline the older tickets are given up (their events,
//! should they come, go out when they do). Every ticket carries its call's deadline too,
//! and nothing waits for a ticket past it: other processes' messages are held at most
//! one response timeout even while such a future sits unpolled. Nothing of this runs
//! while the cache has no listeners in this process: then no reply returns events and
//! no call takes a ticket.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use parking_lot::Mutex;
use partcache::store::raw::RawEvent;
use tokio::sync::{broadcast, oneshot};

/// The ordered delivery of one cache's events. See the module docs.
pub(crate) struct Delivery {
    events: broadcast::Sender<RawEvent>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The next ticket's number: one sequence for every partition, so that numbers
    /// never repeat, even for a partition whose state was dropped while a ticket
    /// given up (see [`Delivery::give_up`]) was still out.
    next: u64,
    /// Per partition with calls in flight or events held.
    partitions: HashMap<u16, Partition>,
}

#[derive(Default)]
struct Partition {
    /// Tickets not resolved yet, with their calls' deadlines.
    outstanding: BTreeMap<u64, Instant>,
    /// Events in hand, not delivered yet.
    held: Vec<Held>,
}

/// The events of one reply (or one message), held.
struct Held {
    /// Its call's ticket (`None`: a message of another process).
    ticket: Option<u64>,
    /// Deliverable once every ticket below this one is resolved (the tickets given out
    /// when it arrived).
    barrier: u64,
    /// Its events and their numbers, not delivered yet.
    events: Vec<(u64, RawEvent)>,
    /// Told once the last of them is on the channel.
    delivered: Option<oneshot::Sender<()>>,
}

/// A call in flight on a partition: resolve it with its reply's events, or drop it
/// (the call failed or was given up).
pub(crate) struct Ticket<'d> {
    delivery: &'d Delivery,
    partition: u16,
    number: u64,
    resolved: bool,
}

/// The events a ticket was resolved with, held for older calls: [`Delivered::wait`].
pub(crate) struct Delivered<'d> {
    delivery: &'d Delivery,
    partition: u16,
    ticket: u64,
    done: oneshot::Receiver<()>,
}

impl Delivered<'_> {
    /// Waits until the events are on the channel, or until `deadline`; then gives up
    /// the older calls they wait for and delivers them.
    pub(crate) async fn wait(self, deadline: std::time::Instant) {
        if tokio::time::timeout_at(deadline.into(), self.done)
            .await
            .is_err()
        {
            self.delivery.give_up(self.partition, self.ticket);
        }
    }
}

impl Delivery {
    pub(crate) fn new(events: broadcast::Sender<RawEvent>) -> Delivery {
        Delivery {
            events,
            state: Mutex::new(State::default()),
        }
    }

    /// A ticket for a call on `partition` about to be sent, which fails by `deadline`:
    /// past it, nothing waits for the call any more (see [`Delivery::hand_in`]).
    pub(crate) fn ticket(&self, partition: u16, deadline: Instant) -> Ticket<'_> {
        let mut state = self.state.lock();
        let number = state.next;
        state.next += 1;
        state
            .partitions
            .entry(partition)
            .or_default()
            .outstanding
            .insert(number, deadline);
        Ticket {
            delivery: self,
            partition,
            number,
            resolved: false,
        }
    }

    /// Another process's event, `seq` in `partition`, read from the subscription.
    pub(crate) fn arrived(&self, partition: u16, seq: u64, event: RawEvent) {
        self.hand_in(partition, None, vec![(seq, event)]);
    }

    /// Hands in the events of a reply (or a message) and delivers whatever that makes
    /// deliverable; `Some` when the reply's events must wait for older calls.
    fn hand_in(
        &self,
        partition: u16,
        ticket: Option<u64>,
        events: Vec<(u64, RawEvent)>,
    ) -> Option<Delivered<'_>> {
        let mut guard = self.state.lock();
        let barrier = guard.next;
        let partitions = &mut guard.partitions;
        let state = partitions.entry(partition).or_default();
        if let Some(number) = ticket {
            state.outstanding.remove(&number);
        }
        // A call past its deadline has failed for its caller: its reply, should it
        // come, is not waited for. Without this, a call whose future is kept but never
        // polled would hold its partition's messages from other processes for good.
        let now = Instant::now();
        state.outstanding.retain(|_, deadline| *deadline > now);
        if !events.is_empty() {
            state.held.push(Held {
                ticket,
                barrier,
                events,
                delivered: None,
            });
        }
        self.deliver(state);
        let mut waiting = None;
        if let Some(number) = ticket
            && let Some(held) = state.held.iter_mut().find(|h| h.ticket == Some(number))
        {
            let (tx, done) = oneshot::channel();
            held.delivered = Some(tx);
            waiting = Some(Delivered {
                delivery: self,
                partition,
                ticket: number,
                done,
            });
        }
        if state.outstanding.is_empty() && state.held.is_empty() {
            partitions.remove(&partition);
        }
        waiting
    }

    /// The events of `ticket`'s reply waited too long: the calls they wait for are no
    /// longer waited for, and what that makes deliverable goes out.
    fn give_up(&self, partition: u16, ticket: u64) {
        let mut guard = self.state.lock();
        let partitions = &mut guard.partitions;
        let Some(state) = partitions.get_mut(&partition) else {
            return;
        };
        let Some(barrier) = state
            .held
            .iter()
            .find(|h| h.ticket == Some(ticket))
            .map(|h| h.barrier)
        else {
            return;
        };
        tracing::warn!(
            partition,
            "events held for a call on their partition that has not come back in time; delivering them"
        );
        state.outstanding.retain(|&t, _| t >= barrier);
        self.deliver(state);
        if state.outstanding.is_empty() && state.held.is_empty() {
            partitions.remove(&partition);
        }
    }

    /// Puts on the channel, in number order, every held event numbered at most the
    /// highest number of a deliverable reply.
    fn deliver(&self, state: &mut Partition) {
        let oldest = state
            .outstanding
            .first_key_value()
            .map_or(u64::MAX, |(t, _)| *t);
        let Some(upto) = state
            .held
            .iter()
            .filter(|h| h.barrier <= oldest)
            .flat_map(|h| h.events.iter().map(|(seq, _)| *seq))
            .max()
        else {
            return;
        };
        let mut ready = Vec::new();
        let mut told = Vec::new();
        state.held.retain_mut(|held| {
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut held.events)
                .into_iter()
                .partition(|(seq, _)| *seq <= upto);
            ready.extend(now);
            held.events = later;
            if held.events.is_empty() {
                told.extend(held.delivered.take());
                false
            } else {
                true
            }
        });
        ready.sort_by_key(|(seq, _)| *seq);
        for (_, event) in ready {
            // No receiver: nobody listens.
            let _ = self.events.send(event);
        }
        // After the events are on the channel: a waiting call returns at once.
        for tx in told {
            let _ = tx.send(());
        }
    }
}

impl<'d> Ticket<'d> {
    /// The call's reply came back with `events`: delivers what can be, and gives back
    /// a wait for the rest of `events` when older calls are still in flight.
    pub(crate) fn resolve(mut self, events: Vec<(u64, RawEvent)>) -> Option<Delivered<'d>> {
        self.resolved = true;
        self.delivery
            .hand_in(self.partition, Some(self.number), events)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            // The call failed or was given up: its events, if it ran, are lost; the
            // replies that waited for it need not wait any longer.
            self.delivery
                .hand_in(self.partition, Some(self.number), Vec::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use partcache::EventKind;

    fn event(blob: &str) -> RawEvent {
        RawEvent {
            kind: EventKind::Created,
            blob: blob.as_bytes().to_vec(),
        }
    }

    /// A deadline no test reaches.
    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn drain(rx: &mut broadcast::Receiver<RawEvent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(String::from_utf8(e.blob).unwrap());
        }
        out
    }

    #[test]
    fn a_later_reply_that_comes_back_first_waits_for_the_older_call() {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        let reaper = delivery.ticket(3, far());
        let put = delivery.ticket(3, far());
        // The put ran after the reaper (number 2) but its reply is handled first.
        let waiting = put.resolve(vec![(2, event("created"))]);
        assert!(drain(&mut rx).is_empty(), "held for the reaper's call");
        let mut waiting = waiting.expect("the put waits");
        assert!(waiting.done.try_recv().is_err());
        assert!(reaper.resolve(vec![(1, event("expired"))]).is_none());
        assert_eq!(drain(&mut rx), ["expired", "created"]);
        assert!(waiting.done.try_recv().is_ok());
        assert!(delivery.state.lock().partitions.is_empty());
    }

    #[test]
    fn a_call_given_up_does_not_hold_the_others() {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        let lost = delivery.ticket(0, far());
        let put = delivery.ticket(0, far());
        let waiting = put.resolve(vec![(7, event("a"))]).expect("waits");
        drop(lost);
        assert_eq!(drain(&mut rx), ["a"]);
        drop(waiting);
        assert!(delivery.state.lock().partitions.is_empty());
    }

    #[tokio::test]
    async fn a_call_whose_future_is_kept_but_not_polled_holds_the_others_only_until_their_deadline()
    {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        let stuck = delivery.ticket(0, far());
        let put = delivery.ticket(0, far());
        let waiting = put.resolve(vec![(7, event("a"))]).expect("waits");
        waiting
            .wait(std::time::Instant::now() + std::time::Duration::from_millis(10))
            .await;
        assert_eq!(drain(&mut rx), ["a"]);
        // The partition's state is gone; a new call's ticket is not mistaken for the
        // stuck one's when that comes back after all: its events wait for the new
        // call, which may have run first, and then go out in number order.
        let next = delivery.ticket(0, far());
        assert!(stuck.resolve(vec![(6, event("late"))]).is_some());
        assert!(drain(&mut rx).is_empty(), "held for the new call");
        assert!(next.resolve(vec![(8, event("c"))]).is_none());
        assert_eq!(drain(&mut rx), ["late", "c"]);
        assert!(delivery.state.lock().partitions.is_empty());
    }

    #[test]
    fn partitions_do_not_wait_for_each_other() {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        let _other = delivery.ticket(1, far());
        assert!(
            delivery
                .ticket(2, far())
                .resolve(vec![(1, event("x"))])
                .is_none()
        );
        assert_eq!(drain(&mut rx), ["x"]);
    }

    #[test]
    fn a_message_of_another_process_waits_for_older_calls_and_keeps_number_order() {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        let put = delivery.ticket(5, far());
        delivery.arrived(5, 9, event("theirs"));
        assert!(drain(&mut rx).is_empty());
        assert!(put.resolve(vec![(8, event("ours"))]).is_none());
        assert_eq!(drain(&mut rx), ["ours", "theirs"]);
    }

    #[test]
    fn calls_sent_after_a_reply_came_back_never_hold_it() {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        let older = delivery.ticket(4, far());
        let reply = delivery.ticket(4, far());
        let _waiting = reply.resolve(vec![(3, event("mine"))]).expect("waits");
        let later = delivery.ticket(4, far());
        assert!(older.resolve(Vec::new()).is_none());
        assert_eq!(drain(&mut rx), ["mine"]);
        assert!(later.resolve(vec![(4, event("later"))]).is_none());
        assert_eq!(drain(&mut rx), ["later"]);
    }

    #[test]
    fn a_call_past_its_deadline_does_not_hold_other_processes_messages() {
        let (tx, mut rx) = broadcast::channel(16);
        let delivery = Delivery::new(tx);
        // Kept, never polled again, and past its deadline.
        let _stuck = delivery.ticket(6, Instant::now());
        delivery.arrived(6, 4, event("theirs"));
        assert_eq!(drain(&mut rx), ["theirs"]);
        assert!(delivery.state.lock().partitions.is_empty());
    }
}
