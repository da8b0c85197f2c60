//! The live console (`GET /` on the admin port) in a real headless browser:
//! Debian's `chromium` driven by `chromedriver` over W3C WebDriver, spoken
//! here over plain HTTP. A calculator host on the real broker with a token;
//! the page gets the token from its URL fragment, draws a node per stage,
//! shows a rate above zero once messages flow and the dead letter a bad one
//! made, and a click on Rollback changes the serving version (and
//! `GET /handlers` agrees); a click on Redrive asks with the dry run's
//! count and sends the dead letter back. A canary shows in a row of its own with its
//! rate, and a click on Promote makes it the serving version. The
//! screenshot in the README is the one the first test writes to
//! `target/console.png`.

mod common;

use common::{RunningHost, Topics, calculator_yaml, config_from, http, producer, repo_root};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "console-test-token";
const WAIT: Duration = Duration::from_secs(90);

/// A program on `PATH`; fails the test (never skips it) when missing.
fn program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: the console test needs Debian's `chromium` and \
                 `chromium-driver`; run scripts/setup.sh --test"
            )
        })
}

/// Waits (up to `deadline`) until `probe` gives a value, polling.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP/1.1 exchange with a JSON body; the status and the JSON answer.
/// The answer is read to its `Content-Length` (or its last chunk): a
/// WebDriver server may keep the connection open whatever the request says.
async fn json_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|err| panic!("connecting to chromedriver at {address}: {err}"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let (status, payload) = loop {
        let read = stream.read(&mut buffer).await.unwrap();
        response.extend_from_slice(&buffer[..read]);
        let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            assert!(
                read > 0,
                "{method} {path}: the connection closed mid-answer"
            );
            continue;
        };
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        let status: u16 = head[9..12].parse().expect("an HTTP status");
        let payload = &response[split + 4..];
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        match length {
            Some(length) if payload.len() >= length => break (status, payload[..length].to_vec()),
            None if head.contains("transfer-encoding: chunked") => {
                if let Some(body) = unchunk(payload) {
                    break (status, body);
                }
            }
            None if read == 0 => break (status, payload.to_vec()),
            _ => {}
        }
        assert!(
            read > 0,
            "{method} {path}: the connection closed mid-answer"
        );
    };
    let value = serde_json::from_slice(&payload).unwrap_or_else(|err| {
        panic!(
            "{method} {path}: not JSON ({err}): {}",
            String::from_utf8_lossy(&payload)
        )
    });
    (status, value)
}

/// A chunked body, once its last chunk is in.
fn unchunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n")?;
        let size = String::from_utf8_lossy(&body[..line]);
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(line + 2..line + 2 + size)?);
        body = body.get(line + 2 + size + 2..)?;
    }
}

/// `chromedriver` and one browser session, ended when dropped.
struct Browser {
    driver: Child,
    address: SocketAddr,
    session: String,
}

