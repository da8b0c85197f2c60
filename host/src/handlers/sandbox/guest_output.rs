//! What a guest writes, as host log lines: its stdout and stderr (one
//! event per whole line; a line the guest never finished is logged when its
//! stream goes away) and its `log` calls, all tagged with the handler's name
//! and paid for from one [`LogBudget`] per handler.
//!
//! The budget bounds the host log whatever a guest does: lines past it are
//! dropped and counted, lines longer than `max_line_bytes` are cut, control
//! characters are escaped (a guest cannot forge a host log line), and what
//! was dropped is summarised in one line per [`SUMMARY_INTERVAL`].

use crate::config::LogLimits;
use crate::handlers::bindings::Level;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How often dropped guest output is summarised, per handler.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Guest lines kept per handler for `host logs` (`GET /handlers/NAME/logs`).
pub const RECENT_LINES: usize = 500;

/// What an instance is running, for its log lines: the message's partition
/// and offset, or a self-test. Shared by the instance's streams and its
/// `log` import; set before each call.
#[derive(Debug, Default)]
pub struct CallPlace {
    partition: AtomicI64,
    offset: AtomicI64,
    self_test: AtomicBool,
}

impl CallPlace {
    const NONE: i64 = i64::MIN;

    /// Nothing known yet.
    pub fn new() -> Arc<Self> {
        let place = Self::default();
        place.partition.store(Self::NONE, Ordering::Relaxed);
        place.offset.store(Self::NONE, Ordering::Relaxed);
        Arc::new(place)
    }

    /// The instance now handles the message at `partition`/`offset`.
    pub fn at(&self, partition: i32, offset: i64) {
        self.partition
            .store(i64::from(partition), Ordering::Relaxed);
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// The instance runs self-test cases.
    pub fn self_test(&self) {
        self.self_test.store(true, Ordering::Relaxed);
    }

    fn read(&self) -> (Option<i64>, Option<i64>, bool) {
        let known = |value: i64| (value != Self::NONE).then_some(value);
        (
            known(self.partition.load(Ordering::Relaxed)),
            known(self.offset.load(Ordering::Relaxed)),
            self.self_test.load(Ordering::Relaxed),
        )
    }
}

/// One guest line as kept for `host logs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentLine {
    /// Its place in the handler's sequence of kept lines (from 1).
    pub seq: u64,
    /// When it was written, RFC 3339 UTC.
    pub time: String,
    /// `stdout`, `stderr` or `log`.
    pub stream: &'static str,
    /// Its level: `info` for stdout, `warn` for stderr, the guest's for `log`.
    pub level: &'static str,
    /// The input partition of the message being handled, if any.
    pub partition: Option<i64>,
    /// Its offset, if any.
    pub offset: Option<i64>,
    /// Whether it came from a self-test.
    pub self_test: bool,
    /// The line, as logged.
    pub text: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a guest line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout, logged at info level.
    Stdout,
    /// The guest's stderr, logged at warn level.
    Stderr,
    /// The world's `log` import, at the level the guest chose.
    Log(Level),
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log(_) => "log",
        }
    }
}

/// One handler's budget for guest output: two token buckets (lines and
/// bytes), shared by all its instances and versions.
pub struct LogBudget {
    handler: Arc<str>,
    state: Mutex<BudgetState>,
    dropped_lines: AtomicU64,
    recent: Mutex<(u64, std::collections::VecDeque<RecentLine>)>,
}

struct BudgetState {
    limits: LogLimits,
    lines: f64,
    bytes: f64,
    refilled: Instant,
    /// Dropped since the last summary: lines, and the bytes they held.
    unsummarised: (u64, u64),
    /// When the last summary was logged.
    summarised: Option<Instant>,
}

impl LogBudget {
    fn new(handler: &str, limits: LogLimits) -> Self {
        Self {
            handler: Arc::from(handler),
            state: Mutex::new(BudgetState {
                limits,
                lines: f64::from(limits.burst_lines),
                bytes: limits.burst_bytes as f64,
                refilled: Instant::now(),
                unsummarised: (0, 0),
                summarised: None,
            }),
            dropped_lines: AtomicU64::new(0),
            recent: Mutex::default(),
        }
    }

    /// The kept lines after `after` (a `seq`), oldest first.
    pub fn recent(&self, after: u64) -> Vec<RecentLine> {
        lock(&self.recent)
            .1
            .iter()
            .filter(|line| line.seq > after)
            .cloned()
            .collect()
    }

    fn keep(&self, mut line: RecentLine) {
        let mut recent = lock(&self.recent);
        recent.0 += 1;
        line.seq = recent.0;
        if recent.1.len() == RECENT_LINES {
            recent.1.pop_front();
        }
        recent.1.push_back(line);
    }

