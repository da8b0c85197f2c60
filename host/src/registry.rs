//! The live table of handler versions and stage routes, swapped whole behind
//! an atomic pointer: readers take a snapshot per message, a reload builds a
//! new table off the hot path and stores it in one step.

use crate::config::{ConfigError, FieldPath, LoadedConfig};
use crate::routing::RouteTable;
use crate::sandbox::{HandlerComponent, HandlerSpec, Sandbox};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The registry shared by every worker.
pub type SharedRegistry = Arc<ArcSwap<Registry>>;

/// Handlers by name and routes by stage.
#[derive(Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<HandlerComponent>>,
    routes: BTreeMap<String, Arc<RouteTable>>,
}

impl Registry {
    /// Loads every handler in the config (compiling, linking and running its
    /// `init`) and builds each stage's route table. Errors name the
    /// handler's `path` field in the config.
    pub fn load(config: &LoadedConfig, sandbox: &Arc<Sandbox>) -> Result<Self, ConfigError> {
        let mut registry = Registry::default();
        for (name, handler) in &config.config.handlers {
            let field = FieldPath::default()
                .key("handlers")
                .key(name.clone())
                .key("path");
            let path = config.plugin_path(handler);
            let bytes = std::fs::read(&path).map_err(|err| {
                config.error(&field, format!("cannot read `{}`: {err}", path.display()))
            })?;
            let spec = HandlerSpec {
                name: name.clone(),
                source: path.display().to_string(),
                limits: handler.limits,
                settings: handler
                    .settings
                    .iter()
                    .map(|(key, value)| (key.clone(), value.to_string()))
                    .collect(),
            };
            let component = sandbox
                .load(spec, &bytes)
                .map_err(|err| config.error(&field, err.to_string()))?;
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
