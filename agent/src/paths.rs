//! Where agent sockets live. Shared by the agent (which binds) and `leaktop` (which
//! discovers), so both sides agree by construction.
//!
//! Order: `$LEAKTOP_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/leaktop`, else
//! `/tmp/leaktop-<uid>`. The socket of process `pid` is `<dir>/<pid>.sock`.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket directory.
pub const SOCKET_DIR_ENV: &str = "LEAKTOP_SOCKET_DIR";

/// Socket directory for a process with this environment lookup and effective uid.
pub fn socket_dir_with(env: impl Fn(&str) -> Option<String>, uid: u32) -> PathBuf {
    if let Some(dir) = env(SOCKET_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = env("XDG_RUNTIME_DIR").filter(|d| d.starts_with('/')) {
        return Path::new(&xdg).join("leaktop");
    }
    fallback_dir(uid)
}

/// The directory used when neither variable is set.
pub fn fallback_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/leaktop-{uid}"))
}

/// Socket file name for `pid`.
pub fn socket_file_name(pid: u32) -> String {
    format!("{pid}.sock")
}

/// The pid a socket file name stands for (`"1234.sock"` → 1234).
pub fn pid_of_socket_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".sock")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Longest path a `sockaddr_un` holds on Linux, without the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_then_xdg_then_tmp() {
        let env = |k: &str| match k {
            SOCKET_DIR_ENV => Some("/x/y".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/5".to_string()),
            _ => None,
        };
        assert_eq!(socket_dir_with(env, 5), PathBuf::from("/x/y"));
        let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| "/run/user/5".to_string());
        assert_eq!(
            socket_dir_with(env, 5),
            PathBuf::from("/run/user/5/leaktop")
        );
        assert_eq!(
            socket_dir_with(|_| None, 5),
            PathBuf::from("/tmp/leaktop-5")
        );
        // A relative XDG_RUNTIME_DIR is invalid per the spec and ignored.
        let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| "rel".to_string());
        assert_eq!(socket_dir_with(env, 5), PathBuf::from("/tmp/leaktop-5"));
    }

    #[test]
    fn socket_names() {
        assert_eq!(pid_of_socket_name(&socket_file_name(1234)), Some(1234));
        assert_eq!(pid_of_socket_name("x.sock"), None);
        assert_eq!(pid_of_socket_name(".sock"), None);
        assert_eq!(pid_of_socket_name("12"), None);
        assert_eq!(pid_of_socket_name("99999999999999999999.sock"), None);
    }
}
