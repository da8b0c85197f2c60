//! The admin HTTP server over a real socket, with a fake handler control:
//! every route and status code, bearer-token checks, the upload size limit,
//! the swap metrics and graceful shutdown. No Kafka and no wasm needed.

use stagehost::control::admin;
use stagehost::control::handlers::SwapError;
use stagehost::control::handlers::{HandlerControl, HandlerInfo};
use stagehost::control::metrics::Metrics;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WASM_MAGIC: &[u8] = b"\0asm";

/// Versions per handler (current last); accepts bodies that start with the
/// wasm magic, records its swaps in the metrics as the reloader does, and
/// checks that uploads do not run on the runtime's thread.
struct FakeControl {
    versions: Mutex<BTreeMap<String, Vec<HandlerInfo>>>,
    metrics: Arc<Metrics>,
    healthy: AtomicBool,
    runtime_thread: ThreadId,
    uploads_on_runtime_thread: AtomicBool,
}

impl FakeControl {
    fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        let mut versions = BTreeMap::new();
        for name in ["add", "subtract"] {
            let version = format!("{name}-v1");
            metrics.set_handler_version(name, &version);
            let first = info(name, &version, "plugins/x.wasm", 100, None);
            versions.insert(name.to_string(), vec![first]);
        }
        Arc::new(Self {
            versions: Mutex::new(versions),
            metrics,
            healthy: AtomicBool::new(true),
            runtime_thread: std::thread::current().id(),
            uploads_on_runtime_thread: AtomicBool::new(false),
        })
    }
}

fn info(
    name: &str,
    version: &str,
    source: &str,
    size: usize,
    previous: Option<&str>,
) -> HandlerInfo {
    HandlerInfo {
        name: name.to_string(),
        version: version.to_string(),
        source: source.to_string(),
        loaded_at: admin::rfc3339(UNIX_EPOCH + Duration::from_secs(1_714_564_800)),
        size,
        previous_version: previous.map(str::to_string),
        pinned: None,
        file_version: None,
        history: Vec::new(),
        canary: None,
        last_canary: None,
        shadow: None,
    }
}

impl HandlerControl for FakeControl {
    fn handlers(&self) -> Vec<HandlerInfo> {
        let versions = self.versions.lock().unwrap();
        versions
            .values()
            .map(|v| v.last().unwrap().clone())
            .collect()
    }

