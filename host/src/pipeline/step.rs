//! The per-message step both delivery modes share: route the message, run
//! its handler in the sandbox (retrying transient errors with backoff), and
//! turn the answer into a [`Plan`]: the records to produce, or the
//! message's one dead letter.

use super::Stage;
use super::dead_letter::{self, DeadLetter, Source};
use super::delivery::Backoff;
use super::metrics::{HandlerMetrics, StageMetrics};
use super::outputs::{Record, output_records};
use super::state::access::{self, MessageState, Refusal, SharedPartition, StateLimits};
use super::state::{StageState, now_ms};
use crate::handlers::bindings::{HeaderRef, MessageRef};
use crate::handlers::{ErrorKind, HandlerFailure, HandlerInstance};
use crate::kafka::headers::{self, RawHeader};
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

/// What one message turns into.
pub(crate) enum Plan {
    /// Its outputs, checked and ready to produce (possibly none).
    Outputs(Vec<Record>),
    /// Its dead letter.
    DeadLetter(Record),
}

/// A worker's handlers: per handler its reusable instance and its metric
/// series, kept from message to message.
#[derive(Default)]
pub(crate) struct WorkerHandlers {
    /// Few per stage: a list is quicker to search than a map.
    slots: Vec<(String, HandlerSlot)>,
}

struct HandlerSlot {
    /// `None` before the first message, and after a trap discarded it.
    instance: Option<HandlerInstance>,
    metrics: HandlerMetrics,
}

impl WorkerHandlers {
    fn slot(&mut self, handler: &str, stage: &StageMetrics) -> &mut HandlerSlot {
        let index = match self.slots.iter().position(|(name, _)| name == handler) {
            Some(index) => index,
            None => {
                let slot = HandlerSlot {
                    instance: None,
                    metrics: stage.handler_metrics(handler),
                };
                self.slots.push((handler.to_string(), slot));
                self.slots.len() - 1
            }
        };
        &mut self.slots[index].1
    }
}

impl Stage {
    /// The records a message turns into (with a stateful stage, its
    /// changelog records among them, its changes recorded). Fails only when
    /// the stage's state cannot be read or written, which stops the stage.
    pub(crate) async fn plan(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
    ) -> anyhow::Result<Plan> {
        Ok(match self.run_handler(message, handlers).await? {
            Ok(records) => Plan::Outputs(records),
            Err(letter) => {
                self.log_dead_letter(message, &letter);
                Plan::DeadLetter(self.dead_letter_record(message, &letter))
            }
        })
    }

    /// Routes the message and runs its handler, retrying transient errors.
    async fn run_handler(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
    ) -> anyhow::Result<Result<Vec<Record>, DeadLetter>> {
        let partition_state = match &self.state {
            None => None,
            Some(state) => {
                if message.key().is_none_or(<[u8]>::is_empty) {
                    return Ok(Err(DeadLetter {
                        kind: ErrorKind::MissingKey,
                        reason: format!(
                            "stage `{}` keeps state per key, and this message has no key",
                            self.plan.name
                        ),
                        handler: None,
                    }));
                }
                Some((state, state.partition(message.partition())?))
            }
        };
        Ok(self.call_handler(message, handlers, partition_state).await)
    }

