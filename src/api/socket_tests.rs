//! Unit tests of the socket file's checks, binding and removal, on real files in a temp dir.

use std::os::unix::ffi::OsStrExt;

use super::*;

fn problems_of(path: &Path) -> (Option<Found>, Vec<String>) {
    let mut p = Vec::new();
    let found = path_problems("listen.socket", path, &mut p);
    (found, p)
}

#[test]
#[cfg(target_os = "linux")]
fn the_path_limit_is_sun_path_minus_the_nul() {
    assert_eq!(MAX_PATH_BYTES, 107);
}

#[test]
fn a_path_over_the_limit_is_refused_and_one_at_it_is_not() {
    let at = PathBuf::from(format!("/{}", "a".repeat(MAX_PATH_BYTES - 1)));
    let over = PathBuf::from(format!("/{}", "a".repeat(MAX_PATH_BYTES)));
    let mut p = Vec::new();
    path_form_problems("listen.socket", &at, &mut p);
    assert!(p.is_empty(), "{p:?}");
    path_form_problems("listen.socket", &over, &mut p);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains(&format!("{} bytes long", MAX_PATH_BYTES + 1)), "{p:?}");
    assert!(p[0].contains(&format!("at most {MAX_PATH_BYTES}")), "{p:?}");
}

#[test]
fn an_empty_path_or_one_with_a_nul_is_refused() {
    for (path, expected) in [
        (PathBuf::new(), "must not be empty"),
        (
            PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/a\0b.sock")),
            "NUL byte",
        ),
    ] {
        let mut p = Vec::new();
        path_form_problems("listen.socket", &path, &mut p);
        assert!(p.len() == 1 && p[0].contains(expected), "{path:?}: {p:?}");
    }
}

#[test]
fn anything_but_nothing_or_a_socket_at_the_path_is_a_problem_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "precious").unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let dangling = dir.path().join("dangling.sock");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    for (path, kind) in [
        (&file, "a regular file"),
        (&sub, "a directory"),
        (&link, "a symbolic link"),
        (&dangling, "a symbolic link"),
    ] {
        let (found, p) = problems_of(path);
        assert_eq!(found, None, "{path:?}");
        assert!(
            p.len() == 1 && p[0].contains(&path.display().to_string()) && p[0].contains(kind),
            "{path:?}: {p:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[test]
fn a_missing_directory_is_a_problem_and_a_free_path_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (found, p) = problems_of(&dir.path().join("missing/rg.sock"));
    assert_eq!(found, None);
    assert!(p.len() == 1 && p[0].contains("missing"), "{p:?}");
    assert_eq!(problems_of(&dir.path().join("rg.sock")), (Some(Found::Nothing), vec![]));
    // A bare file name lives in the working directory, which exists.
    assert!(problems_of(Path::new("no-such-redguard-test.sock")).1.is_empty());
}

#[test]
fn a_stale_socket_is_no_problem_and_a_live_one_is_found_live() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rg.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert_eq!(problems_of(&path), (Some(Found::LiveSocket), vec![]));
    drop(live);
    assert_eq!(problems_of(&path), (Some(Found::StaleSocket), vec![]));
}

#[tokio::test]
async fn bind_refuses_a_regular_file_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "precious").unwrap();
    let err = bind("listen.socket", &file, 0o660, None).unwrap_err();
    assert!(
        matches!(
            err,
            SocketError::NotASocket {
                key: "listen.socket",
                kind: "a regular file",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[tokio::test]
async fn bind_replaces_a_stale_socket_and_dropping_the_file_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rg.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let (listener, file) = bind("listen.socket", &path, 0o600, None).unwrap();
    assert_eq!(inspect(&path).unwrap(), Found::LiveSocket);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    drop(listener);
    file.remove();
    assert_eq!(inspect(&path).unwrap(), Found::Nothing);
}

#[tokio::test]
async fn a_socket_that_replaced_ours_is_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rg.sock");
    let (_ours, file) = bind("listen.socket", &path, 0o660, None).unwrap();
    std::fs::remove_file(&path).unwrap();
    let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
    file.remove();
    assert_eq!(inspect(&path).unwrap(), Found::LiveSocket, "the other socket survives");
    drop(theirs);
}

#[test]
fn groups_resolve_by_number_or_by_name() {
    let etc_group = "root:x:0:\nwheel:x:10:alice,bob\nbroken\napp:x:1234:\n";
    assert_eq!(group_in(etc_group, "app"), Some(1234));
    assert_eq!(group_in(etc_group, "wheel"), Some(10));
    assert_eq!(group_in(etc_group, "nobody-here"), None);
    assert_eq!(group_in(etc_group, "broken"), None);
    assert_eq!(resolve_group("4321"), Some(4321));
}

#[tokio::test]
async fn the_limit_is_the_platforms_own() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().as_os_str().len() + 1;
    let at = dir.path().join("s".repeat(MAX_PATH_BYTES - base));
    assert_eq!(at.as_os_str().len(), MAX_PATH_BYTES);
    let (_listener, file) = bind("listen.socket", &at, 0o660, None).expect("a path at the limit binds");
    file.remove();
    let over = dir.path().join("s".repeat(MAX_PATH_BYTES + 1 - base));
    assert!(
        bind("listen.socket", &over, 0o660, None).is_err(),
        "a path over the limit does not bind"
    );
}
