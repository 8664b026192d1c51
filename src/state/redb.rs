//! The embedded store on redb: one file, ACID transactions on copy-on-write
//! B-trees, each commit fsynced before it returns (`Durability::Immediate`),
//! so a `kill -9` or a power cut at any point leaves the last committed
//! state, never a torn one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use ::redb::{Database, Durability, ReadableTable, TableDefinition, TableError};

use super::{Change, StateError, StateStore, Stored, SCHEMA_VERSION};
use crate::apps::stored::StoredApp;
use crate::config::routes::RouteSpec;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ROUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("routes");
const APPS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("apps");
const VERSION_KEY: &str = "schema_version";

#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    /// `None` after a failed commit: redb refuses every later write on a
    /// database that saw an I/O error, so the next commit opens the file
    /// again (and gets the last committed state) instead of failing until
    /// a restart once the disk has room again. Held only on blocking
    /// threads, never across an `.await`.
    db: Mutex<Option<Database>>,
    /// Handed to the new process of an upgrade (`StateStore::release`):
    /// the file stays closed until `resume`, however often it is written.
    released: AtomicBool,
}

impl RedbStore {
    /// Opens `path`, creating it with the current schema if it is new;
    /// refuses a file of a newer schema.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let db = open_db(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            db: Mutex::new(Some(db)),
            released: AtomicBool::new(false),
        })
    }

    /// The open database, opened again if a failure closed it; an error
    /// while the file is handed over.
    fn db<'a>(&self, guard: &'a mut Option<Database>) -> Result<&'a Database, StateError> {
        if self.released.load(Ordering::SeqCst) {
            return Err(self.err(
                "is handed over to the new process of an upgrade: this process no longer writes it",
            ));
        }
        if guard.is_none() {
            *guard = Some(open_db(&self.path)?);
        }
        Ok(guard.as_ref().expect("opened above"))
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::new(&self.path, e.to_string())
    }
}

fn open_db(path: &Path) -> Result<Database, StateError> {
    let err = |e: &dyn std::fmt::Display| StateError::new(path, e.to_string());
    let db = Database::create(path).map_err(|e| match e {
        ::redb::DatabaseError::DatabaseAlreadyOpen => StateError::new(
            path,
            "is in use by another process (is another mse-proxy running with this state_dir?)",
        ),
        e => err(&e),
    })?;
    let tx = db.begin_write().map_err(|e| err(&e))?;
    {
        let mut meta = tx.open_table(META).map_err(|e| err(&e))?;
        let found = meta
            .get(VERSION_KEY)
            .map_err(|e| err(&e))?
            .map(|v| v.value());
        match found {
            None => {
                meta.insert(VERSION_KEY, SCHEMA_VERSION)
                    .map_err(|e| err(&e))?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StateError::new(
                    path,
                    format!(
                        "was written by a newer mse-proxy (schema version {v}; this one reads version {SCHEMA_VERSION}); run the newer version, or restore a backup"
                    ),
                ))
            }
            Some(v) => {
                return Err(StateError::new(
                    path,
                    format!("has unknown schema version {v} (this mse-proxy reads version {SCHEMA_VERSION})"),
                ))
            }
        }
        // Create the tables, so a read of a fresh file finds them.
        tx.open_table(ROUTES).map_err(|e| err(&e))?;
        tx.open_table(APPS).map_err(|e| err(&e))?;
    }
    tx.commit().map_err(|e| err(&e))?;
    Ok(db)
}

