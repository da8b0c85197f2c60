//! The live table of handler versions and stage routes, swapped whole behind
//! an atomic pointer: readers take a snapshot per message, a reload builds a
//! new table off the hot path and stores it in one step.

use crate::bindings::Message;
use crate::config::{ConfigError, FieldPath, HandlerConfig, LoadedConfig, SelfTestCase};
use crate::routing::RouteTable;
use crate::sandbox::{HandlerComponent, HandlerSpec, LoadError, Sandbox, run_guest, version_of};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The registry shared by every worker.
pub type SharedRegistry = Arc<ArcSwap<Registry>>;

/// Handlers by name and routes by stage.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<HandlerComponent>>,
    routes: BTreeMap<String, Arc<RouteTable>>,
}

impl Registry {
    /// Loads every handler in the config (compiling, linking, running its
    /// `init` and its self-test) and builds each stage's route table. A
    /// handler whose file, limits and settings match one in `reuse` keeps
    /// that compiled version. Errors name the handler's field in the config.
    pub fn load(
        config: &LoadedConfig,
        sandbox: &Arc<Sandbox>,
        reuse: Option<&Registry>,
    ) -> Result<Self, ConfigError> {
        let mut registry = Registry::default();
        for (name, handler) in &config.config.handlers {
            let field = FieldPath::default().key("handlers").key(name.clone());
            let path = config.plugin_path(handler);
            let bytes = std::fs::read(&path).map_err(|err| {
                config.error(
                    &field.key("path"),
                    format!("cannot read `{}`: {err}", path.display()),
                )
            })?;
            let spec = handler_spec(name, handler, path.display().to_string());
            let reusable = reuse.and_then(|old| old.handler(name)).filter(|old| {
                old.version() == version_of(&bytes) && old.spec().same_settings(&spec)
            });
            let component = match reusable {
                Some(old) => old.clone(),
                None => {
                    let component = sandbox
                        .load(spec, &bytes)
                        .map_err(|err| config.error(&field.key("path"), err.to_string()))?;
                    self_test(&component, &handler.self_test)
                        .map_err(|reason| config.error(&field.key("self_test"), reason))?;
                    component
                }
            };
            registry.handlers.insert(name.clone(), component);
        }
        for stage in &config.config.stages {
            let table = match (&stage.handler, &stage.route) {
                (Some(handler), _) => RouteTable::Single(handler.clone()),
                (None, Some(route)) => RouteTable::ByField {
                    field: route.field.clone(),
                    to: route.to.clone(),
                },
                (None, None) => unreachable!("validated: a stage has a handler or a route"),
            };
            registry.routes.insert(stage.name.clone(), Arc::new(table));
        }
        Ok(registry)
    }

    /// A copy of this registry with one handler replaced.
    pub fn with_handler(&self, component: Arc<HandlerComponent>) -> Self {
        let mut next = self.clone();
        next.handlers
            .insert(component.name().to_string(), component);
        next
    }

    /// The current version of a handler.
    pub fn handler(&self, name: &str) -> Option<&Arc<HandlerComponent>> {
        self.handlers.get(name)
    }

    /// Every handler, by name.
    pub fn handlers(&self) -> impl Iterator<Item = (&str, &Arc<HandlerComponent>)> {
        self.handlers
            .iter()
            .map(|(name, component)| (name.as_str(), component))
    }

    /// A stage's route table.
    pub fn route(&self, stage: &str) -> Option<&Arc<RouteTable>> {
        self.routes.get(stage)
    }
}

/// The sandbox description of a configured handler.
pub fn handler_spec(name: &str, handler: &HandlerConfig, source: String) -> HandlerSpec {
    HandlerSpec {
        name: name.to_string(),
        source,
        limits: handler.limits,
        settings: handler
            .settings
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect(),
    }
}

/// Compiles a candidate and runs its self-test: the checks every new version
/// passes before it may serve.
pub fn validate(
    sandbox: &Arc<Sandbox>,
    spec: HandlerSpec,
    bytes: &[u8],
    cases: &[SelfTestCase],
) -> Result<Arc<HandlerComponent>, String> {
    let component = sandbox
        .load(spec, bytes)
        .map_err(|err: LoadError| err.to_string())?;
    self_test(&component, cases)?;
    Ok(component)
}

/// Runs the self-test cases in a fresh instance of `component`. Blocks:
/// call it from synchronous code only.
pub fn self_test(component: &Arc<HandlerComponent>, cases: &[SelfTestCase]) -> Result<(), String> {
    if cases.is_empty() {
        return Ok(());
    }
    run_guest(run_self_test(component, cases))
}

async fn run_self_test(
    component: &Arc<HandlerComponent>,
    cases: &[SelfTestCase],
) -> Result<(), String> {
    let name = component.name();
    let mut instance = component
        .instantiate()
        .await
        .map_err(|failure| format!("handler `{name}`: {failure}"))?;
    for (index, case) in cases.iter().enumerate() {
        let message = Message {
            topic: "self-test".into(),
            partition: 0,
            offset: index as i64,
            key: None,
            value: case.input.to_string().into_bytes(),
            headers: Vec::new(),
            timestamp: None,
        };
        let fail = |what: String| {
            format!(
                "handler `{name}` version {}: self-test case {} failed: input {}: {what}",
                component.version(),
                index + 1,
                case.input
            )
        };
        let answer = instance.handle(&message).await;
        match (&case.output, case.error.as_deref(), answer) {
            (Some(expected), _, Ok(outputs)) => {
                let values: Vec<serde_json::Value> = outputs
                    .iter()
                    .map(|o| serde_json::from_slice(&o.value).unwrap_or(serde_json::Value::Null))
                    .collect();
                if values.len() != 1 || &values[0] != expected {
                    return Err(fail(format!(
                        "expected {expected}, got {}",
                        serde_json::Value::from(values)
                    )));
                }
            }
            (None, Some(kind), Err(failure)) if failure.kind() == kind => {}
            (Some(expected), _, Err(failure)) => {
                return Err(fail(format!(
                    "expected {expected}, got {} error: {failure}",
                    failure.kind()
                )));
            }
            (_, Some(kind), other) => {
                let got = match other {
                    Ok(_) => "an output".to_string(),
                    Err(failure) => format!("{} error: {failure}", failure.kind()),
                };
                return Err(fail(format!("expected a {kind} error, got {got}")));
            }
            (None, None, _) => unreachable!("validated: a case has an output or an error"),
        }
    }
    Ok(())
}
