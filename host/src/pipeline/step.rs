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
use crate::handlers::bindings::{HeaderRef, MessageRef, Output};
use crate::handlers::canary::{Canary, Side, VersionTally};
use crate::handlers::shadow::{Difference, Shadow};
use crate::handlers::{ErrorKind, HandlerComponent, HandlerFailure, HandlerInstance, Registry};
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

/// A worker's handlers: per handler (and per version on trial, while a
/// canary or shadow runs) its reusable instance and its metric series,
/// kept from message to message.
#[derive(Default)]
pub(crate) struct WorkerHandlers {
    /// Few per stage: a list is quicker to search than a map.
    slots: Vec<(String, Role, HandlerSlot)>,
}

/// Which of a handler's versions a slot runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The serving version (the stable side of a canary).
    Serving,
    /// The canary.
    Canary,
    /// The shadow.
    Shadow,
}

struct HandlerSlot {
    /// `None` before the first message, and after a trap discarded it.
    instance: Option<HandlerInstance>,
    metrics: HandlerMetrics,
}

/// A slot's instance of `component`: the one `kept` from the last message
/// when it is of that version, else a fresh one (the old one dropped).
async fn instance_of<'a>(
    kept: &'a mut Option<HandlerInstance>,
    component: &Arc<HandlerComponent>,
) -> Result<&'a mut HandlerInstance, HandlerFailure> {
    if kept
        .as_ref()
        .is_some_and(|instance| Arc::ptr_eq(instance.component(), component))
    {
        return Ok(kept.as_mut().expect("just checked"));
    }
    *kept = None;
    Ok(kept.insert(component.instantiate().await?))
}

impl WorkerHandlers {
    /// The slot of `handler`'s version in `role`. Once neither a canary
    /// nor a shadow runs (`trial` is false), their slots' instances are let
    /// go.
    fn slot(
        &mut self,
        handler: &str,
        role: Role,
        trial: bool,
        stage: &StageMetrics,
    ) -> &mut HandlerSlot {
        if !trial {
            for (name, known, gone) in &mut self.slots {
                // The role first: without trials no name is compared.
                if *known != Role::Serving && name == handler {
                    gone.instance = None;
                }
            }
        }
        let index = match self
            .slots
            .iter()
            .position(|(name, known, _)| name == handler && *known == role)
        {
            Some(index) => index,
            None => {
                let slot = HandlerSlot {
                    instance: None,
                    metrics: stage.handler_metrics(handler),
                };
                self.slots.push((handler.to_string(), role, slot));
                self.slots.len() - 1
            }
        };
        &mut self.slots[index].2
    }
}

/// Where a message goes, from one look at the registry: its handler, the
/// version that runs it, the handler's canary with the side the message is
/// on, and the handler's shadow, while one runs.
#[derive(Clone, Copy)]
struct Routed<'r> {
    name: &'r str,
    component: &'r Arc<HandlerComponent>,
    canary: Option<(&'r Canary, Side)>,
    shadow: Option<&'r Shadow>,
}