    /// The handler this budget belongs to.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The limits in force (the newest version's, after a swap).
    pub fn limits(&self) -> LogLimits {
        lock(&self.state).limits
    }

    /// Lines dropped since the host started (`stagehost_handler_log_dropped_total`).
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    fn set_limits(&self, limits: LogLimits) {
        let mut state = lock(&self.state);
        if state.limits != limits {
            state.limits = limits;
            state.lines = state.lines.min(f64::from(limits.burst_lines));
            state.bytes = state.bytes.min(limits.burst_bytes as f64);
        }
    }

    /// Takes one line of `bytes` from the budget; false (and counted) when
    /// the budget is spent.
    fn admit(&self, bytes: usize) -> bool {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        let limits = state.limits;
        state.lines = (state.lines + elapsed * f64::from(limits.lines_per_second))
            .min(f64::from(limits.burst_lines));
        state.bytes =
            (state.bytes + elapsed * limits.bytes_per_second as f64).min(limits.burst_bytes as f64);
        let cost = bytes as f64;
        if state.lines >= 1.0 && state.bytes >= cost {
            state.lines -= 1.0;
            state.bytes -= cost;
            return true;
        }
        state.unsummarised.0 += 1;
        state.unsummarised.1 += bytes as u64;
        drop(state);
        self.dropped_lines.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Logs one line saying what was dropped since the last summary, if
    /// anything was and the last summary is [`SUMMARY_INTERVAL`] old (or
    /// `now` is `None`: the last word).
    fn summarise(&self, now: Option<Instant>) {
        let (lines, bytes, limits) = {
            let mut state = lock(&self.state);
            if state.unsummarised.0 == 0 {
                return;
            }
            if let (Some(now), Some(last)) = (now, state.summarised)
                && now.duration_since(last) < SUMMARY_INTERVAL
            {
                return;
            }
            state.summarised = now;
            let (lines, bytes) = std::mem::take(&mut state.unsummarised);
            (lines, bytes, state.limits)
        };
        if lines > 0 {
            tracing::warn!(
                target: "guest",
                handler = &*self.handler,
                dropped_lines = lines,
                dropped_bytes = bytes,
                "guest output over its budget ({} lines/s, {} bytes/s): {lines} line(s) dropped since the last summary",
                limits.lines_per_second,
                limits.bytes_per_second,
            );
        }
    }

    /// Writes one guest line to the host log, if the budget allows: cut to
    /// `max_line_bytes` (with `cut` more bytes already gone), control
    /// characters escaped.
    pub fn emit(&self, stream: Stream, place: &CallPlace, line: &[u8], cut: usize) {
        let max = lock(&self.state).limits.max_line_bytes as usize;
        let kept = &line[..line.len().min(max)];
        let cut = cut + (line.len() - kept.len());
        if !self.admit(kept.len()) {
            return;
        }
        let mut text = printable(kept);
        if cut > 0 {
            let _ = write!(text, " [{cut} more bytes cut]");
        }
        let handler = &*self.handler;
        let stream_name = stream.name();
        let (partition, offset, self_test) = place.read();
        // Self-test output is not traffic: tagged, and at debug level.
        let level = match (stream, self_test) {
            (_, true) => Level::Debug,
            (Stream::Stdout, false) => Level::Info,
            (Stream::Stderr, false) => Level::Warn,
            (Stream::Log(level), false) => level,
        };
        macro_rules! guest_event {
            ($event:ident) => {
                tracing::$event!(target: "guest", handler, stream = stream_name, partition, offset, self_test, "{text}")
            };
        }
        match level {
            Level::Trace => guest_event!(trace),
            Level::Debug => guest_event!(debug),
            Level::Info => guest_event!(info),
            Level::Warn => guest_event!(warn),
            Level::Error => guest_event!(error),
        }
        self.keep(RecentLine {
            seq: 0,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            stream: stream_name,
            level: level_name(level),
            partition,
            offset,
            self_test,
            text,
        });
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// Guest bytes as one printable line: invalid UTF-8 replaced, a trailing
/// `\r` dropped, control characters (newlines, escape sequences) escaped.
fn printable(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Every handler's budget, by name; the sandbox keeps one.
#[derive(Default)]
pub struct LogBudgets {
    by_handler: Mutex<BTreeMap<String, Arc<LogBudget>>>,
}

impl LogBudgets {
    /// The budget of `handler`, with `limits` in force from now on.
    pub fn budget(&self, handler: &str, limits: LogLimits) -> Arc<LogBudget> {
        let mut all = lock(&self.by_handler);
        let budget = all
            .entry(handler.to_string())
            .or_insert_with(|| Arc::new(LogBudget::new(handler, limits)));
        budget.set_limits(limits);
        budget.clone()
    }

    /// Every budget, for the dropped-lines counter.
    pub fn all(&self) -> Vec<Arc<LogBudget>> {
        lock(&self.by_handler).values().cloned().collect()
    }

    /// Summarises each handler's dropped output: soon after the first
    /// drop, then at most once per [`SUMMARY_INTERVAL`]. Called often (by
    /// the epoch ticker).
    pub fn tick(&self) {
        let now = Instant::now();
        for budget in self.all() {
            budget.summarise(Some(now));
        }
    }

    /// Summarises what was dropped since the last summaries, whenever they
    /// were: the last word, when the sandbox goes away.
    pub fn flush(&self) {
        for budget in self.all() {
            budget.summarise(None);
        }
    }
}

/// A WASI output stream that logs whole lines through a budget.
#[derive(Clone)]
pub struct GuestOutput {
    budget: Arc<LogBudget>,
    place: Arc<CallPlace>,
    stream: Stream,
    line: Arc<Mutex<PartialLine>>,
}

/// The line being written: at most `max_line_bytes` kept, the rest of it
/// only counted.
#[derive(Default)]
struct PartialLine {
    kept: Vec<u8>,
    cut: usize,
}

impl GuestOutput {
    /// The stdout or stderr stream of an instance of the budget's handler.
    pub fn new(budget: Arc<LogBudget>, place: Arc<CallPlace>, stream: Stream) -> Self {
        Self {
            budget,
            place,
            stream,
            line: Arc::default(),
        }
    }

    fn write_bytes(&self, mut bytes: &[u8]) {
        let max = self.budget.limits().max_line_bytes as usize;
        let mut line = lock(&self.line);
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            let room = max.saturating_sub(line.kept.len());
            let taken = piece.len().min(room);
            line.kept.extend_from_slice(&piece[..taken]);
            line.cut += piece.len() - taken;
            match end {
                Some(end) => {
                    let done = std::mem::take(&mut *line);
                    self.budget
                        .emit(self.stream, &self.place, &done.kept, done.cut);
                    bytes = &bytes[end + 1..];
                }
                None => break,
            }
        }
    }

    fn flush_pending(&self) {
        let mut line = lock(&self.line);
        if !line.kept.is_empty() || line.cut > 0 {
            let done = std::mem::take(&mut *line);
            self.budget
                .emit(self.stream, &self.place, &done.kept, done.cut);
        }
    }
}

/// The last handle to a stream logs what is left of an unfinished line.
impl Drop for GuestOutput {
    fn drop(&mut self) {
        if Arc::strong_count(&self.line) == 1 {
            self.flush_pending();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    /// A flush keeps a partial line: Python flushes stderr after every
    /// write, and each piece of a traceback line would become a log line.
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // As in `OutputStream::flush`: only whole lines are logged.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_pending();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(lines: u32, bytes: u64) -> LogLimits {
        LogLimits {
            lines_per_second: 1,
            burst_lines: lines,
            bytes_per_second: 1,
            burst_bytes: bytes,
            max_line_bytes: 100,
        }
    }

    #[test]
    fn the_budget_admits_its_burst_then_counts_drops() {
        let budgets = LogBudgets::default();
        let budget = budgets.budget("h", limits(3, 1000));
        let admitted = (0..10).filter(|_| budget.admit(10)).count();
        assert_eq!(admitted, 3);
        assert_eq!(budget.dropped_lines(), 7);
        // The byte bucket limits too: one line larger than what is left.
        let budget = budgets.budget("bytes", limits(100, 25));
        assert!(budget.admit(20));
        assert!(!budget.admit(20));
        assert_eq!(budget.dropped_lines(), 1);
        // The same handler keeps its budget (and its count).
        assert_eq!(budgets.budget("h", limits(3, 1000)).dropped_lines(), 7);
        assert_eq!(budgets.all().len(), 2);
    }

    #[test]
    fn long_lines_are_cut_and_partial_lines_are_bounded() {
        let budgets = LogBudgets::default();
        let budget = budgets.budget("h", limits(1000, 1 << 20));
        let output = GuestOutput::new(budget.clone(), CallPlace::new(), Stream::Stdout);
        output.write_bytes(&vec![b'x'; 10_000]);
        assert_eq!(lock(&output.line).kept.len(), 100);
        assert_eq!(lock(&output.line).cut, 9_900);
        output.write_bytes(b"yy\nnext");
        let line = lock(&output.line);
        assert_eq!(line.kept, b"next");
        assert_eq!(line.cut, 0);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable(b"plain\ttext\r"), "plain\ttext");
        assert_eq!(
            printable(b"a\nINFO forged\x1b[31m"),
            "a\\nINFO forged\\u{1b}[31m"
        );
        assert_eq!(printable(b"\xff"), "\u{fffd}");
    }
}
