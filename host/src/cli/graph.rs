//! `host graph CONFIG`: the pipeline's dependency graph as Mermaid or
//! Graphviz DOT.

use super::GraphFormat;
use crate::config::LoadedConfig;
use crate::config::graph::Graph;
use std::path::Path;

/// The graph of the config at `path`, drawn in `format`.
pub fn graph(path: &Path, format: GraphFormat) -> anyhow::Result<String> {
    let config = LoadedConfig::load(path)?;
    let graph = Graph::of(&config.pipeline);
    Ok(match format {
        GraphFormat::Mermaid => graph.mermaid(),
        GraphFormat::Dot => graph.dot(),
    })
}
