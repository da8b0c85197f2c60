//! The live console at `GET /` on the admin port: a page of plain HTML, CSS
//! and JavaScript built into the binary (no build step, nothing fetched from
//! the network) that draws the pipeline graph with live rates and steers
//! the handlers through the admin API.
//!
//! The page and its two files are the only routes served without the
//! bearer token, and they carry no data: the page reads the token from the
//! URL fragment (`#token=...`, which the browser never sends) or a field,
//! keeps it in `sessionStorage`, and sends it on every API request. Rates
//! are computed in the page by differencing `GET /metrics` once a second.
//!
//! This module also answers the two routes only the console needs:
//! `GET /graph` (the pipeline as [`Graph::json`] draws it, with which stages
//! run here and which are paused) and `GET /dead-letters` (the host's last
//! dead letters, newest first).

use super::handlers::HandlerControl;
use super::stages::StagePauses;
use crate::config::graph::Graph;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page.
const INDEX_HTML: &str = include_str!("console/index.html");
/// Its script.
const CONSOLE_JS: &str = include_str!("console/console.js");
/// Its style sheet.
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The paths served without a token, each `(path, content type, body)`.
const PUBLIC: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/console.js", "text/javascript; charset=utf-8", CONSOLE_JS),
    ("/console.css", "text/css; charset=utf-8", CONSOLE_CSS),
];

/// Only the page's own files, no inline script, no frames, no other origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Whether a request is for one of the console's static files, which the
/// token check lets through: `GET` or `HEAD` of exactly those paths.
pub fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && PUBLIC.iter().any(|(public, ..)| *public == path)
}

/// The routes of the page and its files.
pub fn pages<S: Clone + Send + Sync + 'static>() -> Router<S> {
    PUBLIC
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { page(content_type, body) }))
        })
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /graph`: `{config, topics, stages, edges}` as [`Graph::json`] gives
/// them, each stage with `running` (in this host) and `paused`; `None` when
/// the host has no config to show.
pub fn graph(control: &dyn HandlerControl, pauses: &StagePauses) -> Option<serde_json::Value> {
    let config = control.config_in_force()?;
    let paused = pauses.paused();
    let mut graph = Graph::of(&config.pipeline).json();
    if let Some(stages) = graph["stages"].as_array_mut() {
        for stage in stages {
            let name = stage["name"].as_str().unwrap_or_default().to_string();
            stage["running"] = config.runs(&name).into();
            stage["paused"] = paused.contains(&name).into();
        }
    }
    graph["config"] = config.path.display().to_string().into();
    Some(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadedConfig;
    use crate::control::handlers::{HandlerInfo, SwapError};
    use serde_json::json;

    struct Fixed(LoadedConfig);

    impl HandlerControl for Fixed {
        fn handlers(&self) -> Vec<HandlerInfo> {
            Vec::new()
        }
        fn upload(&self, handler: &str, _: Vec<u8>) -> Result<HandlerInfo, SwapError> {
            Err(SwapError::UnknownHandler(handler.into()))
        }
        fn rollback(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
            Err(SwapError::UnknownHandler(handler.into()))
        }
        fn config_in_force(&self) -> Option<LoadedConfig> {
            Some(self.0.clone())
        }
        fn healthy(&self) -> bool {
            true
        }
    }

    #[test]
    fn only_the_static_files_are_public() {
        for path in ["/", "/console.js", "/console.css"] {
            assert!(is_public(&Method::GET, path), "{path}");
            assert!(is_public(&Method::HEAD, path), "{path}");
            assert!(!is_public(&Method::POST, path), "{path}");
        }
        for path in [
            "/graph",
            "/dead-letters",
            "/metrics",
            "/handlers",
            "/topics",
            "//",
            "/console.js/",
            "/index.html",
            "",
        ] {
            assert!(!is_public(&Method::GET, path), "{path}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (path, _, body) in PUBLIC {
            // The SVG namespace is a name, not an address the page loads.
            let body = body.replace("'http://www.w3.org/2000/svg'", "");
            for outside in ["http:", "https:", "//cdn", "@import", "url(/"] {
                assert!(!body.contains(outside), "{path} mentions {outside}");
            }
        }
        assert!(INDEX_HTML.contains("<script src=\"/console.js\""));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
    }

    #[test]
    fn the_graph_names_every_stage_topic_and_edge() {
        let yaml = "
kafka: {brokers: 127.0.0.1:9092}
handlers:
  add: {path: target/wasm32-wasip2/release/add.wasm}
  subtract: {path: target/wasm32-wasip2/release/subtract.wasm}
stages:
  - name: calculator
    input: requests
    output: results
    dead_letter: dlq
    branches: {big: big-results}
    route: {field: operation, to: {sum: add, sub: subtract}}
  - name: second
    input: results
    output: final
    dead_letter: dlq
    handler: add
";
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../console.yml");
        let config = LoadedConfig::from_source(&root, yaml.into()).expect("valid config");
        let graph = graph(&Fixed(config), &StagePauses::default()).expect("a graph");
        let stages: Vec<_> = graph["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].clone(),
                    s["handlers"].clone(),
                    s["running"].clone(),
                    s["paused"].clone(),
                )
            })
            .collect();
        assert_eq!(
            stages,
            [
                (
                    json!("calculator"),
                    json!(["add", "subtract"]),
                    json!(true),
                    json!(false)
                ),
                (json!("second"), json!(["add"]), json!(true), json!(false)),
            ]
        );
        let topic = |name: &str| {
            graph["topics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .unwrap_or_else(|| panic!("no topic {name} in {graph}"))
                .clone()
        };
        assert_eq!(topic("requests")["kind"], "source");
        assert_eq!(topic("dlq")["kind"], "dead-letters");
        assert_eq!(topic("results")["kind"], "plain");
        let edges: Vec<(String, String, String)> = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = |id: &serde_json::Value| {
                    graph["topics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .chain(graph["stages"].as_array().unwrap())
                        .find(|node| node["id"] == *id)
                        .map(|node| node["name"].as_str().unwrap().to_string())
                        .unwrap()
                };
                (name(&e["from"]), name(&e["to"]), e["link"].to_string())
            })
            .collect();
        for expected in [
            ("requests", "calculator", "\"input\""),
            ("calculator", "results", "\"output\""),
            ("calculator", "big-results", "\"branch\""),
            ("calculator", "dlq", "\"dead-letter\""),
            ("results", "second", "\"input\""),
            ("second", "dlq", "\"dead-letter\""),
        ] {
            let expected = (
                expected.0.to_string(),
                expected.1.to_string(),
                expected.2.to_string(),
            );
            assert!(edges.contains(&expected), "{expected:?} not in {edges:?}");
        }
        assert!(graph["config"].as_str().unwrap().ends_with("console.yml"));
    }
}
