//! Turns a guest's stdout and stderr into host log lines tagged with the
//! handler's name, one event per whole line written; a line the guest never
//! finished is logged when its stream goes away (or grows past `MAX_LINE`).

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest partial line kept before it is logged anyway.
const MAX_LINE: usize = 8 * 1024;

/// Which of the guest's two output streams this is.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// The guest's stdout, logged at info level.
    Stdout,
    /// The guest's stderr, logged at warn level.
    Stderr,
}

/// A WASI output stream that logs whole lines.
#[derive(Clone)]
pub struct GuestOutput {
    handler: Arc<str>,
    stream: Stream,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    /// A stream for the named handler.
    pub fn new(handler: Arc<str>, stream: Stream) -> Self {
        Self {
            handler,
            stream,
            pending: Arc::default(),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_LINE {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn flush_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let handler = &*self.handler;
        match self.stream {
            Stream::Stdout => tracing::info!(target: "guest", handler, stream = "stdout", "{text}"),
            Stream::Stderr => tracing::warn!(target: "guest", handler, stream = "stderr", "{text}"),
        }
    }
}

/// The last handle to a stream logs what is left of an unfinished line.
impl Drop for GuestOutput {
    fn drop(&mut self) {
        if Arc::strong_count(&self.pending) == 1 {
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