impl Routed<'_> {
    fn role(&self) -> Role {
        match self.canary {
            Some((_, Side::Canary)) => Role::Canary,
            _ => Role::Serving,
        }
    }

    fn trial(&self) -> bool {
        self.canary.is_some() || self.shadow.is_some()
    }

    /// The tally this message counts toward, while a canary runs.
    fn tally(&self) -> Option<&VersionTally> {
        self.canary.map(|(canary, side)| canary.tally(side))
    }

    fn same_version(&self, other: &Routed<'_>) -> bool {
        self.name == other.name && Arc::ptr_eq(self.component, other.component)
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

    /// [`Stage::plan`] for several messages of one partition, in order: one
    /// plan per message, the same as [`Stage::plan`] would give each alone.
    ///
    /// Messages are routed with one look at the registry, so a hot swap
    /// never splits a batch across versions. Each handler whose component
    /// exports `handle-batch` gets its messages in one call; a batch that
    /// fails as a whole (a trap, a timeout, the memory or fuel limit) is
    /// rerun one message at a time on a fresh instance, so only the culprit
    /// is dead-lettered. Stateful stages call `handle` for each message, so
    /// that each message's state changes are its own.
    pub(crate) async fn plan_batch(
        &self,
        messages: &[OwnedMessage],
        handlers: &mut WorkerHandlers,
    ) -> anyhow::Result<Vec<Plan>> {
        if messages.len() == 1 || self.state.is_some() {
            let mut plans = Vec::with_capacity(messages.len());
            for message in messages {
                plans.push(self.plan(message, handlers).await?);
            }
            return Ok(plans);
        }
        let registry = self.registry.load_full();
        let mut outcomes: Vec<Option<Result<Vec<Record>, DeadLetter>>> =
            (0..messages.len()).map(|_| None).collect();
        // Per handler version, in order of first appearance, the messages
        // it gets.
        let mut groups: Vec<(Routed<'_>, Vec<usize>)> = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match self.route_of(&registry, message) {
                Err(letter) => outcomes[index] = Some(Err(letter)),
                Ok(routed) => match groups
                    .iter_mut()
                    .find(|(known, _)| known.same_version(&routed))
                {
                    Some((_, members)) => members.push(index),
                    None => groups.push((routed, vec![index])),
                },
            }
        }
        for (routed, members) in groups {
            let mut answers = self.call_batch(messages, &members, handlers, routed).await;
            for (position, &index) in members.iter().enumerate() {
                let given = answers
                    .as_mut()
                    .map(|answers| std::mem::replace(&mut answers[position], Ok(Vec::new())));
                outcomes[index] = Some(
                    self.call_routed(&messages[index], handlers, None, routed, given)
                        .await,
                );
            }
        }
        Ok(messages
            .iter()
            .zip(outcomes)
            .map(|(message, outcome)| {
                match outcome.expect("every message of the batch has an outcome") {
                    Ok(records) => Plan::Outputs(records),
                    Err(letter) => {
                        self.log_dead_letter(message, &letter);
                        Plan::DeadLetter(self.dead_letter_record(message, &letter))
                    }
                }
            })
            .collect())
    }

    /// One `handle-batch` call for the messages at `members`: the handler's
    /// answer for each, or `None` when they are to be run one at a time (the
    /// component has no `handle-batch`, there is one message, or the batch
    /// failed as a whole, whose instance is then dropped).
    async fn call_batch(
        &self,
        messages: &[OwnedMessage],
        members: &[usize],
        handlers: &mut WorkerHandlers,
        routed: Routed<'_>,
    ) -> Option<Vec<Result<Vec<Output>, HandlerFailure>>> {
        let Routed {
            name, component, ..
        } = routed;
        if members.len() < 2 || !component.has_batch() {
            return None;
        }
        let slot = handlers.slot(name, routed.role(), routed.trial(), &self.metrics);
        // A failure to instantiate is met again, and reported, per message.
        let instance = instance_of(&mut slot.instance, component).await.ok()?;
        let texts: Vec<HeaderTexts<'_>> = members
            .iter()
            .map(|&index| HeaderTexts::of(&messages[index]))
            .collect();
        let headers: Vec<Vec<HeaderRef<'_>>> = texts.iter().map(HeaderTexts::refs).collect();
        let inputs: Vec<MessageRef<'_>> = members
            .iter()
            .zip(&headers)
            .map(|(&index, headers)| wit_message(&messages[index], headers))
            .collect();
        let started = Instant::now();
        let answered = instance.handle_batch(&inputs).await;
        // The histogram is per message: each gets its share of the call.
        let share = started.elapsed().as_secs_f64() / members.len() as f64;
        for _ in members {
            slot.metrics.call_took(share);
            if let Some(tally) = routed.tally() {
                tally.call_took(share);
            }
        }
        slot.metrics.batch(members.len());
        match answered {
            Ok(answers) => Some(answers),
            Err(failure) => {
                slot.instance = None;
                tracing::debug!(
                    stage = %self.plan.name,
                    handler = name,
                    messages = members.len(),
                    cause = %failure,
                    "a batch failed as a whole; running its messages one at a time"
                );
                None
            }
        }
    }

    /// Routes the message and runs its handler, retrying transient errors.
    pub(crate) async fn run_handler(
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
        let routed = self.route_of(&registry, message)?;
        self.call_routed(message, handlers, partition_state, routed, None)
            .await
    }

    /// The handler a message goes to, from one look at the registry.
    fn route_of<'r>(
        &self,
        registry: &'r Registry,
        message: &OwnedMessage,
    ) -> Result<Routed<'r>, DeadLetter> {
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
        let canary = registry.canary(name).map(|canary| {
            let takes = canary.takes(message.key(), message.partition(), message.offset());
            let side = if takes { Side::Canary } else { Side::Stable };
            (&**canary, side)
        });
        let component = match canary {
            Some((canary, Side::Canary)) => canary.component(),
            _ => component,
        };
        Ok(Routed {
            name,
            component,
            canary,
            shadow: registry.shadow(name).map(|shadow| &**shadow),
        })
    }

    /// Runs the message's handler (the version `routed` chose), retrying
    /// transient errors, and checks its outputs. `given` is the handler's
    /// first answer when a batch call already gave it: it counts as the
    /// first attempt, so a message comes out of a batch exactly as it would
    /// alone. While a canary runs, the outcome counts toward its side.
    async fn call_routed(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
        partition_state: Option<(&Arc<StageState>, SharedPartition)>,
        routed: Routed<'_>,
        given: Option<Result<Vec<Output>, HandlerFailure>>,
    ) -> Result<Vec<Record>, DeadLetter> {
        // The shadow runs first, so that it sees the state the serving
        // version sees.
        let shadowed = match routed.shadow {
            Some(shadow) => Some(
                self.run_shadow(
                    message,
                    handlers,
                    partition_state.as_ref(),
                    routed.name,
                    shadow,
                )
                .await,
            ),
            None => None,
        };
        let outcome = self
            .run_routed(message, handlers, partition_state, routed, given)
            .await;
        if let Some(tally) = routed.tally() {
            match &outcome {
                Ok(records) => tally.handled(records.len()),
                Err(letter) => tally.dead_lettered(letter.kind),
            }
        }
        if let (Some(shadow), Some(shadowed)) = (routed.shadow, shadowed) {
            self.compare_shadow(message, shadow, &outcome, &shadowed);
        }
        outcome
    }

    /// Runs the shadow version on a message once (no retries), with a
    /// throwaway overlay of the serving state: what it would have made,
    /// checked as outputs are, and never produced.
    async fn run_shadow(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
        partition_state: Option<&(&Arc<StageState>, SharedPartition)>,
        name: &str,
        shadow: &Shadow,
    ) -> Result<Vec<Record>, DeadLetter> {
        let component = shadow.component();
        let identity = || Some((name.to_string(), component.version().to_string()));
        let failed = |failure: HandlerFailure| DeadLetter {
            kind: failure.kind(),
            reason: failure.to_string(),
            handler: identity(),
        };
        let header_texts = HeaderTexts::of(message);
        let headers = header_texts.refs();
        let input = wit_message(message, &headers);
        let slot = handlers.slot(name, Role::Shadow, true, &self.metrics);
        let instance = instance_of(&mut slot.instance, component)
            .await
            .map_err(failed)?;
        if let Some((_, partition)) = partition_state {
            lend_state(instance, component, message, partition);
        }
        let handled = instance.handle_borrowed(input).await;
        // The overlay of the shadow's writes is dropped here, unread.
        drop(instance.take_state());
        let outputs = handled.map_err(|failure| {
            if failure.poisons_instance() {
                slot.instance = None;
            }
            failed(failure)
        })?;
        output_records(
            outputs,
            &self.outputs,
            &component.limits(),
            message.key(),
            message.headers(),
            name,
            component.version(),
        )
        .map_err(|refused| DeadLetter {
            kind: refused.kind(),
            reason: refused.to_string(),
            handler: identity(),
        })
    }

    /// Counts whether the shadow made what the serving version made, and
    /// keeps the message's two outcomes when not.
    fn compare_shadow(
        &self,
        message: &OwnedMessage,
        shadow: &Shadow,
        serving: &Result<Vec<Record>, DeadLetter>,
        shadowed: &Result<Vec<Record>, DeadLetter>,
    ) {
        let changelog = self.state.as_ref().map(|state| state.changelog());
        let (serving, shadowed) = (
            outcome_view(serving, changelog),
            outcome_view(shadowed, changelog),
        );
        if serving == shadowed {
            shadow.agreed();
        } else {
            shadow.differed(Difference {
                partition: message.partition(),
                offset: message.offset(),
                serving,
                shadow: shadowed,
            });
        }
    }

    /// [`Stage::call_routed`] before its outcome is counted.
    async fn run_routed(
        &self,
        message: &OwnedMessage,
        handlers: &mut WorkerHandlers,
        partition_state: Option<(&Arc<StageState>, SharedPartition)>,
        routed: Routed<'_>,
        given: Option<Result<Vec<Output>, HandlerFailure>>,
    ) -> Result<Vec<Record>, DeadLetter> {
        let Routed {
            name, component, ..
        } = routed;
        let mut given = given;
        let identity = || Some((name.to_string(), component.version().to_string()));
        let header_texts = HeaderTexts::of(message);
        let headers = header_texts.refs();
        let input = wit_message(message, &headers);
        let retry = self.plan.retry;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        let mut attempt = 1;
        let slot = handlers.slot(name, routed.role(), routed.trial(), &self.metrics);
        let outputs = loop {
            let (handled, state) = match given.take() {
                Some(answer) => (answer, None),
                None => {
                    let instance = match instance_of(&mut slot.instance, component).await {
                        Ok(instance) => instance,
                        Err(failure) => {
                            self.metrics.handler_error(name, failure.kind());
                            break Err(failure);
                        }
                    };
                    if let Some((_, partition)) = &partition_state {
                        lend_state(instance, component, message, partition);
                    }
                    let started = Instant::now();
                    let handled = instance.handle_borrowed(input).await;
                    let took = started.elapsed().as_secs_f64();
                    slot.metrics.call_took(took);
                    if let Some(tally) = routed.tally() {
                        tally.call_took(took);
                    }
                    let state = partition_state.as_ref().and_then(|_| {
                        let lent = instance.take_state()?;
                        lent.into_any().downcast::<MessageState>().ok()
                    });
                    (handled, state)
                }
            };
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
                message.headers(),
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
        let reason = letter.reason_line();
        tracing::warn!(
            stage = %self.plan.name,
            kind = letter.kind.as_str(),
            reason = %reason,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            handler = letter.handler.as_ref().map(|(name, _)| name.as_str()),
            "message dead-lettered"
        );
        self.metrics
            .recent_dead_letters()
            .record(&self.plan.name, message, letter, reason);
    }
}

