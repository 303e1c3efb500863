//! Process resources the listeners share: file descriptors and the allocator's memory.
//!
//! Both listeners (the Unix socket and the admin TCP listener) and every Redis connection draw on one
//! RLIMIT_NOFILE. Each listener stops accepting at its own connection limit, so neither can take the other's
//! descriptors. At start `run` raises the soft limit to the hard one ([`raise_descriptor_limit`]), and the
//! pre-flight check ([`crate::preflight`], which `check-config` runs too) refuses a config whose two limits plus a
//! reserve for everything else do not fit ([`descriptor_problem`]), naming the keys to change, rather than
//! failing under load with EMFILE.
//!
//! [`return_freed_memory`] makes large buffers (request bodies) go back to the kernel when they are freed, and
//! [`release_free_memory`] gives back what a burst of connections left in the heap: see their comments for why
//! glibc otherwise keeps both.

use crate::config::Config;

/// Descriptors kept for everything but client connections: the Redis connections (one per standalone server,
/// one per cluster node or sentinel, plus the recovery probe's), the notifier's HTTPS connections, the two
/// listening sockets, the log, the runtime's epoll and eventfd, and whatever a libc call opens for a moment
/// (`/etc/group`, DNS).
pub(crate) const RESERVED_DESCRIPTORS: u64 = 128;

/// The process's RLIMIT_NOFILE: (soft, hard).
fn open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The problem, if both listeners' connection limits and the reserve do not fit in the hard RLIMIT_NOFILE (the
/// limit `run` raises its own to, see [`raise_descriptor_limit`]). Changes nothing, so `check-config` asks too.
pub(crate) fn descriptor_problem(cfg: &Config) -> Option<String> {
    let (api, admin) = (cfg.api.max_connections, cfg.admin.max_connections);
    let needed = (api as u64)
        .saturating_add(admin as u64)
        .saturating_add(RESERVED_DESCRIPTORS);
    match open_file_limit() {
        Err(e) => Some(format!("cannot read the open-file limit (RLIMIT_NOFILE): {e}")),
        Ok((_, hard)) if needed > hard => Some(format!(
            "api.max_connections ({api}) + admin.max_connections ({admin}) + {RESERVED_DESCRIPTORS} descriptors \
             reserved for Redis and the process = {needed}, more than the open-file limit ({hard}, the hard \
             RLIMIT_NOFILE); lower api.max_connections or admin.max_connections, or raise the limit (ulimit -Hn, \
             the container runtime's nofile)"
        )),
        Ok(_) => None,
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (always permitted), so that [`descriptor_problem`]'s check
/// holds for the running process. Returns the limit in force.
pub(crate) fn raise_descriptor_limit() -> std::io::Result<u64> {
    let (soft, hard) = open_file_limit()?;
    if soft >= hard {
        return Ok(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(hard)
}

/// Fixes glibc's mmap threshold at its default (128 KiB), so that buffers at least that large (request bodies
/// of up to `api.max_body_bytes`) are always mmapped and go back to the kernel when freed.
///
/// Left alone, glibc raises the threshold to the size of each mmapped block it frees (the "dynamic mmap
/// threshold", up to 32 MiB): after the first 1 MiB body, every later one comes from the heap, and a heap
/// whose top is still in use cannot shrink, so a burst of large bodies left RSS at its peak for good (118 MiB
/// of 221 MiB, 17 s after the clients had gone). Setting the threshold explicitly turns the dynamic
/// adjustment off (and fixes the trim threshold, which glibc otherwise moves with it). Smaller allocations
/// are unaffected. A no-op on other C libraries, which have no such adjustment to turn off.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes allocator parameters; called once at start.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Gives the allocator's free memory back to the kernel: free pages anywhere in the heap, not only at its top.
///
/// Connections allocate below the mmap threshold (hyper's read buffer, at most
/// [`crate::api::server::MAX_BUF_BYTES`], the connection's state), so a burst of connections leaves its memory
/// in glibc's free lists when they close: 1,000 connections that each sent 15 KB of a header block left RSS
/// 28 MiB above idle after they had gone. The accept loop calls this once after such a burst
/// ([`crate::api::server`]), not per connection: it walks the heap, which costs about a millisecond for tens of
/// MiB. A no-op on other C libraries.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