    /// [`Stage::run_handler`] once the message's state is at hand.
    async fn call_handler(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
        partition_state: Option<(&Arc<StageState>, SharedPartition)>,
    ) -> Result<Vec<Record>, DeadLetter> {
        let registry = self.registry.load();
        let value = message.payload().unwrap_or_default();
        let route = registry.route(&self.plan.name).ok_or_else(|| DeadLetter {
            kind: ErrorKind::UnknownRoute,
            reason: format!("stage `{}` has no routes", self.plan.name),
            handler: None,
        })?;
        let name = route.resolve(value).map_err(|err| DeadLetter {
            kind: err.kind(),
            reason: err.to_string(),
            handler: None,
        })?;
        let component = registry.handler(name).ok_or_else(|| DeadLetter {
            kind: ErrorKind::UnknownRoute,
            reason: format!("handler `{name}` is not loaded"),
            handler: None,
        })?;
        let identity = || Some((name.to_string(), component.version().to_string()));
        let header_texts = HeaderTexts::of(message);
        let headers = header_texts.refs();
        let input = wit_message(message, &headers);
        let retry = self.plan.retry;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        let mut attempt = 1;
        let slot = handlers.slot(name, &self.metrics);
        let outputs = loop {
            let instance = match &mut slot.instance {
                Some(instance) if Arc::ptr_eq(instance.component(), component) => instance,
                _ => {
                    slot.instance = None;
                    match component.instantiate().await {
                        Ok(instance) => slot.instance.insert(instance),
                        Err(failure) => {
                            self.metrics.handler_error(name, failure.kind());
                            break Err(failure);
                        }
                    }
                }
            };
            if let Some((_, partition)) = &partition_state {
                let limits = component.limits();
                let limits = StateLimits {
                    bytes: limits.state_bytes,
                    writes: limits.state_writes,
                };
                let now = message
                    .timestamp()
                    .to_millis()
                    .and_then(|ms| u64::try_from(ms).ok())
                    .unwrap_or_else(now_ms);
                instance.lend_state(Box::new(MessageState::new(partition.clone(), now, limits)));
            }
            let started = Instant::now();
            let handled = instance.handle_borrowed(input).await;
            slot.metrics.call_took(started.elapsed().as_secs_f64());
            let state = partition_state.as_ref().and_then(|_| {
                let lent = instance.take_state()?;
                lent.into_any().downcast::<MessageState>().ok()
            });
            match handled {
                Ok(outputs) => break Ok((outputs, state)),
                Err(failure) => {
                    self.metrics.handler_error(name, failure.kind());
                    if failure.poisons_instance() {
                        slot.instance = None;
                    }
                    if matches!(failure, HandlerFailure::Transient(_))
                        && attempt < retry.max_attempts.get()
                    {
                        tracing::debug!(stage = %self.plan.name, handler = name, attempt, cause = %failure, "transient error; retrying");
                        backoff.wait().await;
                        attempt += 1;
                        continue;
                    }
                    break Err(failure);
                }
            }
        };
        let letter = match outputs {
            Ok((outputs, state)) => match output_records(
                outputs,
                &self.outputs,
                &component.limits(),
                message.key(),
                name,
                component.version(),
            ) {
                Ok(mut records) => {
                    slot.metrics.outputs(records.len() as u64);
                    let (Some((stage_state, partition)), Some(state)) = (&partition_state, state)
                    else {
                        return Ok(records);
                    };
                    match state.finish() {
                        Ok(changes) => {
                            records.extend(
                                stage_state.changelog_records(message.partition(), &changes),
                            );
                            let recorded = access::lock(partition)
                                .record(changes, self.transactions.is_some());
                            match recorded {
                                Ok(()) => return Ok(records),
                                Err(err) => DeadLetter {
                                    kind: ErrorKind::Transient,
                                    reason: format!("the state store failed: {err:#}"),
                                    handler: identity(),
                                },
                            }
                        }
                        Err(Refusal::Limit(reason)) => DeadLetter {
                            kind: ErrorKind::StateLimit,
                            reason,
                            handler: identity(),
                        },
                        Err(Refusal::Store(reason)) => DeadLetter {
                            kind: ErrorKind::Transient,
                            reason,
                            handler: identity(),
                        },
                    }
                }
                Err(refused) => DeadLetter {
                    kind: refused.kind(),
                    reason: refused.to_string(),
                    handler: identity(),
                },
            },
            Err(failure) => {
                let mut reason = failure.to_string();
                if matches!(failure, HandlerFailure::Transient(_)) {
                    reason = format!("{reason} (gave up after {attempt} attempts)");
                }
                DeadLetter {
                    kind: failure.kind(),
                    reason,
                    handler: identity(),
                }
            }
        };
        Err(letter)
    }

    /// The dead-letter record of a message.
    pub(crate) fn dead_letter_record(&self, message: &OwnedMessage, letter: &DeadLetter) -> Record {
        let source = Source {
            stage: &self.plan.name,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        Record {
            topic: self.plan.dead_letter.clone(),
            partition: None,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: dead_letter::dead_letter_headers(message.headers(), letter, source),
        }
    }

    /// Counts and logs a dead letter.
    pub(crate) fn log_dead_letter(&self, message: &OwnedMessage, letter: &DeadLetter) {
        self.metrics.dead_lettered(letter.kind);
        tracing::warn!(
            stage = %self.plan.name,
            kind = letter.kind.as_str(),
            reason = %letter.reason_line(),
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            handler = letter.handler.as_ref().map(|(name, _)| name.as_str()),
            "message dead-lettered"
        );
    }
}

/// A consumed record's headers as the handler sees them: keys as text,
/// each invalid UTF-8 sequence replaced, since any producer may send a key
/// that is not UTF-8. Empty (and allocating nothing) for a record without
/// headers.
struct HeaderTexts<'a> {
    raw: Vec<RawHeader<'a>>,
    keys: Vec<Cow<'a, str>>,
}

impl<'a> HeaderTexts<'a> {
    fn of(message: &'a OwnedMessage) -> Self {
        let raw = message
            .headers()
            .map(headers::raw_headers)
            .unwrap_or_default();
        let keys = raw.iter().map(RawHeader::key_text).collect();
        Self { raw, keys }
    }

    fn refs(&self) -> Vec<HeaderRef<'_>> {
        self.keys
            .iter()
            .zip(&self.raw)
            .map(|(key, header)| HeaderRef {
                key,
                value: header.value.unwrap_or_default(),
            })
            .collect()
    }
}

/// The message as the handler sees it, borrowed from the consumed record.
fn wit_message<'a>(message: &'a OwnedMessage, headers: &'a [HeaderRef<'a>]) -> MessageRef<'a> {
    MessageRef {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        value: message.payload().unwrap_or_default(),
        headers,
        timestamp: message.timestamp().to_millis(),
    }
}
