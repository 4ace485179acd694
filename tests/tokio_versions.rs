//! The agent builds against the oldest tokio it declares (issue 17: `watch::Receiver::
//! is_closed` needed tokio 1.54 while the manifest accepted 1.47, so programs pinned to
//! 1.47-1.53 did not build). A throw-away crate outside the workspace depends on the agent
//! (every feature that builds on stable tokio) and on exactly that tokio; `cargo check`
//! must pass. Its target dir is kept under `target/`, so later runs only recheck the agent.

mod common;

use std::path::Path;
use std::process::Command;

use common::workspace_root;

/// The version requirement of the agent's `tokio` dependency, e.g. "1.47".
fn declared_tokio(manifest: &str) -> String {
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("tokio = {") && l.contains("version"))
        .expect("agent/Cargo.toml declares tokio with an explicit version");
    let after = &line[line.find("version").expect("version key") + "version".len()..];
    let quoted = after.split('"').nth(1).expect("quoted version");
    quoted.trim_start_matches(['^', '=', '~']).to_owned()
}

/// "1.47" -> "1.47.0": the oldest release the requirement admits.
fn oldest_release(req: &str) -> String {
    match req.split('.').count() {
        1 => format!("{req}.0.0"),
        2 => format!("{req}.0"),
        _ => req.to_owned(),
    }
}

fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO"))
        .current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo")
}

#[test]
fn agent_builds_against_the_oldest_declared_tokio() {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("agent/Cargo.toml")).expect("read");
    let oldest = oldest_release(&declared_tokio(&manifest));

    let dir = root.join("target").join("tokio-oldest");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    let toml = format!(
        r#"[package]
name = "tokio-oldest-check"
version = "0.0.0"
edition = "2021"
publish = false

# Not a member of the leaktop workspace this directory sits in.
[workspace]

[dependencies]
leaktop-agent = {{ path = {agent:?}, features = ["metrics", "stream"] }}
tokio = {{ version = "={oldest}", default-features = false }}
"#,
        agent = root.join("agent").display().to_string(),
    );
    std::fs::write(dir.join("Cargo.toml"), toml).expect("write manifest");
    std::fs::write(dir.join("src/lib.rs"), "pub use leaktop_agent;\n").expect("write lib");

    // The lockfile resolves offline when the registry cache already has every crate (a
    // second run, or a machine that built it before); otherwise from crates.io.
    let _ = std::fs::remove_file(dir.join("Cargo.lock"));
    let offline = cargo(&dir, &["generate-lockfile", "--offline"]);
    if !offline.status.success() {
        let online = cargo(&dir, &["generate-lockfile"]);
        assert!(
            online.status.success(),
            "cannot resolve tokio ={oldest} (crates.io unreachable?): {}",
            String::from_utf8_lossy(&online.stderr)
        );
    }
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).expect("read lockfile");
    assert!(
        lock.contains(&format!("name = \"tokio\"\nversion = \"{oldest}\"")),
        "the lockfile must pin tokio {oldest}"
    );

    let check = cargo(&dir, &["check", "--quiet", "--lib"]);
    assert!(
        check.status.success(),
        "leaktop-agent does not build against tokio {oldest}, the oldest it declares \
         (agent/Cargo.toml): raise the declared version or avoid the newer API.\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_oldest_release_of_a_requirement() {
    assert_eq!(oldest_release("1.47"), "1.47.0");
    assert_eq!(oldest_release("1"), "1.0.0");
    assert_eq!(oldest_release("1.47.2"), "1.47.2");
    assert_eq!(
        declared_tokio(r#"tokio = { version = "1.47", default-features = false }"#),
        "1.47"
    );
}
