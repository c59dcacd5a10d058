//! Opening the embedded SQLite store: the file is created, switched to WAL and
//! migrated by the write side, under a lock file, and then read through a pool
//! of its own.
//!
//! WAL lets readers read while one connection writes, so reads never wait for
//! writers: they get a pool of read-only connections. Writes share ONE
//! connection: the daemon's writers queue for it in the pool instead of each
//! holding a connection while SQLite's busy handler sleeps, which used to take
//! every connection and leave reads waiting behind them. The busy timeout still
//! serves against other processes (a CLI command next to the daemon).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

/// How many read-only connections serve reads at once.
const READERS: u32 = 4;

/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two pools over one SQLite file.
pub(crate) struct Pools {
    /// One connection: every write transaction, leases, migrations.
    pub(crate) write: SqlitePool,
    /// Read-only connections: every query outside a write transaction.
    pub(crate) read: SqlitePool,
}

/// Opens the write pool (serialized with other openers) and applies
/// migrations, then the read pool; without `create`, a file that holds no
/// history is refused untouched.
pub(crate) async fn connect(path: &Path, create: bool, name: &str) -> Result<Pools, StoreError> {
    if create
        && let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Db(sqlx::Error::Configuration(
                format!("cannot create {}: {e}", dir.display()).into(),
            ))
        })?;
    }
    // Two processes opening the store at once (the daemon and a CLI command)
    // must not both switch it to WAL or apply migrations: SQLite has no
    // advisory lock for that, and the WAL switch ignores the busy timeout, so
    // opening is serialized with a lock file.
    let lock_path = path.with_extension("migrate.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Db(sqlx::Error::Configuration(
                format!("cannot open {}: {e}", lock_path.display()).into(),
            ))
        })?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
        .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
    let opened = async {
        // Checked under the lock: a store another process is creating right
        // now is complete once the lock is ours.
        if !create && !is_sqlite_file(path) {
            return Err(StoreError::Open {
                store: name.to_string(),
                message: "it is not an SQLite database, so it holds no history (not an entra-remediator store); nothing was changed".into(),
            });
        }
        let write = open_writer(path, create).await?;
        if !create {
            let tables: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            )
            .fetch_one(&write)
            .await?;
            if tables == 0 {
                return Err(StoreError::Open {
                    store: path.display().to_string(),
                    message: "it holds no history (not an entra-remediator store); nothing was changed".into(),
                });
            }
        }
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        // Opened once the file is in WAL mode and migrated.
        let read = open_readers(path).await?;
        Ok::<_, StoreError>(Pools { write, read })
    }
    .await;
    drop(lock);
    opened
}

/// The write pool: one connection, kept open for the pool's life (so the WAL
/// and its index stay in place for the read-only connections).
///
/// Neither pool pings a connection before handing it out: a connection to a
/// local file cannot be lost the way a network one can (sqlx still pings it
/// when it comes back to the pool), and each ping is one more round trip to
/// the connection's thread on every query.
async fn open_writer(path: &Path, create: bool) -> Result<SqlitePool, StoreError> {
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with(opts)
        .await?)
}

/// The read pool: read-only connections to the file the writer opened (they
/// neither create it nor change its journal mode).
async fn open_readers(path: &Path) -> Result<SqlitePool, StoreError> {
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT);
    Ok(SqlitePoolOptions::new()
        .max_connections(READERS)
        .test_before_acquire(false)
        .connect_with(opts)
        .await?)
}

/// True when the file starts with SQLite's header (an empty file does not).
fn is_sqlite_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}
