//! The export format of `mse-proxy state export` / `state import`: the
//! state as JSON, in the API's own shapes, so a backup can be read, diffed
//! and edited by a person, and moved between versions and engines:
//!
//! ```json
//! {"schema": 1,
//!  "routes": [<a route as the body of PUT /routes/{name}>],
//!  "apps": [{"project": "...", "name": "...", "record": {<the record, deployed_at filled in>},
//!            "cname": {...}, "hosts": [...]}]}
//! ```
//!
//! `schema` is [`super::SCHEMA_VERSION`] of the binary that wrote it. An
//! import file is hostile input: it is read through a size bound
//! ([`MAX_IMPORT_BYTES`]) before it is parsed, its unknown fields are
//! refused, and every entry is validated by the reconciler's own checks
//! (`crate::routing::reconciler::state::plan_import`), never by a second
//! validator here.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{Stored, SCHEMA_VERSION};
use crate::apps::stored::StoredApp;
use crate::config::routes::RouteSpec;

/// Largest import file read: far above any real table (10,000 routes
/// export to about 2 MiB), small enough that a wrong file (a disk image,
/// /dev/zero) is refused instead of exhausting memory.
pub const MAX_IMPORT_BYTES: u64 = 256 * 1024 * 1024;

/// The exported state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// The schema version it was written in; required, so a file that is
    /// not an export (a routes file, say) is refused by name.
    pub schema: u64,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub apps: Vec<StoredApp>,
}

impl Export {
    /// What the store holds, routes by name and apps by key (the store's
    /// order), so two exports of one state are byte for byte the same.
    pub fn of(stored: Stored) -> Export {
        Export {
            schema: SCHEMA_VERSION,
            routes: stored.routes,
            apps: stored.apps,
        }
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("plain data serialises");
        out.push(b'\n');
        out
    }
}

/// Reads an export from `input` (at most [`MAX_IMPORT_BYTES`]) and checks
/// its schema version. Errors say where: the byte count, the line and
/// column of a syntax error, the version found.
pub fn read(input: impl Read) -> Result<Export, String> {
    read_at_most(input, MAX_IMPORT_BYTES)
}

fn read_at_most(input: impl Read, max: u64) -> Result<Export, String> {
    let mut bytes = Vec::new();
    input
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "larger than {max} bytes: not an export of this proxy's state"
        ));
    }
    // The version first, on its own, so a newer file is refused for its
    // version rather than for a field this binary does not know.
    #[derive(Deserialize)]
    struct Version {
        schema: Option<serde_json::Value>,
    }
    // serde_json's errors end with their line and column.
    let v: Version =
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON of an export: {e}"))?;
    match v.schema.as_ref().and_then(serde_json::Value::as_u64) {
        Some(SCHEMA_VERSION) => {}
        Some(n) if n > SCHEMA_VERSION => {
            return Err(format!(
                "schema: {n} was written by a newer mse-proxy (this one reads version {SCHEMA_VERSION})"
            ))
        }
        Some(n) => return Err(format!("schema: unknown version {n}")),
        None => {
            return Err(format!(
                "schema: missing or not a number (an export has \"schema\": {SCHEMA_VERSION})"
            ))
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_checked_before_the_fields() {
        let e = read(&br#"{"schema": 2, "routes": [], "future": 1}"#[..]).unwrap_err();
        assert!(e.contains("newer mse-proxy"), "{e}");
        let e = read(&br#"{"routes": []}"#[..]).unwrap_err();
        assert!(e.starts_with("schema: missing"), "{e}");
        let e = read(&br#"{"schema": 1, "route": []}"#[..]).unwrap_err();
        assert!(e.contains("unknown field `route`"), "{e}");
        let e = read(&b"{\"schema\": 1,\n  \"routes\": [}"[..]).unwrap_err();
        assert!(e.ends_with("at line 2 column 14"), "{e}");
        let ok = read(&br#"{"schema": 1}"#[..]).unwrap();
        assert!(ok.routes.is_empty() && ok.apps.is_empty());
    }

    #[test]
    fn a_file_over_the_bound_is_refused_without_reading_it_all() {
        // An endless stream of spaces: refused once past the bound (a
        // small one here; the same code reads real files under 256 MiB).
        let e = read_at_most(std::io::repeat(b' '), 4096).unwrap_err();
        assert!(e.starts_with("larger than 4096 bytes"), "{e}");
        assert!(read_at_most(&br#"{"schema": 1}"#[..], 13).is_ok());
    }
}
