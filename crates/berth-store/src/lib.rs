//! berth's metadata database: one SQLite file (`berth.db`, WAL mode) holding images,
//! their layers and references, and later containers, networks and volumes.
//!
//! Schema changes are numbered migrations applied in order at open; the number reached
//! is kept in `PRAGMA user_version`. Metadata writes use `synchronous=NORMAL`: a crash
//! may lose the last transaction but never corrupts the file; blobs, written before the
//! rows that name them, are the durable part.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the metadata database failed
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// the database was written by a newer berth
    #[error(
        "metadata database schema version {found} is newer than this berth supports ({supported})"
    )]
    TooNew { found: i64, supported: i64 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

const MIGRATIONS: &[&str] = &[
    // 1: images, layers, references
    "CREATE TABLE images (
        id TEXT PRIMARY KEY,
        config BLOB NOT NULL,
        size INTEGER NOT NULL,
        created INTEGER NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        last_tag_time TEXT NOT NULL DEFAULT ''
     );
     CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL,
        blob TEXT NOT NULL,
        blob_size INTEGER NOT NULL
     );
     CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        chain_id TEXT NOT NULL REFERENCES layers(chain_id),
        PRIMARY KEY (image_id, idx)
     );
     CREATE INDEX image_layers_chain ON image_layers(chain_id);
     CREATE TABLE refs (
        name TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        is_digest INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX refs_image ON refs(image_id);",
    // 2: containers
    "CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image_id TEXT NOT NULL,
        created TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL
     );
     CREATE INDEX containers_image ON containers(image_id);",
    // 3: where a layer's compressed blobs are known to be (pulled from or pushed to),
    // so a push can skip or mount them instead of uploading
    "CREATE TABLE blob_sources (
        diff_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (diff_id, digest, registry, repository)
     );",
    // 4: layers a failed pull verified and kept, so the next pull does not fetch them
    // again; no image names them yet, and they expire
    "CREATE TABLE partial_layers (
        chain_id TEXT PRIMARY KEY,
        since INTEGER NOT NULL
     );",
    // 5: user-defined networks (the built-in ones are not stored); body: their settings
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
     );",
    // 6: volumes; body: driver, options, labels, creation time, anonymity
    "CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );",
    // 7: the build cache: a step's key (its parent image, instruction and inputs) to the
    // image it made
    "CREATE TABLE build_cache (
        key TEXT PRIMARY KEY,
        image_id TEXT NOT NULL,
        description TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_used INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX build_cache_image ON build_cache(image_id);",
];

/// A build cache record: a step's key and the image it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRow {
    pub key: String,
    pub image_id: String,
    pub description: String,
    pub created: i64,
    pub last_used: i64,
    pub uses: i64,
}

/// A compressed blob of a layer, known to be in a registry's repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSource {
    pub diff_id: String,
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub registry: String,
    pub repository: String,
}

/// A container row: its create request and its state, both JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub created: String,
    pub spec: String,
    pub state: String,
}

/// An image row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub id: String,
    pub config: Vec<u8>,
    pub size: i64,
    pub created: i64,
    pub parent: String,
    pub last_tag_time: String,
}

/// A layer row: a snapshot keyed by chain id, and its blob in the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub chain_id: String,
    pub diff_id: String,
    pub parent: String,
    pub size: i64,
    pub blob: String,
    pub blob_size: i64,
}

