//! The socket file at `listen.socket`: checked before start, bound, and removed at exit.
//!
//! The path is the operator's, and a wrong one must never cost them a file. So redguard deletes something at
//! that path in two cases only: at start, a socket file nobody accepts connections on (left by a crashed run),
//! and at exit, the socket file it created itself, recognised by device, inode and birth time as recorded right
//! after bind ([`SocketFile`]). Anything else there (a regular file, a directory, a symbolic link, a FIFO, a
//! live socket) is left alone: start-up fails naming the path, and `check-config` reports it too
//! ([`path_problems`]). At exit, a socket that is no longer ours (another instance started on the same path
//! after ours was removed) is left in place, with a warning.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::net::UnixListener;

/// The longest socket path the platform accepts, in bytes: `sun_path` of `struct sockaddr_un` (108 bytes on
/// Linux, 104 on macOS) holds the path and its terminating NUL.
pub(crate) const MAX_PATH_BYTES: usize =
    std::mem::size_of::<libc::sockaddr_un>() - std::mem::offset_of!(libc::sockaddr_un, sun_path) - 1;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another process is already listening on {0}; refusing to start")]
    InUse(String),
    #[error(
        "{key} {path} is {kind}, not a socket; refusing to replace it (redguard only removes a socket \
         file left by a crashed run)"
    )]
    NotASocket {
        key: &'static str,
        path: String,
        kind: &'static str,
    },
    #[error("cannot set up socket {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// What is at the socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Nothing,
    /// A socket file nobody accepts connections on: left by a crashed run, and replaced at start.
    StaleSocket,
    /// A socket some process accepts connections on: redguard refuses to start.
    LiveSocket,
    /// Anything else, named for the error ("a regular file"): never removed.
    Other(&'static str),
}

/// Looks at the path without following a symbolic link (a link is reported as such, never as its target).
pub(crate) fn inspect(path: &Path) -> io::Result<Found> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(e),
    };
    let t = meta.file_type();
    Ok(if t.is_socket() {
        // Only a refused connection proves that nobody listens; another error (a socket this user may not
        // open, say) says nothing, and the file is not removed on a guess.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Found::LiveSocket,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Found::StaleSocket,
            Err(e) => return Err(e),
        }
    } else if t.is_symlink() {
        Found::Other("a symbolic link")
    } else if t.is_file() {
        Found::Other("a regular file")
    } else if t.is_dir() {
        Found::Other("a directory")
    } else if t.is_fifo() {
        Found::Other("a FIFO")
    } else {
        Found::Other("a device file")
    })
}

/// The problems of the path itself, which need nothing from the file system: empty, a NUL byte, or longer
/// than the platform's limit ([`MAX_PATH_BYTES`]).
/// `key` names the setting in the messages (`listen.socket`, `listen.resp_socket`).
pub(crate) fn path_form_problems(key: &str, path: &Path, p: &mut Vec<String>) {
    let bytes = path.as_os_str().len();
    if bytes == 0 {
        p.push(format!("{key} must not be empty"));
    } else if path.as_os_str().as_encoded_bytes().contains(&0) {
        p.push(format!("{key} must not contain a NUL byte"));
    } else if bytes > MAX_PATH_BYTES {
        p.push(format!(
            "{key} {} is {bytes} bytes long; a Unix socket path may have at most {MAX_PATH_BYTES} \
             (use a shorter directory)",
            path.display()
        ));
    }
}

/// Every reason `run` could not bind at `path`, found without changing anything: the path's form, its
/// directory (it must exist), and what is at the path (nothing, or a stale socket). Returns what was found,
/// so the caller can mention a live socket (which `run` refuses, but which is expected while the instance
/// whose config is being checked runs).
pub(crate) fn path_problems(key: &'static str, path: &Path, p: &mut Vec<String>) -> Option<Found> {
    let before = p.len();
    path_form_problems(key, path, p);
    if p.len() > before {
        return None;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            p.push(format!(
                "{key} {}: {} is not a directory",
                path.display(),
                dir.display()
            ));
            return None;
        }
        Err(e) => {
            p.push(format!("{key} {}: directory {}: {e}", path.display(), dir.display()));
            return None;
        }
    }
    match inspect(path) {
        Ok(Found::Other(kind)) => {
            p.push(
                SocketError::NotASocket {
                    key,
                    path: path.display().to_string(),
                    kind,
                }
                .to_string(),
            );
            None
        }
        Ok(found) => Some(found),
        Err(e) => {
            p.push(format!("{key} {}: {e}", path.display()));
            None
        }
    }
}

/// Binds the socket at `path`: replaces a stale socket file, refuses a live one and anything that is not a
/// socket; then sets the file's mode and, if given, its group. Any failure after the bind removes the new file
/// (through the returned [`SocketFile`], dropped on the error path).
pub(crate) fn bind(
    key: &'static str,
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> Result<(UnixListener, SocketFile), SocketError> {
    let shown = || path.display().to_string();
    let io_err = |source| SocketError::Io { path: shown(), source };
    match inspect(path).map_err(io_err)? {
        Found::Nothing => {}
        Found::StaleSocket => match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket file left by an earlier run"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        },
        Found::LiveSocket => return Err(SocketError::InUse(shown())),
        Found::Other(kind) => {
            return Err(SocketError::NotASocket {
                key,
                path: shown(),
                kind,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    let file = SocketFile::created(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    if let Some(gid) = gid {
        // lchown: should the path have been swapped for a link since the bind, its target keeps its group.
        std::os::unix::fs::lchown(path, None, Some(gid)).map_err(io_err)?;
    }
    Ok((listener, file))
}

/// The identity of a file: device and inode, plus the birth time where the file system records it (an inode
/// number freed by a deleted file may be given to the next one created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    born: Option<SystemTime>,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta.created().ok(),
        }
    }
}

/// The socket file this process created. Dropping it (or [`SocketFile::remove`]) removes the file if it is
/// still that one; this is the only place redguard deletes its socket at exit, on every path (shutdown, the
/// API task dying, a failed start).
#[derive(Debug)]
#[must_use = "dropping it removes the socket file"]
pub(crate) struct SocketFile {
    path: PathBuf,
    id: FileId,
}

impl SocketFile {
    /// Records the identity of the socket just bound at `path`.
    fn created(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            id: FileId::of(&meta),
        })
    }

    /// Removes the file now if it is still ours (see the type's doc).
    pub(crate) fn remove(self) {
        drop(self)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let socket = self.path.display();
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_socket() && FileId::of(&meta) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(%socket, error = %e, "could not remove the socket file");
                }
            }
            Ok(_) => tracing::warn!(
                %socket,
                "the socket file is no longer the one this process created (another instance on the same path?); \
                 leaving it in place"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(%socket, "the socket file was already removed by someone else")
            }
            Err(e) => tracing::warn!(%socket, error = %e, "cannot check the socket file; leaving it in place"),
        }
    }
}

/// A numeric gid, or a group name looked up in /etc/group.
pub(crate) fn resolve_group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    group_in(&std::fs::read_to_string("/etc/group").ok()?, group)
}

/// The gid of `group` in the text of an /etc/group file.
fn group_in(etc_group: &str, group: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == group).then(|| fields.nth(1)?.parse().ok())?
    })
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
