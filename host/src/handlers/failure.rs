//! Why a message could not be handled: [`ErrorKind`], the closed set of
//! dead-letter kinds (the value of the `stagehost-error-kind` header), and
//! [`HandlerFailure`], what a call into a handler can end with.

use std::fmt;

/// Every reason a message is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The value is not JSON (a routed stage needs JSON).
    InvalidJson,
    /// The routing field is absent, or the value is not a JSON object.
    MissingRoute,
    /// The routing field holds no known value (or the handler is gone).
    UnknownRoute,
    /// The handler said the input is bad.
    InvalidInput,
    /// The handler said the failure is temporary, every attempt.
    Transient,
    /// The guest trapped: a panic, an unreachable, a bad memory access, an exit.
    Trap,
    /// The call ran past its wall-time limit.
    Timeout,
    /// The guest tried to grow its memory past its limit.
    MemoryLimit,
    /// The call used up its fuel.
    FuelExhausted,
    /// A fresh instance could not be created.
    InstantiateFailed,
    /// The outputs broke the handler's limits or Kafka's record size.
    InvalidOutput,
    /// An output named a topic the stage may not write to.
    ForbiddenTopic,
    /// The brokers refused an output for good.
    ProduceFailed,
    /// A message of a stage with state has no key (state is kept per key).
    MissingKey,
    /// The message's state changes would pass `limits.state_bytes` or
    /// `limits.state_writes`; none of them is kept.
    StateLimit,
}

impl ErrorKind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::InvalidJson,
        ErrorKind::MissingRoute,
        ErrorKind::UnknownRoute,
        ErrorKind::InvalidInput,
        ErrorKind::Transient,
        ErrorKind::Trap,
        ErrorKind::Timeout,
        ErrorKind::MemoryLimit,
        ErrorKind::FuelExhausted,
        ErrorKind::InstantiateFailed,
        ErrorKind::InvalidOutput,
        ErrorKind::ForbiddenTopic,
        ErrorKind::ProduceFailed,
        ErrorKind::MissingKey,
        ErrorKind::StateLimit,
    ];

    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid-json",
            ErrorKind::MissingRoute => "missing-route",
            ErrorKind::UnknownRoute => "unknown-route",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Transient => "transient",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::FuelExhausted => "fuel-exhausted",
            ErrorKind::InstantiateFailed => "instantiate-failed",
            ErrorKind::InvalidOutput => "invalid-output",
            ErrorKind::ForbiddenTopic => "forbidden-topic",
            ErrorKind::ProduceFailed => "produce-failed",
            ErrorKind::MissingKey => "missing-key",
            ErrorKind::StateLimit => "state-limit",
        }
    }

    /// The kind a header value names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A kind equals its header text, so `kind == "timeout"` reads as it says.
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, text: &&str) -> bool {
        self.as_str() == *text
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call into a handler failed. Each case is a dead-letter kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerFailure {
    /// The handler said the input is bad.
    #[error("{0}")]
    InvalidInput(String),
    /// The handler reported a temporary failure.
    #[error("{0}")]
    Transient(String),
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    #[error("{0}")]
    Trap(String),
    /// The call ran past its time limit.
    #[error("handler ran longer than its {0} ms limit")]
    Timeout(u64),
    /// The guest tried to grow its memory past its limit.
    #[error("handler exceeded its {0} MiB memory limit")]
    MemoryLimit(u64),
    /// The call used up its fuel.
    #[error("handler used up its fuel ({0})")]
    FuelExhausted(u64),
    /// A fresh instance could not be created.
    #[error("could not instantiate the handler: {0}")]
    Instantiate(String),
}

impl HandlerFailure {
    /// The dead-letter kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HandlerFailure::InvalidInput(_) => ErrorKind::InvalidInput,
            HandlerFailure::Transient(_) => ErrorKind::Transient,
            HandlerFailure::Trap(_) => ErrorKind::Trap,
            HandlerFailure::Timeout(_) => ErrorKind::Timeout,
            HandlerFailure::MemoryLimit(_) => ErrorKind::MemoryLimit,
            HandlerFailure::FuelExhausted(_) => ErrorKind::FuelExhausted,
            HandlerFailure::Instantiate(_) => ErrorKind::InstantiateFailed,
        }
    }

    /// Whether the instance must be discarded after this failure.
    pub fn poisons_instance(&self) -> bool {
        !matches!(
            self,
            HandlerFailure::InvalidInput(_) | HandlerFailure::Transient(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_text() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(ErrorKind::parse("no-such-kind"), None);
    }
}