/// Lends `instance` the state `message` sees in `partition`, within the
/// component's state limits, for one call.
fn lend_state(
    instance: &mut HandlerInstance,
    component: &HandlerComponent,
    message: &OwnedMessage,
    partition: &SharedPartition,
) {
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

/// What a message came out as, for comparing a shadow with the serving
/// version: each output's topic, key, value and the handler's own headers
/// (the host's `stagehost-*` ones name the version, so they always differ),
/// or the dead letter's kind. Changelog records are left out: a shadow's
/// state writes are thrown away.
fn outcome_view(
    outcome: &Result<Vec<Record>, DeadLetter>,
    changelog: Option<&str>,
) -> serde_json::Value {
    let bytes = |bytes: Option<&[u8]>| bytes.map_or(serde_json::Value::Null, headers::bytes_json);
    match outcome {
        Ok(records) => {
            let outputs: Vec<serde_json::Value> = records
                .iter()
                .filter(|record| Some(record.topic.as_str()) != changelog)
                .map(|record| {
                    let headers: serde_json::Map<String, serde_json::Value> =
                        headers::raw_headers(&record.headers)
                            .iter()
                            .filter(|header| !header.key.starts_with(b"stagehost-"))
                            .map(|header| (header.key_text().into_owned(), bytes(header.value)))
                            .collect();
                    serde_json::json!({
                        "topic": record.topic,
                        "key": bytes(record.key.as_deref()),
                        "value": bytes(record.value.as_deref()),
                        "headers": headers,
                    })
                })
                .collect();
            serde_json::json!({ "outputs": outputs })
        }
        Err(letter) => serde_json::json!({ "dead_letter": { "kind": letter.kind.as_str() } }),
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
