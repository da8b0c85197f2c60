//! The client side of the admin API for the daily commands (`host handlers`,
//! `host logs`, `host topics`): where the admin port is and its token, from
//! the flags, the environment or a config file, and one small HTTP/1.1
//! request at a time (the port is plain HTTP on the host's own address).

use crate::config::LoadedConfig;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to reach the admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The admin port (default: the config's `admin.listen`, else 127.0.0.1:9644).
    #[arg(long, global = true, env = "STAGEHOST_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// The bearer token (default: the config's `admin.token`).
    #[arg(
        long,
        global = true,
        env = "STAGEHOST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A config file to take the admin address and token from.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A resolved admin API address and token.
pub struct AdminClient {
    address: SocketAddr,
    token: Option<String>,
}

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl AdminClient {
    /// The client `args` describe.
    pub fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let config = args.config.as_deref().map(LoadedConfig::load).transpose()?;
        let from_config = config.as_ref().map(|config| &config.pipeline.admin);
        let address = args
            .admin
            .or_else(|| from_config.and_then(|admin| admin.listen))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9644)));
        let token = args
            .token
            .clone()
            .or_else(|| from_config.and_then(|admin| admin.token.clone()));
        Ok(Self { address, token })
    }

    /// `METHOD path` with `body`; the answer's JSON, or an error with the
    /// API's reason.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send(method, path, body))
            .await
            .with_context(|| format!("the admin API at {} did not answer", self.address))?
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        let address = self.address;
        let mut stream = tokio::net::TcpStream::connect(address).await.with_context(|| {
            format!("cannot reach the admin API at {address} (is `host run` running? see --admin and --config)")
        })?;
        let auth = self
            .token
            .as_ref()
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let split = response
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .context("the admin API sent no HTTP answer")?;
        let head = String::from_utf8_lossy(&response[..split]);
        let status: u16 = head
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .context("the admin API sent no HTTP status")?;
        let mut body = response[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = unchunk(&body);
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let reason = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        anyhow::bail!("{method} {path}: {status}: {reason}")
    }
}

/// A chunked HTTP body, joined.
fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}

/// Prints rows as an aligned table, or the JSON as it came with `json`.
pub fn print(json: bool, value: &serde_json::Value, columns: &[&str], rows: Vec<Vec<String>>) {
    if json {
        println!("{value}");
        return;
    }
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in rows {
        println!("{}", line(row));
    }
}

/// A JSON field as table text (`-` when absent).
pub fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