impl Browser {
    async fn start() -> Self {
        let chromedriver = program("chromedriver");
        let chromium = program("chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", chromedriver.display()));
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut browser = Self {
            driver,
            address,
            session: String::new(),
        };
        eventually("chromedriver is ready", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(address).await.ok()?;
            let (_, status) = json_request(address, "GET", "/status", None).await;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100"],
            },
        }}});
        let (status, answer) = json_request(address, "POST", "/session", Some(&capabilities)).await;
        assert_eq!(status, 200, "no browser session: {answer}");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// A WebDriver command of this session; its `value`.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, mut answer) = json_request(self.address, method, &path, body.as_ref()).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].take()
    }

    async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The elements matching a CSS selector, by WebDriver id.
    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .command(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .expect("a list of elements")
            .iter()
            .filter_map(|element| {
                element
                    .as_object()?
                    .values()
                    .next()?
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    /// The rendered text of the first element matching `css`, if any.
    async fn text_of(&self, css: &str) -> Option<String> {
        let element = self.find_all(css).await.into_iter().next()?;
        let path = format!("/session/{}/element/{element}/text", self.session);
        // The page may redraw between the find and the read: try again then.
        let (status, answer) = json_request(self.address, "GET", &path, None).await;
        (status == 200).then(|| answer["value"].as_str().unwrap_or_default().to_string())
    }

    async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        let value = self
            .command("GET", &format!("/element/{element}/attribute/{name}"), None)
            .await;
        value.as_str().map(str::to_string)
    }

    async fn click(&self, css: &str) {
        let element = self
            .find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("nothing matches `{css}`"));
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Waits for the page's dialog (`window.confirm`), accepts it, and
    /// returns its text.
    async fn accept_dialog(&self) -> String {
        let path = format!("/session/{}/alert/text", self.session);
        let text = eventually("a dialog opens", WAIT, || async {
            let (status, answer) = json_request(self.address, "GET", &path, None).await;
            (status == 200).then(|| answer["value"].as_str().unwrap_or_default().to_string())
        })
        .await;
        self.command("POST", "/alert/accept", Some(json!({}))).await;
        text
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None).await;
        base64_decode(encoded.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session first, so that chromium exits with it.
        if !self.session.is_empty() {
            use std::io::{Read as _, Write as _};
            if let Ok(mut stream) = std::net::TcpStream::connect(self.address) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session, self.address
                );
                // The answer comes once the browser has closed.
                let _ = stream.read(&mut [0u8; 4096]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// The leading number of a rate as the page shows it (`12.5 msg/s`).
fn shown_rate(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

async fn admin_json(admin: SocketAddr, method: &str, path: &str, body: &[u8]) -> Value {
    let (status, text) = http(admin, method, path, Some(TOKEN), body).await;
    assert_eq!(status, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}: {text}"))
}

async fn serving(admin: SocketAddr, handler: &str) -> Value {
    let handlers = admin_json(admin, "GET", "/handlers", b"").await;
    handlers
        .as_array()
        .unwrap()
        .iter()
        .find(|info| info["name"] == handler)
        .unwrap_or_else(|| panic!("no handler {handler} in {handlers}"))
        .clone()
}

fn short(version: &Value) -> String {
    version.as_str().unwrap().chars().take(12).collect()
}

/// A calculator host on fresh topics whose admin port wants [`TOKEN`].
async fn start_host() -> (RunningHost, SocketAddr, Topics) {
    let topics = Topics::new();
    let yaml = calculator_yaml(&topics, 2).replace(
        "  listen: 127.0.0.1:0\n",
        &format!("  listen: 127.0.0.1:0\n  token: {TOKEN}\n"),
    );
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let host = RunningHost::start_with(config_from(yaml), move |ready| {
        let _ = ready_tx.send(ready.admin.expect("the admin port listens"));
    });
    match tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("host ready")
    {
        Ok(admin) => (host, admin, topics),
        Err(_) => panic!("the host did not start: {:?}", host.stop().await),
    }
}

/// Sends one bad message, then sums every 20 ms until told to stop;
/// answers how many sums it sent.
fn keep_sending(input: String) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let sending = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn({
        let sending = sending.clone();
        async move {
            let producer = producer();
            common::send(&producer, &input, Some("bad"), b"not json", &[]).await;
            let started = Instant::now();
            let mut n = 0u64;
            while sending.load(Ordering::SeqCst) && started.elapsed() < WAIT * 2 {
                let value = format!(r#"{{"operation": "sum", "x": {n}, "y": 2}}"#);
                common::send(
                    &producer,
                    &input,
                    Some(&format!("k{n}")),
                    value.as_bytes(),
                    &[],
                )
                .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        }
    });
    (sending, task)
}

/// The version cell of a handler's row for `role` (stable, canary, shadow).
fn version_cell(role: &str) -> String {
    format!("#handlers tr[data-handler=\"add\"][data-role=\"{role}\"] td.version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_the_pipeline_live_and_rolls_back() {
    let (host, admin, topics) = start_host().await;

    // A second version of `add` (the other build, same behaviour), so that
    // a rollback has somewhere to go.
    let first = serving(admin, "add").await;
    let other = std::fs::read(common::plugin("wasm32-wasip1", "add")).unwrap();
    let second = admin_json(admin, "PUT", "/handlers/add", &other).await;
    assert_ne!(second["version"], first["version"]);
    assert_eq!(second["previous_version"], first["version"]);

    // The page is served without the token and holds no data; the data
    // routes it reads still want the token.
    let (status, page) = http(admin, "GET", "/", None, b"").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Stagehost console</title>"), "{page}");
    for path in ["/graph", "/dead-letters", "/handlers", "/metrics"] {
        let (status, _) = http(admin, "GET", path, None, b"").await;
        assert_eq!(status, 401, "{path} without the token");
    }
    let graph = admin_json(admin, "GET", "/graph", b"").await;
    assert_eq!(graph["stages"][0]["name"], "calculator");

    let browser = Browser::start().await;
    browser
        .open(&format!("http://{admin}/#token={TOKEN}"))
        .await;

    // The graph: one node per stage, one per topic.
    let stages = eventually("the graph is drawn", WAIT, || async {
        let stages = browser.find_all("#graph svg g.stage").await;
        (!stages.is_empty()).then_some(stages)
    })
    .await;
    assert_eq!(stages.len(), 1, "one stage in the config");
    assert_eq!(
        browser.attribute(&stages[0], "data-stage").await.as_deref(),
        Some("calculator")
    );
    let topic_nodes = browser.find_all("#graph svg g.topic").await;
    assert_eq!(topic_nodes.len(), 3, "input, output and dead-letter topics");
    assert_eq!(
        browser.find_all("#graph svg path.edge").await.len(),
        3,
        "input, output and dead-letter edges"
    );
    // The token left the address bar once read.
    let url = browser.command("GET", "/url", None).await;
    assert!(!url.as_str().unwrap().contains(TOKEN), "{url}");

    // Messages flow (and one bad one): the stage's rate rises above zero.
    let (sending, sender) = keep_sending(topics.input.clone());
    let rate_css = "#graph text.stage-rate[data-stage=\"calculator\"]";
    let shown = eventually("the stage's rate is above zero", WAIT, || async {
        let text = browser.text_of(rate_css).await?;
        shown_rate(&text).filter(|rate| *rate > 0.0).map(|_| text)
    })
    .await;
    assert!(shown.ends_with("msg/s"), "{shown}");
    let in_rate = browser
        .text_of("#stages tr[data-stage=\"calculator\"] td.in-rate")
        .await
        .unwrap();
    assert!(
        shown_rate(&in_rate).is_some_and(|rate| rate > 0.0),
        "{in_rate}"
    );
    let letter = "#dead-letters tr.dead-letter[data-kind=\"invalid-json\"]";
    let reason = eventually("the bad message's dead letter is listed", WAIT, || {
        browser.text_of(letter)
    })
    .await;
    assert!(reason.contains("calculator"), "{reason}");
    let version_css = version_cell("stable");
    eventually("the page shows the uploaded version", WAIT, || async {
        (browser.text_of(&version_css).await? == short(&second["version"])).then_some(())
    })
    .await;
    eventually("the handler's rate is above zero", WAIT, || async {
        let text = browser
            .text_of("#handlers tr[data-handler=\"add\"][data-role=\"stable\"] td.rate")
            .await?;
        shown_rate(&text).filter(|rate| *rate > 0.0)
    })
    .await;

    let screenshot = browser.screenshot().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let picture = repo_root().join("target").join("console.png");
    std::fs::write(&picture, &screenshot).unwrap();
    eprintln!("console screenshot: {}", picture.display());

    // Rollback by a click: the page, and the API, serve the first version.
    browser.click("button.rollback[data-handler=\"add\"]").await;
    eventually(
        "the page shows the version rolled back to",
        WAIT,
        || async {
            (browser.text_of(&version_css).await? == short(&first["version"])).then_some(())
        },
    )
    .await;
    let message = browser.text_of("#message").await.unwrap_or_default();
    assert!(message.contains("rolled back add"), "{message}");
    let now = serving(admin, "add").await;
    assert_eq!(now["version"], first["version"]);
    assert_eq!(now["pinned"], first["version"]);

    // Promote without a canary: the API's refusal is shown, nothing changes.
    browser.click("button.promote[data-handler=\"add\"]").await;
    eventually("the promote answer is shown", WAIT, || async {
        let message = browser.text_of("#message.error").await?;
        message.contains("/handlers/add/promote").then_some(())
    })
    .await;
    assert_eq!(serving(admin, "add").await["version"], first["version"]);

    // Redrive by a click: a dry run says how many, the dialog confirms, and
    // the bad message goes back through the stage (and fails again).
    browser
        .click("button.redrive[data-stage=\"calculator\"]")
        .await;
    let asked = browser.accept_dialog().await;
    assert!(
        asked.starts_with("would redrive 1 dead letter(s)"),
        "{asked}"
    );
    eventually("the redrive answer is shown", WAIT, || async {
        let message = browser.text_of("#message").await?;
        message
            .starts_with("redrove 1 dead letter(s)")
            .then_some(())
    })
    .await;

    sending.store(false, Ordering::SeqCst);
    let sent = sender.await.unwrap();
    assert!(sent > 0);
    drop(browser);
    host.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_shows_beside_the_stable_version_and_is_promoted_by_a_click() {
    let (host, admin, topics) = start_host().await;
    let stable = serving(admin, "add").await;
    // A canary on half the keys that its rules never end by themselves.
    let other = std::fs::read(common::plugin("wasm32-wasip1", "add")).unwrap();
    let started = admin_json(
        admin,
        "PUT",
        "/handlers/add?canary=50&min_messages=1000000&promote_after_messages=1000000",
        &other,
    )
    .await;
    let canary = started["canary"]["version"].clone();
    assert!(canary.is_string(), "no canary in {started}");
    assert_ne!(canary, stable["version"]);

    let browser = Browser::start().await;
    browser
        .open(&format!("http://{admin}/#token={TOKEN}"))
        .await;
    eventually("the canary's row shows its version", WAIT, || async {
        (browser.text_of(&version_cell("canary")).await? == short(&canary)).then_some(())
    })
    .await;
    assert_eq!(
        browser.text_of(&version_cell("stable")).await.as_deref(),
        Some(short(&stable["version"]).as_str())
    );
    let (sending, sender) = keep_sending(topics.input.clone());
    let rate_css = "#handlers tr[data-handler=\"add\"][data-role=\"canary\"] td.rate";
    eventually("the canary's rate is above zero", WAIT, || async {
        shown_rate(&browser.text_of(rate_css).await?).filter(|rate| *rate > 0.0)
    })
    .await;
    let details = browser
        .text_of("#handlers tr[data-handler=\"add\"][data-role=\"canary\"] td.details")
        .await
        .unwrap_or_default();
    assert!(details.contains("50% of keys"), "{details}");

    browser.click("button.promote[data-handler=\"add\"]").await;
    eventually("the promoted version serves alone", WAIT, || async {
        let rows = browser
            .find_all("#handlers tr[data-handler=\"add\"][data-role=\"canary\"]")
            .await;
        let version = browser.text_of(&version_cell("stable")).await?;
        (rows.is_empty() && version == short(&canary)).then_some(())
    })
    .await;
    let message = browser.text_of("#message").await.unwrap_or_default();
    assert!(message.contains("promoted add"), "{message}");
    let now = serving(admin, "add").await;
    assert_eq!(now["version"], canary);
    assert!(now["canary"].is_null(), "{now}");

    sending.store(false, Ordering::SeqCst);
    assert!(sender.await.unwrap() > 0);
    drop(browser);
    host.stop().await.expect("a clean stop");
}