impl StateStore for RedbStore {
    fn load(&self) -> Result<Stored, StateError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.db(&mut guard)?;
        let tx = db.begin_read().map_err(|e| self.err(e))?;
        let mut out = Stored::default();
        match tx.open_table(ROUTES) {
            Ok(t) => {
                for row in t.iter().map_err(|e| self.err(e))? {
                    let (k, v) = row.map_err(|e| self.err(e))?;
                    match serde_json::from_slice(v.value()) {
                        Ok(spec) => out.routes.push(spec),
                        Err(e) => out.unreadable.push(format!("route `{}`: {e}", k.value())),
                    }
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.err(e)),
        }
        match tx.open_table(APPS) {
            Ok(t) => {
                for row in t.iter().map_err(|e| self.err(e))? {
                    let (k, v) = row.map_err(|e| self.err(e))?;
                    match serde_json::from_slice(v.value()) {
                        Ok(app) => out.apps.push(app),
                        Err(e) => {
                            let (p, n) = k.value();
                            out.unreadable.push(format!("app `{p}/{n}`: {e}"));
                        }
                    }
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.err(e)),
        }
        Ok(out)
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StateError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.db(&mut guard)?;
        let result = write(db, changes, false).map_err(|e| self.err(e));
        if result.is_err() {
            // Closed now; opened again by the next write (see `db`).
            *guard = None;
        }
        result
    }

    fn release(&self) {
        // Under the lock: a commit in flight finishes first, then the file
        // closes (and its lock with it) before the new process opens it.
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        self.released.store(true, Ordering::SeqCst);
        *guard = None;
    }

    fn resume(&self) {
        self.released.store(false, Ordering::SeqCst);
    }

    fn replace(&self, routes: &[RouteSpec], apps: &[StoredApp]) -> Result<(), StateError> {
        let changes: Vec<Change> = routes
            .iter()
            .cloned()
            .map(Change::PutRoute)
            .chain(apps.iter().cloned().map(Change::PutApp))
            .collect();
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.db(&mut guard)?;
        let result = write(db, &changes, true).map_err(|e| self.err(e));
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

// redb's error is large, and this path is the rare one: it becomes a
// message at once (`RedbStore::commit`), so it is not boxed.
#[allow(clippy::result_large_err)]
/// Commits `changes`, after emptying both tables when `clear` (in the same
/// transaction: a crash leaves the old set or the new one).
fn write(db: &Database, changes: &[Change], clear: bool) -> Result<(), ::redb::Error> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate);
    {
        let mut routes = tx.open_table(ROUTES)?;
        let mut apps = tx.open_table(APPS)?;
        if clear {
            routes.retain(|_, _| false)?;
            apps.retain(|_, _| false)?;
        }
        for c in changes {
            match c {
                Change::PutRoute(spec) => {
                    let v = json(spec)?;
                    routes.insert(spec.name.as_str(), v.as_slice())?;
                }
                Change::DeleteRoute(name) => {
                    routes.remove(name.as_str())?;
                }
                Change::PutApp(app) => {
                    let v = json(app)?;
                    apps.insert((app.project.as_str(), app.name.as_str()), v.as_slice())?;
                }
                Change::DeleteApp(key) => {
                    apps.remove((key.project.as_str(), key.name.as_str()))?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

#[allow(clippy::result_large_err)]
fn json(v: &impl serde::Serialize) -> Result<Vec<u8>, ::redb::Error> {
    serde_json::to_vec(v).map_err(|e| ::redb::Error::Io(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::stored::StoredApp;
    use crate::apps::{AppKey, AppRecord, CertOrigin, Status};

    fn route(name: &str) -> crate::config::routes::RouteSpec {
        crate::config::routes::RouteSpec::passthrough(
            name,
            &[&format!("{name}.example.com")],
            &["127.0.0.1:9443".to_string()],
        )
    }

    fn app(name: &str) -> StoredApp {
        StoredApp {
            project: "p/1".into(),
            name: name.into(),
            record: AppRecord {
                id: uuid::Uuid::from_u128(7),
                domain_name: format!("{name}.apps.example.com"),
                config_domain_name: None,
                ssl_certificate_origin: CertOrigin::Enclave,
                hardware: "4g-eu-001".into(),
                expires_at: None,
                deployed_at: Some("2030-01-01T00:00:00Z".into()),
                owner_certificate: None,
                node: "10.0.0.1:443".into(),
                enclave_cert_sha256: None,
                limits: None,
                status: Status::Running,
            },
            cname: Default::default(),
            hosts: vec![format!("{name}.apps.example.com")],
        }
    }

    fn names(s: &Stored) -> (Vec<String>, Vec<String>) {
        (
            s.routes.iter().map(|r| r.name.clone()).collect(),
            s.apps.iter().map(|a| a.name.clone()).collect(),
        )
    }

    #[test]
    fn writes_survive_a_reopen_and_deletes_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            assert_eq!(names(&s.load().unwrap()), (vec![], vec![]));
            s.commit(&[
                Change::PutRoute(route("a")),
                Change::PutRoute(route("b")),
                Change::PutApp(app("shop")),
                Change::PutApp(app("blog")),
            ])
            .unwrap();
            s.commit(&[
                Change::DeleteRoute("a".into()),
                Change::DeleteApp(AppKey {
                    project: "p/1".into(),
                    name: "blog".into(),
                }),
            ])
            .unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(names(&loaded), (vec!["b".into()], vec!["shop".into()]));
        assert_eq!(loaded.routes[0], route("b"), "the route comes back whole");
        assert_eq!(
            loaded.apps[0].record.deployed_at.as_deref(),
            Some("2030-01-01T00:00:00Z"),
            "deployed_at is kept"
        );
        assert!(loaded.unreadable.is_empty());
    }

    #[test]
    fn replace_leaves_only_the_new_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        s.commit(&[
            Change::PutRoute(route("a")),
            Change::PutRoute(route("b")),
            Change::PutApp(app("shop")),
        ])
        .unwrap();
        s.replace(&[route("b"), route("c")], &[app("blog")])
            .unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(
            names(&loaded),
            (vec!["b".into(), "c".into()], vec!["blog".into()])
        );
        s.replace(&[], &[]).unwrap();
        assert_eq!(names(&s.load().unwrap()), (vec![], vec![]));
    }

    #[test]
    fn a_newer_schema_is_refused_with_the_path_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(RedbStore::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(VERSION_KEY, SCHEMA_VERSION + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        let e = RedbStore::open(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("newer mse-proxy (schema version 2"), "{e}");
    }

    #[test]
    fn a_second_process_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = RedbStore::open(&path).unwrap();
        let e = RedbStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
    }

    #[test]
    fn a_value_that_does_not_parse_is_named_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let s = RedbStore::open(&path).unwrap();
        s.commit(&[Change::PutRoute(route("good"))]).unwrap();
        {
            let guard = s.db.lock().unwrap();
            let tx = guard.as_ref().unwrap().begin_write().unwrap();
            tx.open_table(ROUTES)
                .unwrap()
                .insert("bad", b"{not json".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let loaded = s.load().unwrap();
        assert_eq!(names(&loaded).0, vec!["good".to_string()]);
        assert_eq!(loaded.unreadable.len(), 1);
        assert!(loaded.unreadable[0].starts_with("route `bad`"));
    }
}