    fn upload(&self, handler: &str, bytes: Vec<u8>) -> Result<HandlerInfo, SwapError> {
        if std::thread::current().id() == self.runtime_thread {
            self.uploads_on_runtime_thread.store(true, Ordering::SeqCst);
        }
        let mut versions = self.versions.lock().unwrap();
        let history = versions
            .get_mut(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        if !bytes.starts_with(WASM_MAGIC) {
            self.metrics.handler_swapped(handler, "rejected");
            return Err(SwapError::Rejected(format!(
                "handler `{handler}`: not a valid WebAssembly component"
            )));
        }
        let current = history.last().unwrap().version.clone();
        let new = info(
            handler,
            &format!("{handler}-v{}", history.len() + 1),
            "upload",
            bytes.len(),
            Some(&current),
        );
        history.push(new.clone());
        self.metrics.handler_swapped(handler, "applied");
        self.metrics.set_handler_version(handler, &new.version);
        Ok(new)
    }

    fn rollback(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
        let mut versions = self.versions.lock().unwrap();
        let history = versions
            .get_mut(handler)
            .ok_or_else(|| SwapError::UnknownHandler(handler.to_string()))?;
        if history.len() < 2 {
            return Err(SwapError::NoPrevious(handler.to_string()));
        }
        history.pop();
        let back = history.last().unwrap().clone();
        self.metrics.handler_swapped(handler, "applied");
        self.metrics.set_handler_version(handler, &back.version);
        Ok(back)
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

struct Server {
    address: SocketAddr,
    control: Arc<FakeControl>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(token: Option<&str>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics = Metrics::new();
    let control = FakeControl::new(metrics.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(admin::serve(
        listener,
        token.map(str::to_string),
        control.clone(),
        metrics.clone(),
        Default::default(),
        Default::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        address,
        control,
        metrics,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn get(&self, path: &str) -> Reply {
        request(self.address, "GET", path, None, Vec::new()).await
    }

    async fn put(&self, path: &str, body: Vec<u8>) -> Reply {
        request(self.address, "PUT", path, None, body).await
    }

    async fn post(&self, path: &str) -> Reply {
        request(self.address, "POST", path, None, Vec::new()).await
    }

    async fn shut_down(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.text()))
    }

    fn error(&self) -> String {
        let json = self.json();
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error object: {json}"))
            .to_string()
    }

    fn handler(&self) -> HandlerInfo {
        serde_json::from_value(self.json()).unwrap()
    }
}

/// One HTTP/1.1 request on a fresh connection. The body is written while the
/// answer is read, so an early answer (a 413) is seen even if the server
/// stops reading.
async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(authorization) = authorization {
        head.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    let write = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        writer.flush().await?;
        // Keep the write half open until the reply is read.
        std::future::pending::<()>().await;
        std::io::Result::Ok(writer)
    });
    let reply = tokio::time::timeout(Duration::from_secs(30), read_reply(&mut reader))
        .await
        .expect("the server answers");
    write.abort();
    reply
}

async fn read_reply(reader: &mut (impl AsyncReadExt + Unpin)) -> Reply {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = reader.read(&mut chunk).await.expect("reading the reply");
        assert!(read > 0, "connection closed before the reply's head");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line `{status_line}`"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (key, value) = line.split_once(':').unwrap();
            (key.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let mut body = buffer[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(key, _)| key == "content-length")
        .map(|(_, value)| value.parse::<usize>().unwrap());
    let chunked = headers
        .iter()
        .any(|(key, value)| key == "transfer-encoding" && value.contains("chunked"));
    match length {
        Some(length) => {
            while body.len() < length {
                let read = reader.read(&mut chunk).await.expect("reading the body");
                assert!(read > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..read]);
            }
            body.truncate(length);
        }
        None => {
            reader
                .read_to_end(&mut body)
                .await
                .expect("reading the body");
            if chunked {
                body = dechunk(&body);
            }
        }
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn metric_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| !line.starts_with('#')).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn health_reflects_the_stages() {
    let server = start(None).await;
    let reply = server.get("/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");

    server.control.healthy.store(false, Ordering::SeqCst);
    let reply = server.get("/healthz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error(), "not all stages are running");
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn handlers_are_listed_and_shown() {
    let server = start(None).await;
    let reply = server.get("/handlers").await;
    assert_eq!(reply.status, 200);
    let listed: Vec<HandlerInfo> = serde_json::from_value(reply.json()).unwrap();
    assert_eq!(listed, server.control.handlers());
    assert_eq!(
        reply.json()[0],
        serde_json::json!({
            "name": "add",
            "version": "add-v1",
            "source": "plugins/x.wasm",
            "loaded_at": "2024-05-01T12:00:00Z",
            "size": 100,
            "previous_version": null,
            "pinned": null,
            "file_version": null,
            "history": [],
            "canary": null,
            "last_canary": null,
            "shadow": null,
        })
    );

    let reply = server.get("/handlers/subtract").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.handler(), server.control.handlers()[1]);

    let reply = server.get("/handlers/multiply").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "unknown handler `multiply`");
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_upload_swaps_the_handler_off_the_runtime_thread() {
    let server = start(None).await;
    // Larger than axum's 2 MB default body limit.
    let mut component = WASM_MAGIC.to_vec();
    component.resize(3 << 20, 7);
    let reply = server.put("/handlers/add", component).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let uploaded = reply.handler();
    assert_eq!(uploaded.version, "add-v2");
    assert_eq!(uploaded.source, "upload");
    assert_eq!(uploaded.size, 3 << 20);
    assert_eq!(uploaded.previous_version.as_deref(), Some("add-v1"));
    assert!(
        !server
            .control
            .uploads_on_runtime_thread
            .load(Ordering::SeqCst)
    );

    let reply = server.get("/handlers/add").await;
    assert_eq!(reply.handler(), uploaded);
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn rejected_and_unknown_uploads_change_nothing() {
    let server = start(None).await;
    let reply = server.put("/handlers/add", b"not wasm".to_vec()).await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.error(),
        "handler `add`: not a valid WebAssembly component"
    );

    let reply = server.put("/handlers/multiply", WASM_MAGIC.to_vec()).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "unknown handler `multiply`");

    let reply = server.get("/handlers/add").await;
    assert_eq!(reply.handler().version, "add-v1");
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_upload_over_64_mib_is_refused() {
    let server = start(None).await;
    let mut component = WASM_MAGIC.to_vec();
    component.resize(admin::MAX_UPLOAD_BYTES + 1, 0);
    let reply = server.put("/handlers/add", component).await;
    assert_eq!(reply.status, 413);
    assert!(!reply.error().is_empty());

    let mut component = WASM_MAGIC.to_vec();
    component.resize(admin::MAX_UPLOAD_BYTES, 0);
    let reply = server.put("/handlers/add", component).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn rollback_restores_the_previous_version() {
    let server = start(None).await;
    let reply = server.post("/handlers/add/rollback").await;
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.error(),
        "handler `add` has no previous version to roll back to"
    );

    let reply = server.post("/handlers/multiply/rollback").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "unknown handler `multiply`");

    let reply = server.put("/handlers/add", WASM_MAGIC.to_vec()).await;
    assert_eq!(reply.status, 200);
    let reply = server.post("/handlers/add/rollback").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.handler().version, "add-v1");
    assert_eq!(
        server.get("/handlers/add").await.handler().version,
        "add-v1"
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_are_served_live() {
    let server = start(None).await;
    let stage = server.metrics.stage("calc");
    stage.message_in();
    stage.handler_metrics("add").outputs(2);
    let reply = server.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = reply.text();
    assert!(text.contains("# HELP stagehost_handler_info "), "{text}");
    assert!(
        metric_lines(&text)
            .contains(&"stagehost_handler_info{handler=\"add\",version=\"add-v1\"} 1"),
        "{text}"
    );

    server.put("/handlers/add", WASM_MAGIC.to_vec()).await;
    server.put("/handlers/add", b"junk".to_vec()).await;
    server.put("/handlers/multiply", b"junk".to_vec()).await;
    stage.message_in();
    let text = server.get("/metrics").await.text();
    let lines = metric_lines(&text);
    for expected in [
        "stagehost_handler_info{handler=\"add\",version=\"add-v2\"} 1",
        "stagehost_handler_info{handler=\"subtract\",version=\"subtract-v1\"} 1",
        "stagehost_handler_swaps_total{handler=\"add\",outcome=\"applied\"} 1",
        "stagehost_handler_swaps_total{handler=\"add\",outcome=\"rejected\"} 1",
        "stagehost_messages_in_total{stage=\"calc\"} 2",
    ] {
        assert!(lines.contains(&expected), "missing `{expected}` in\n{text}");
    }
    assert!(!text.contains("add-v1"), "{text}");
    assert!(!text.contains("multiply"), "{text}");

    server.post("/handlers/add/rollback").await;
    let text = server.get("/metrics").await.text();
    let lines = metric_lines(&text);
    for expected in [
        "stagehost_handler_info{handler=\"add\",version=\"add-v1\"} 1",
        "stagehost_handler_swaps_total{handler=\"add\",outcome=\"applied\"} 2",
    ] {
        assert!(lines.contains(&expected), "missing `{expected}` in\n{text}");
    }
    assert!(!text.contains("add-v2"), "{text}");
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_routes_and_methods_answer_json() {
    let server = start(None).await;
    let reply = server.get("/nowhere").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "no such route");

    let reply = server.post("/handlers/add").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.error(), "method not allowed on this route");

    let reply = server.get("/handlers/add/rollback").await;
    assert_eq!(reply.status, 405);
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_token_is_required_on_every_route() {
    let server = start(Some("s3cret")).await;
    let routes = [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/handlers"),
        ("GET", "/handlers/add"),
        ("PUT", "/handlers/add"),
        ("POST", "/handlers/add/rollback"),
        ("GET", "/nowhere"),
    ];
    for (method, path) in routes {
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("Bearer s3cretx"),
            Some("Basic czNjcmV0"),
            Some("s3cret"),
        ] {
            let reply = request(
                server.address,
                method,
                path,
                authorization,
                b"junk".to_vec(),
            )
            .await;
            assert_eq!(reply.status, 401, "{method} {path} with {authorization:?}");
            assert_eq!(reply.error(), "missing or wrong bearer token");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"stagehost\"")
            );
        }
    }
    // Nothing got through: no upload happened.
    assert_eq!(server.control.handlers()[0].version, "add-v1");

    let authorized = |method, path| {
        request(
            server.address,
            method,
            path,
            Some("Bearer s3cret"),
            Vec::new(),
        )
    };
    assert_eq!(authorized("GET", "/healthz").await.status, 200);
    assert_eq!(authorized("GET", "/metrics").await.status, 200);
    assert_eq!(authorized("GET", "/handlers").await.status, 200);
    assert_eq!(authorized("GET", "/handlers/add").await.status, 200);
    assert_eq!(authorized("PUT", "/handlers/add").await.status, 422);
    assert_eq!(
        authorized("POST", "/handlers/add/rollback").await.status,
        409
    );
    assert_eq!(authorized("GET", "/nowhere").await.status, 404);
    let reply = request(
        server.address,
        "PUT",
        "/handlers/add",
        Some("bearer s3cret"),
        WASM_MAGIC.to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200, "the scheme is case-insensitive");
    server.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_token_no_authorization_is_needed() {
    for token in [None, Some("")] {
        let server = start(token).await;
        assert_eq!(server.get("/handlers").await.status, 200);
        let reply = request(
            server.address,
            "GET",
            "/handlers",
            Some("Bearer anything"),
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, 200);
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_finishes_and_closes_the_port() {
    let server = start(None).await;
    let address = server.address;
    assert_eq!(server.get("/healthz").await.status, 200);
    server.shut_down().await;
    assert!(TcpStream::connect(address).await.is_err());
}

#[test]
fn rfc3339_formats_utc_seconds() {
    let t = UNIX_EPOCH + Duration::from_millis(1_714_564_800_999);
    assert_eq!(admin::rfc3339(t), "2024-05-01T12:00:00Z");
    let now = admin::rfc3339(SystemTime::now());
    assert_eq!(now.len(), "2024-05-01T12:00:00Z".len());
    assert!(now.ends_with('Z'));
}

#[tokio::test(flavor = "current_thread")]
async fn pausing_a_stage_that_does_not_run_here_is_a_404_with_the_reason() {
    let server = start(None).await;
    for action in ["pause", "resume"] {
        let reply = server.post(&format!("/stages/calculator/{action}")).await;
        assert_eq!(reply.status, 404, "{reply:?}");
        assert_eq!(reply.error(), "no stage `calculator` runs in this host");
    }
    let reply = server.get("/healthz").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    server.shut_down().await;
}
