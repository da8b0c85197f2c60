//! A partition's messages whose records are on their way to the brokers, in
//! input order: "acknowledge in order, then store the offset".
//!
//! Records are handed to the producer as soon as a message is handled, so
//! many messages can be in flight; but an input offset may be stored only
//! once every record of that message and of every earlier message is
//! answered. Only the oldest message is awaited: its offset is the next one
//! to store. Once a message could not be delivered at all (not even its dead
//! letter), no later offset is stored either, so that a commit never skips
//! it and it is consumed again after a restart.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One record's way to the brokers: waiting for the answer, or answered.
pub(crate) enum Delivery<F: Future> {
    /// Waiting for the brokers' answer.
    Sent(F),
    /// Answered (or refused at once): the error, if any.
    Done(Option<String>),
}

/// One handled message and its records' deliveries.
pub(crate) struct Pending<M, F: Future, L> {
    /// The input message.
    pub(crate) message: M,
    /// Its input offset.
    pub(crate) offset: i64,
    /// One per record, in the order they were sent.
    pub(crate) deliveries: Vec<Delivery<F>>,
    /// The message's dead letter, when that is what was sent (kept so that
    /// a refused dead letter can be sent again).
    pub(crate) letter: Option<L>,
}

impl<M, F: Future, L> Pending<M, F, L> {
    /// The first delivery error, once every delivery is answered.
    pub(crate) fn failure(&mut self) -> Option<String> {
        self.deliveries
            .iter_mut()
            .find_map(|delivery| match delivery {
                Delivery::Done(Some(reason)) => Some(std::mem::take(reason)),
                _ => None,
            })
    }
}

/// The queue of one partition's pending messages.
pub(crate) struct PendingQueue<M, F: Future, L> {
    queue: VecDeque<Pending<M, F, L>>,
    /// False once a message could not be delivered.
    storing: bool,
    /// How an answer reads: `None` when the record was taken.
    read: fn(F::Output) -> Option<String>,
}

impl<M, F: Future + Unpin, L> PendingQueue<M, F, L> {
    /// An empty queue whose answers `read` turns into an error or none.
    pub(crate) fn new(read: fn(F::Output) -> Option<String>) -> Self {
        Self {
            queue: VecDeque::new(),
            storing: true,
            read,
        }
    }

    /// Messages in the queue.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Adds a handled message behind the others.
    pub(crate) fn push(&mut self, pending: Pending<M, F, L>) {
        self.queue.push_back(pending);
    }

    /// Resolves once every record of the oldest message is answered; never
    /// while the queue is empty. It can be dropped and called again: what
    /// was answered is kept.
    pub(crate) async fn oldest_answered(&mut self) {
        let read = self.read;
        let Some(oldest) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        std::future::poll_fn(|cx: &mut Context<'_>| {
            for delivery in &mut oldest.deliveries {
                if let Delivery::Sent(future) = delivery {
                    let answer = std::task::ready!(Pin::new(future).poll(cx));
                    *delivery = Delivery::Done(read(answer));
                }
            }
            Poll::Ready(())
        })
        .await
    }

    /// Takes the oldest message once [`PendingQueue::oldest_answered`]
    /// resolved (or the queue is drained in order).
    pub(crate) fn pop(&mut self) -> Option<Pending<M, F, L>> {
        self.queue.pop_front()
    }

    /// Records how a taken message ended: `Some(offset)` when it was
    /// delivered (outputs or dead letter) and its offset may be stored;
    /// `None` when it was not, which stops every later offset too.
    pub(crate) fn settled(&mut self, delivered: Option<i64>) -> Option<i64> {
        match delivered {
            Some(offset) if self.storing => Some(offset),
            _ => {
                self.storing = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    type Answer = oneshot::Receiver<Result<(), String>>;
    type Queue = PendingQueue<&'static str, Answer, ()>;
    type Message = Pending<&'static str, Answer, ()>;
    type Answerer = oneshot::Sender<Result<(), String>>;

    fn read(answer: Result<Result<(), String>, oneshot::error::RecvError>) -> Option<String> {
        match answer {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some("closed".into()),
        }
    }

    /// A pending message with `records` deliveries, and their senders.
    fn message(name: &'static str, offset: i64, records: usize) -> (Message, Vec<Answerer>) {
        let (senders, deliveries) = (0..records)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                (tx, Delivery::Sent(rx))
            })
            .unzip();
        let pending = Pending {
            message: name,
            offset,
            deliveries,
            letter: None,
        };
        (pending, senders)
    }

    /// Whether `oldest_answered` resolves without waiting.
    async fn answered_now(queue: &mut Queue) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, queue.oldest_answered())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_the_oldest_message_is_awaited_and_taken_in_order() {
        let mut queue = Queue::new(read);
        let (first, mut first_answers) = message("first", 10, 2);
        let (second, mut second_answers) = message("second", 11, 1);
        queue.push(first);
        queue.push(second);
        assert_eq!(queue.len(), 2);
        // The second message's answer comes first: nothing is ready yet.
        second_answers.remove(0).send(Ok(())).unwrap();
        assert!(!answered_now(&mut queue).await);
        first_answers.remove(0).send(Ok(())).unwrap();
        assert!(!answered_now(&mut queue).await, "one record still out");
        first_answers.remove(0).send(Ok(())).unwrap();
        assert!(answered_now(&mut queue).await);
        let mut taken = queue.pop().unwrap();
        assert_eq!((taken.message, taken.offset), ("first", 10));
        assert_eq!(taken.failure(), None);
        assert!(answered_now(&mut queue).await);
        assert_eq!(queue.pop().unwrap().message, "second");
        assert!(queue.is_empty());
        assert!(
            !answered_now(&mut queue).await,
            "an empty queue never resolves"
        );
    }

    #[tokio::test]
    async fn a_refused_record_is_the_message_failure() {
        let mut queue = Queue::new(read);
        let (pending, mut answers) = message("m", 0, 3);
        queue.push(pending);
        answers.remove(0).send(Ok(())).unwrap();
        answers.remove(0).send(Err("too large".into())).unwrap();
        drop(answers);
        queue.oldest_answered().await;
        let mut taken = queue.pop().unwrap();
        assert_eq!(taken.failure(), Some("too large".into()));
    }

    #[test]
    fn no_offset_is_stored_after_an_undelivered_message() {
        let mut queue = Queue::new(read);
        assert_eq!(queue.settled(Some(4)), Some(4));
        assert_eq!(queue.settled(Some(5)), Some(5));
        assert_eq!(queue.settled(None), None);
        // Delivered later messages do not move the offset past the lost one.
        assert_eq!(queue.settled(Some(7)), None);
        assert_eq!(queue.settled(Some(8)), None);
    }
}
