//! `host plugin inspect FILE.wasm`: loads one component with default limits
//! and says whether it implements the handler world, with its version.

use crate::config::Limits;
use crate::handlers::{HandlerSpec, Sandbox};
use anyhow::Context as _;
use std::path::Path;

/// `host plugin inspect`: loads one component with default limits.
pub fn inspect(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sandbox = Sandbox::new(false)?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let component = sandbox.load(
        HandlerSpec {
            name,
            source: path.display().to_string(),
            limits: Limits::default(),
            settings: Vec::new(),
        },
        &bytes,
    )?;
    Ok(format!(
        "{}: implements stagehost:handler/stage-handler\nversion: {}\nsize: {} bytes\n",
        path.display(),
        component.version(),
        component.size()
    ))
}
