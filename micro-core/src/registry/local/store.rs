//! The on-disk layout of the local registry: `<dir>/<service>/<node-id>.json`.
//!
//! Everything here is blocking file I/O; callers run it on a blocking thread.
//!
//! The directory is private to the user, but anything can end up in it: a reader opens only
//! regular files (never following a symlink, never blocking on a FIFO or device), reads at
//! most [`MAX_RECORD_BYTES`] of each and at most [`MAX_SCAN_BYTES`] and
//! [`MAX_SCAN_ENTRIES`] per service directory, and skips a bad entry with one warning.

use std::{
    collections::{BTreeMap, HashSet},
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::fcntl::OFlag;

use serde::{Deserialize, Serialize};

use crate::lock::lock;
use crate::registry::Service;

/// Expired records are deleted by readers once they are this far past their expiry, so a
/// process that renews a little late does not race a reader deleting its file.
const DELETE_GRACE_MS: u64 = 1000;

const RECORD_EXT: &str = "json";

/// Largest record file read. A node's record is a few KiB even with hundreds of endpoints;
/// anything bigger is not a record (a symlink to `/dev/zero` would otherwise be read until
/// memory runs out).
pub(super) const MAX_RECORD_BYTES: u64 = 1024 * 1024;

/// Most record bytes read from one service directory in one scan.
pub(super) const MAX_SCAN_BYTES: u64 = 64 * 1024 * 1024;

/// Most entries looked at in one service directory in one scan.
pub(super) const MAX_SCAN_ENTRIES: usize = 100_000;

/// Bad entries already warned about, so each is reported once, not at every scan.
const MAX_WARNED: usize = 4096;
static WARNED: Mutex<Option<HashSet<Warned>>> = Mutex::new(None);

/// A bad entry by path, inode and kind of problem.
type Warned = (PathBuf, u64, &'static str);

/// One file: a service record with exactly one node, and when it stops being valid.
#[derive(Debug, Serialize, Deserialize)]
struct FileRecord {
    #[serde(flatten)]
    service: Service,
    /// Unix epoch milliseconds (wall clock: the file is shared between processes).
    expires_at_ms: u64,
}

/// A live record with its expiry in unix epoch milliseconds.
pub(super) type Live = (Service, u64);

/// Live records by (service name, node id).
pub(super) type Snapshot = BTreeMap<(String, String), Live>;

/// Unix epoch milliseconds now.
pub(super) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// Unix epoch milliseconds of now + `ttl`, saturating.
pub(super) fn expiry_ms(ttl: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Creates `path` and its missing parents, private to this user.
pub(super) fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

fn record_path(dir: &Path, name: &str, id: &str) -> PathBuf {
    dir.join(name).join(format!("{id}.{RECORD_EXT}"))
}

/// Atomically replaces the record of `record`'s (only) node.
pub(super) fn write_record(dir: &Path, record: &Service, expires_at_ms: u64) -> io::Result<()> {
    let id = record.nodes.first().map_or("", |n| n.id.as_str());
    let service_dir = dir.join(&record.name);
    let target = record_path(dir, &record.name, id);
    let body = serde_json::to_vec(&FileRecord {
        service: record.clone(),
        expires_at_ms,
    })
    .map_err(io::Error::other)?;
    let tmp = service_dir.join(format!(
        ".{id}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    // The service directory may be missing (first node) or removed by a cleaner.
    let mut created_dir = false;
    let mut file = match open_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(&service_dir)?;
            created_dir = true;
            open_new(&tmp)?
        }
        other => other?,
    };
    let written = file.write_all(&body).and_then(|()| {
        drop(file);
        fs::rename(&tmp, &target)
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    } else if created_dir {
        // Watchers add a watch on a new directory only once they hear of it, so the
        // rename into it may go unseen; a metadata change of the directory itself is
        // reported by the watch on its parent, after the record is in place.
        let _ = fs::set_permissions(&service_dir, fs::Permissions::from_mode(0o700));
    }
    written
}

fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Removes a node's record; a missing record is fine.
pub(super) fn remove_record(dir: &Path, name: &str, id: &str) -> io::Result<()> {
    match fs::remove_file(record_path(dir, name, id)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The service directories under `dir`.
pub(super) fn service_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The live records of service `name` by node id. Skips files that do not parse and
/// deletes records long expired.
pub(super) fn scan_service(dir: &Path, name: &str) -> io::Result<BTreeMap<String, Live>> {
    let service_dir = dir.join(name);
    // Only a real directory: a symlink here must not send readers elsewhere.
    match fs::symlink_metadata(&service_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(meta) => {
            warn_once(
                &service_dir,
                meta.ino(),
                "not a directory",
                "a service's nodes are files in a directory",
            );
            return Ok(BTreeMap::new());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    }
    let entries = match fs::read_dir(&service_dir) {
        // Gone, or a stray file where a service directory would be: no nodes.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(BTreeMap::new());
        }
        other => other?,
    };
    let now = now_ms();
    let mut live = BTreeMap::new();
    let mut bytes_left = MAX_SCAN_BYTES;
    for (seen, entry) in entries.enumerate() {
        if seen >= MAX_SCAN_ENTRIES {
            return Err(io::Error::other(format!(
                "{} has more than {MAX_SCAN_ENTRIES} entries; remove what is not a node record",
                service_dir.display()
            )));
        }
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(RECORD_EXT) {
            continue;
        }
        let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some((record, expires_at_ms, inode)) = read_record(&path, name, id, &mut bytes_left)?
        else {
            continue;
        };
        if expires_at_ms > now {
            live.insert(id.to_owned(), (record, expires_at_ms));
        } else if now.saturating_sub(expires_at_ms) > DELETE_GRACE_MS {
            remove_expired(&path, inode);
        }
    }
    Ok(live)
}

/// All live records under `dir`. A service directory that cannot be read is skipped (and
/// logged), so one bad directory does not hide every other service.
pub(super) fn scan_all(dir: &Path) -> io::Result<Snapshot> {
    let mut all = Snapshot::new();
    for name in service_names(dir)? {
        match scan_service(dir, &name) {
            Ok(live) => {
                all.extend(
                    live.into_iter()
                        .map(|(id, live)| ((name.clone(), id), live)),
                );
            }
            Err(e) => {
                tracing::warn!(dir = %dir.join(&name).display(), error = %e, "skipping unreadable registry service directory");
            }
        }
    }
    Ok(all)
}

/// Reads one record file; `None` when it is gone, or (warned about once) not a regular
/// file, too big, unreadable or not a record of node `id` of service `name`. Fails only when
/// the scan's byte budget runs out.
fn read_record(
    path: &Path,
    name: &str,
    id: &str,
    bytes_left: &mut u64,
) -> io::Result<Option<(Service, u64, u64)>> {
    // Never follow a symlink, never wait for a FIFO's writer: the type is checked on the
    // open file before anything is read.
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            let inode = fs::symlink_metadata(path).map_or(0, |m| m.ino());
            warn_once(path, inode, "a symlink", "not followed");
            return Ok(None);
        }
        Err(e) => {
            let inode = fs::symlink_metadata(path).map_or(0, |m| m.ino());
            warn_once(path, inode, "unreadable", &e);
            return Ok(None);
        }
    };
    // Metadata and contents from the same open file, so the inode matches what we read.
    let meta = file.metadata()?;
    let inode = meta.ino();
    if !meta.is_file() {
        warn_once(
            path,
            inode,
            "not a regular file",
            "a FIFO, device or socket is never read",
        );
        return Ok(None);
    }
    if meta.len() > MAX_RECORD_BYTES {
        warn_once(path, inode, "too large", "a node record is at most 1 MiB");
        return Ok(None);
    }
    if meta.len() > *bytes_left {
        return Err(io::Error::other(format!(
            "the records in {} add up to more than {} MiB; remove what is not a node record",
            path.parent().unwrap_or(path).display(),
            MAX_SCAN_BYTES / (1024 * 1024)
        )));
    }
    let mut body = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the check and the read: never read past the cap.
    if let Err(e) = file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut body) {
        warn_once(path, inode, "unreadable", &e);
        return Ok(None);
    }
    let read = u64::try_from(body.len()).unwrap_or(u64::MAX);
    if read > MAX_RECORD_BYTES {
        warn_once(path, inode, "too large", "a node record is at most 1 MiB");
        return Ok(None);
    }
    *bytes_left = bytes_left.saturating_sub(read);
    let record: FileRecord = match serde_json::from_slice(&body) {
        Ok(record) => record,
        Err(e) => {
            warn_once(path, inode, "not a valid node record", &e);
            return Ok(None);
        }
    };
    let matches = record.service.name == name
        && record.service.nodes.len() == 1
        && record.service.nodes.first().is_some_and(|n| n.id == id);
    if !matches {
        warn_once(
            path,
            inode,
            "not this path's record",
            format_args!("it does not hold node {id} of service {name}"),
        );
        return Ok(None);
    }
    Ok(Some((record.service, record.expires_at_ms, inode)))
}

/// Logs a warning that a bad entry is ignored, once per entry (path and inode) and kind of
/// problem.
fn warn_once(path: &Path, inode: u64, problem: &'static str, detail: impl std::fmt::Display) {
    let mut warned = lock(&WARNED);
    let warned = warned.get_or_insert_with(HashSet::new);
    if warned.len() >= MAX_WARNED {
        // Something is filling the directory with junk: warn again rather than grow.
        warned.clear();
    }
    if warned.insert((path.to_owned(), inode, problem)) {
        tracing::warn!(path = %path.display(), %detail, "ignoring local registry entry: {problem}");
    }
}

/// Deletes an expired record unless it was replaced since it was read. A writer renaming a
/// fresh record in between the check and the delete loses that record until its next
/// renewal; the window is a few microseconds after a record has been dead for a second.
fn remove_expired(path: &Path, inode: u64) {
    let unchanged = fs::symlink_metadata(path).is_ok_and(|m| m.ino() == inode);
    if !unchanged {
        return;
    }
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed expired registry record"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot remove expired registry record");
        }
    }
}
