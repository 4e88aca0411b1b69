//! `snap schema`: print the fact schema, or write every schema file.
//!
//! Side effects: with `--out DIR`, creates DIR and writes the schema files
//! in it (never following a symlink at a file's name).

use std::path::Path;

use super::Out;
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};

/// Runs `snap schema`.
///
/// # Errors
///
/// Write errors with the path.
pub(super) fn run(facts: &mut Emitter, out: &Out, dir: Option<&Path>) -> Result<i32> {
    let schemas = crate::facts::schemas();
    match dir {
        None => {
            let fact = &schemas[0].1;
            let text =
                serde_json::to_string_pretty(fact).map_err(|e| Error::serialise("a schema", e))?;
            out.line(&text)?;
        }
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d.display(), e))?;
            let dir =
                crate::fs::Dir::open_root(d).map_err(|e| Error::io("open", d.display(), e))?;
            let mut files = Vec::new();
            for (name, schema) in &schemas {
                let mut text = serde_json::to_string_pretty(schema)
                    .map_err(|e| Error::serialise("a schema", e))?;
                text.push('\n');
                let p = d.join(name);
                let n = crate::fs::Name::new(name.as_bytes())
                    .map_err(|e| Error::Internal(format!("schema file name {name:?}: {e}")))?;
                dir.create_output(&n, 0o644)
                    .and_then(|fd| crate::fs::fd::write_all_at(&fd, text.as_bytes(), 0))
                    .map_err(|e| Error::io("write", p.display(), e))?;
                files.push((*name).to_owned());
            }
            facts.emit(
                Decision::Success,
                None,
                Event::SchemaWritten {
                    dir: d.display().to_string(),
                    files,
                },
            )?;
            out.line(&format!(
                "wrote {} schemas to {}",
                schemas.len(),
                d.display()
            ))?;
        }
    }
    Ok(0)
}