/// Everything a new image needs, written in one transaction.
pub struct NewImage<'a> {
    pub image: &'a ImageRow,
    pub layers: &'a [LayerRow],
    pub refs: &'a [(String, bool)],
}

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens or creates the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew {
                found: version,
                supported,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "applied metadata migration");
        }
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // a panic while holding the lock cannot leave SQLite inconsistent
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Inserts an image with its layers and references; existing layers are kept, a
    /// reference that named another image is moved to this one.
    pub fn insert_images(&self, all: &[NewImage<'_>]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for n in all {
            Self::insert_one(&tx, n)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_one(tx: &rusqlite::Transaction<'_>, n: &NewImage<'_>) -> Result<()> {
        for l in n.layers {
            tx.execute(
                "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, size, blob, blob_size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![l.chain_id, l.diff_id, l.parent, l.size, l.blob, l.blob_size],
            )?;
        }
        let i = n.image;
        tx.execute(
            "INSERT OR IGNORE INTO images (id, config, size, created, parent, last_tag_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![i.id, i.config, i.size, i.created, i.parent, i.last_tag_time],
        )?;
        for (idx, l) in n.layers.iter().enumerate() {
            tx.execute(
                "INSERT OR IGNORE INTO image_layers (image_id, idx, chain_id) VALUES (?1, ?2, ?3)",
                params![i.id, idx as i64, l.chain_id],
            )?;
            tx.execute(
                "DELETE FROM partial_layers WHERE chain_id = ?1",
                [&l.chain_id],
            )?;
        }
        for (name, is_digest) in n.refs {
            tx.execute(
                "INSERT INTO refs (name, image_id, is_digest) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
                params![name, i.id, is_digest],
            )?;
        }
        if !n.refs.is_empty() && !i.last_tag_time.is_empty() {
            tx.execute(
                "UPDATE images SET last_tag_time = ?2 WHERE id = ?1",
                params![i.id, i.last_tag_time],
            )?;
        }
        Ok(())
    }

    const IMAGE_COLS: &'static str = "id, config, size, created, parent, last_tag_time";

    fn image_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
        Ok(ImageRow {
            id: r.get(0)?,
            config: r.get(1)?,
            size: r.get(2)?,
            created: r.get(3)?,
            parent: r.get(4)?,
            last_tag_time: r.get(5)?,
        })
    }

    pub fn image(&self, id: &str) -> Result<Option<ImageRow>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {} FROM images WHERE id = ?1", Self::IMAGE_COLS),
                [id],
                Self::image_from_row,
            )
            .optional()?)
    }

    /// Image ids starting with `prefix` (at most 2, enough to tell ambiguity).
    pub fn images_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT id FROM images WHERE substr(id, 1, ?2) = ?1 LIMIT 2")?;
        let rows = st.query_map(params![prefix, prefix.len() as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn images(&self) -> Result<Vec<ImageRow>> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {} FROM images ORDER BY created DESC, id",
            Self::IMAGE_COLS
        ))?;
        let rows = st.query_map([], Self::image_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn image_count(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT count(*) FROM images", [], |r| r.get(0))?)
    }

    /// The image a reference (full form) names.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT image_id FROM refs WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// All references, as (name, image id, is digest).
    pub fn refs(&self) -> Result<Vec<(String, String, bool)>> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT name, image_id, is_digest FROM refs ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn refs_of(&self, image_id: &str) -> Result<Vec<(String, bool)>> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT name, is_digest FROM refs WHERE image_id = ?1 ORDER BY name")?;
        let rows = st.query_map([image_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Points `name` at `image_id`; returns the image it named before, if another.
    pub fn set_ref(
        &self,
        name: &str,
        image_id: &str,
        is_digest: bool,
        now: &str,
    ) -> Result<Option<String>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let old: Option<String> = tx
            .query_row("SELECT image_id FROM refs WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        tx.execute(
            "INSERT INTO refs (name, image_id, is_digest) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
            params![name, image_id, is_digest],
        )?;
        if !now.is_empty() {
            tx.execute(
                "UPDATE images SET last_tag_time = ?2 WHERE id = ?1",
                params![image_id, now],
            )?;
        }
        tx.commit()?;
        Ok(old.filter(|o| o != image_id))
    }

    pub fn delete_ref(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .execute("DELETE FROM refs WHERE name = ?1", [name])?
            > 0)
    }

    /// Deletes an image row (its references and layer links go with it); returns the
    /// layers no image uses any more, which the caller removes from disk.
    pub fn delete_image(&self, id: &str) -> Result<Vec<LayerRow>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM refs WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM build_cache WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM image_layers WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
        let orphans = {
            let mut st = tx.prepare(
                "SELECT chain_id, diff_id, parent, size, blob, blob_size FROM layers
                 WHERE chain_id NOT IN (SELECT chain_id FROM image_layers)
                   AND chain_id NOT IN (SELECT chain_id FROM partial_layers)",
            )?;
            let rows = st.query_map([], Self::layer_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for l in &orphans {
            tx.execute("DELETE FROM layers WHERE chain_id = ?1", [&l.chain_id])?;
        }
        tx.commit()?;
        Ok(orphans)
    }

    /// Whether a layer still stores its data in this blob (layers with the same
    /// contents on different parents share one).
    pub fn blob_used(&self, blob: &str) -> Result<bool> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM layers WHERE blob = ?1 LIMIT 1",
                [blob],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Keeps layers a failed pull verified (`since`: seconds since the epoch), so a later
    /// pull finds them; until an image names them they count as partial.
    pub fn keep_partial(&self, layers: &[LayerRow], since: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for l in layers {
            tx.execute(
                "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, size, blob, blob_size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![l.chain_id, l.diff_id, l.parent, l.size, l.blob, l.blob_size],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO partial_layers (chain_id, since) VALUES (?1, ?2)",
                params![l.chain_id, since],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets partial layers kept before `before` (seconds since the epoch); returns
    /// those no image uses, which the caller removes from disk.
    pub fn expire_partial(&self, before: i64) -> Result<Vec<LayerRow>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let gone = {
            let mut st = tx.prepare(
                "SELECT l.chain_id, l.diff_id, l.parent, l.size, l.blob, l.blob_size
                 FROM partial_layers p JOIN layers l ON l.chain_id = p.chain_id
                 WHERE p.since < ?1
                   AND l.chain_id NOT IN (SELECT chain_id FROM image_layers)",
            )?;
            let rows = st.query_map([before], Self::layer_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.execute("DELETE FROM partial_layers WHERE since < ?1", [before])?;
        for l in &gone {
            tx.execute("DELETE FROM layers WHERE chain_id = ?1", [&l.chain_id])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    fn layer_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LayerRow> {
        Ok(LayerRow {
            chain_id: r.get(0)?,
            diff_id: r.get(1)?,
            parent: r.get(2)?,
            size: r.get(3)?,
            blob: r.get(4)?,
            blob_size: r.get(5)?,
        })
    }

    pub fn layer(&self, chain_id: &str) -> Result<Option<LayerRow>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT chain_id, diff_id, parent, size, blob, blob_size FROM layers WHERE chain_id = ?1",
                [chain_id],
                Self::layer_from_row,
            )
            .optional()?)
    }

    /// Records that a layer's compressed blob is in a repository.
    pub fn add_blob_source(&self, b: &BlobSource) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO blob_sources (diff_id, digest, media_type, size, registry, repository)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![b.diff_id, b.digest, b.media_type, b.size, b.registry, b.repository],
        )?;
        Ok(())
    }

    /// The compressed blobs known for a layer on a registry, any repository.
    pub fn blob_sources(&self, diff_id: &str, registry: &str) -> Result<Vec<BlobSource>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT diff_id, digest, media_type, size, registry, repository FROM blob_sources
             WHERE diff_id = ?1 AND registry = ?2",
        )?;
        let rows = st.query_map(params![diff_id, registry], |r| {
            Ok(BlobSource {
                diff_id: r.get(0)?,
                digest: r.get(1)?,
                media_type: r.get(2)?,
                size: r.get(3)?,
                registry: r.get(4)?,
                repository: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn layers(&self) -> Result<Vec<LayerRow>> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT chain_id, diff_id, parent, size, blob, blob_size FROM layers")?;
        let rows = st.query_map([], Self::layer_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The layers of an image, bottom first.
    pub fn image_layers(&self, image_id: &str) -> Result<Vec<LayerRow>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT l.chain_id, l.diff_id, l.parent, l.size, l.blob, l.blob_size
             FROM image_layers il JOIN layers l ON l.chain_id = il.chain_id
             WHERE il.image_id = ?1 ORDER BY il.idx",
        )?;
        let rows = st.query_map([image_id], Self::layer_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Images whose layer list starts with all of `image_id`'s layers and is longer
    /// (images built on top of it).
    pub fn children_of(&self, image_id: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT id FROM images WHERE parent = ?1")?;
        let rows = st.query_map([image_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Db {
    fn container_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRow> {
        Ok(ContainerRow {
            id: r.get(0)?,
            name: r.get(1)?,
            image_id: r.get(2)?,
            created: r.get(3)?,
            spec: r.get(4)?,
            state: r.get(5)?,
        })
    }

    /// Inserts a container; false if the name is taken.
    pub fn insert_container(&self, c: &ContainerRow) -> Result<bool> {
        let r = self.lock().execute(
            "INSERT INTO containers (id, name, image_id, created, spec, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.id, c.name, c.image_id, c.created, c.spec, c.state],
        );
        match r {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn containers(&self) -> Result<Vec<ContainerRow>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT id, name, image_id, created, spec, state FROM containers ORDER BY created DESC",
        )?;
        let rows = st.query_map([], Self::container_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_container_state(&self, id: &str, state: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE containers SET state = ?2 WHERE id = ?1",
            params![id, state],
        )?;
        Ok(())
    }

    /// Replaces the stored create request (after `update`).
    pub fn set_container_spec(&self, id: &str, spec: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE containers SET spec = ?2 WHERE id = ?1",
            params![id, spec],
        )?;
        Ok(())
    }

    /// Renames; false if the new name is taken.
    pub fn rename_container(&self, id: &str, name: &str) -> Result<bool> {
        match self.lock().execute(
            "UPDATE containers SET name = ?2 WHERE id = ?1",
            params![id, name],
        ) {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn delete_container(&self, id: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM containers WHERE id = ?1", [id])?;
        Ok(())
    }
}

/// A stored network: its settings as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRow {
    pub id: String,
    pub name: String,
    pub body: String,
}

impl Db {
    pub fn networks(&self) -> Result<Vec<NetworkRow>> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT id, name, body FROM networks ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(NetworkRow {
                id: r.get(0)?,
                name: r.get(1)?,
                body: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds a network; false when its name is taken.
    pub fn insert_network(&self, n: &NetworkRow) -> Result<bool> {
        Ok(self.lock().execute(
            "INSERT OR IGNORE INTO networks (id, name, body) VALUES (?1, ?2, ?3)",
            params![n.id, n.name, n.body],
        )? > 0)
    }

    pub fn delete_network(&self, id: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM networks WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Every volume: (name, body).
    pub fn volumes(&self) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT name, body FROM volumes ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds a volume; false when the name is taken.
    pub fn insert_volume(&self, name: &str, body: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "INSERT OR IGNORE INTO volumes (name, body) VALUES (?1, ?2)",
            params![name, body],
        )? > 0)
    }

    pub fn update_volume(&self, name: &str, body: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE volumes SET body = ?2 WHERE name = ?1",
            params![name, body],
        )?;
        Ok(())
    }

    pub fn delete_volume(&self, name: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM volumes WHERE name = ?1", [name])?;
        Ok(())
    }
}

impl Db {
    /// The image a build step with this key made, counted as a use.
    pub fn cache_hit(&self, key: &str, now: i64) -> Result<Option<String>> {
        let conn = self.lock();
        let id: Option<String> = conn
            .query_row(
                "SELECT image_id FROM build_cache WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?;
        if id.is_some() {
            conn.execute(
                "UPDATE build_cache SET last_used = ?2, uses = uses + 1 WHERE key = ?1",
                params![key, now],
            )?;
        }
        Ok(id)
    }

    pub fn cache_put(&self, key: &str, image_id: &str, description: &str, now: i64) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO build_cache (key, image_id, description, created, last_used, uses)
             VALUES (?1, ?2, ?3, ?4, ?4, 1)",
            params![key, image_id, description, now],
        )?;
        Ok(())
    }

    pub fn cache_forget(&self, key: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM build_cache WHERE key = ?1", [key])?;
        Ok(())
    }

    pub fn cache_rows(&self) -> Result<Vec<CacheRow>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT key, image_id, description, created, last_used, uses FROM build_cache
             ORDER BY created",
        )?;
        let rows = st.query_map([], |r| {
            Ok(CacheRow {
                key: r.get(0)?,
                image_id: r.get(1)?,
                description: r.get(2)?,
                created: r.get(3)?,
                last_used: r.get(4)?,
                uses: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(c: &str) -> LayerRow {
        LayerRow {
            chain_id: c.into(),
            diff_id: c.into(),
            parent: String::new(),
            size: 10,
            blob: c.into(),
            blob_size: 10,
        }
    }

    fn image(id: &str) -> ImageRow {
        ImageRow {
            id: id.into(),
            config: b"{}".to_vec(),
            size: 10,
            created: 1,
            parent: String::new(),
            last_tag_time: String::new(),
        }
    }

    #[test]
    fn migrations_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("berth.db");
        let db = Db::open(&p).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(db);
        let db = Db::open(&p).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn shared_layers_survive_until_last_image() {
        let db = Db::open_in_memory().unwrap();
        let l1 = layer("l1");
        db.insert_images(&[NewImage {
            image: &image("a"),
            layers: std::slice::from_ref(&l1),
            refs: &[("x:latest".into(), false)],
        }])
        .unwrap();
        db.insert_images(&[NewImage {
            image: &image("b"),
            layers: &[l1.clone(), layer("l2")],
            refs: &[("x:latest".into(), false)],
        }])
        .unwrap();
        assert_eq!(db.resolve_ref("x:latest").unwrap().as_deref(), Some("b"));
        assert_eq!(db.images_with_prefix("a").unwrap(), vec!["a".to_string()]);
        let gone = db.delete_image("b").unwrap();
        assert_eq!(gone, vec![layer("l2")]);
        let gone = db.delete_image("a").unwrap();
        assert_eq!(gone, vec![l1]);
        assert_eq!(db.image_count().unwrap(), 0);
    }

    #[test]
    fn partial_layers_survive_deletes_until_used_or_expired() {
        let db = Db::open_in_memory().unwrap();
        db.keep_partial(&[layer("p1"), layer("p2")], 100).unwrap();
        // another image's removal leaves them alone
        db.insert_images(&[NewImage {
            image: &image("a"),
            layers: &[layer("l1")],
            refs: &[],
        }])
        .unwrap();
        assert_eq!(db.delete_image("a").unwrap(), vec![layer("l1")]);
        assert!(db.layer("p1").unwrap().is_some());
        // an image that uses one makes it whole
        db.insert_images(&[NewImage {
            image: &image("b"),
            layers: &[layer("p1")],
            refs: &[],
        }])
        .unwrap();
        assert!(db.expire_partial(50).unwrap().is_empty());
        assert_eq!(db.expire_partial(200).unwrap(), vec![layer("p2")]);
        assert!(db.layer("p2").unwrap().is_none());
        assert_eq!(db.delete_image("b").unwrap(), vec![layer("p1")]);
    }
}
