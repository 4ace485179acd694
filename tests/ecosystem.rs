//! leaktop among the tools around it: the real binary's shell completions in real shells,
//! its man pages through the real `man`, and the crates' metadata as crates.io needs it.
//! (Packaging itself, `cargo package` of both crates, is a step of scripts/test.sh.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn leaktop_out(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leaktop"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run leaktop")
}

fn leaktop_ok(args: &[&str]) -> String {
    let out = leaktop_out(args);
    assert!(out.status.success(), "leaktop {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The subcommands, as the binary's clap definition has them: `leaktop man --dir` writes
/// one page per visible subcommand (`leaktop-dump.1`, …).
fn subcommands(dir: &Path) -> Vec<String> {
    let listed = leaktop_ok(&["man", "--dir", dir.to_str().unwrap()]);
    let mut subs: Vec<String> = listed
        .lines()
        .filter_map(|p| {
            let name = Path::new(p).file_name()?.to_str()?;
            Some(
                name.strip_prefix("leaktop-")?
                    .strip_suffix(".1")?
                    .to_string(),
            )
        })
        .collect();
    subs.sort();
    assert!(subs.len() >= 9, "{listed}");
    subs
}

/// Runs `script` in `shell` (in an empty directory, so file-name completion adds nothing)
/// and returns its stdout.
fn run_shell(shell: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(shell)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {shell}: {e}"));
    assert!(out.status.success(), "{shell} {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn bash_completion_offers_every_subcommand_and_their_values() {
    let tmp = tempfile::tempdir().unwrap();
    let subs = subcommands(&tmp.path().join("man"));
    let script = tmp.path().join("leaktop.bash");
    std::fs::write(&script, leaktop_ok(&["completions", "bash"])).unwrap();
    let empty = tmp.path().join("cwd");
    std::fs::create_dir(&empty).unwrap();
    // What bash's programmable completion does on TAB: the function clap generated, with
    // the words typed so far.
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let cword = words.len() - 1;
        let cmd = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; \
             _leaktop leaktop '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            quoted.join(" "),
            words[cword],
            words[cword - 1],
        );
        run_shell("bash", &["-c", &cmd], &empty)
            .lines()
            .map(String::from)
            .collect()
    };
    let all = complete(&["leaktop", ""]);
    for sub in &subs {
        assert!(all.contains(sub), "`leaktop <TAB>` lacks {sub}: {all:?}");
    }
    assert!(!all.iter().any(|w| w.starts_with("__")), "{all:?}");
    assert_eq!(complete(&["leaktop", "d"]), ["dump", "demo"]);
    let shells = complete(&["leaktop", "completions", ""]);
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        assert!(shells.contains(&shell.to_string()), "{shells:?}");
    }
    assert!(complete(&["leaktop", "dump", "--fo"]).contains(&"--format".to_string()));
}

#[test]
fn fish_and_zsh_accept_their_completion_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let subs = subcommands(&tmp.path().join("man"));
    let mut ran = Vec::new();
    if has("fish") {
        let script = tmp.path().join("leaktop.fish");
        std::fs::write(&script, leaktop_ok(&["completions", "fish"])).unwrap();
        let cmd = format!("source '{}'; complete -C 'leaktop '", script.display());
        let offered = run_shell("fish", &["-c", &cmd], tmp.path());
        for sub in &subs {
            assert!(
                offered.lines().any(|l| l.split('\t').next() == Some(sub)),
                "fish does not offer {sub}: {offered}"
            );
        }
        ran.push("fish");
    }
    if has("zsh") {
        let script = tmp.path().join("_leaktop");
        std::fs::write(&script, leaktop_ok(&["completions", "zsh"])).unwrap();
        run_shell("zsh", &["-n", script.to_str().unwrap()], tmp.path());
        ran.push("zsh");
    }
    // Elvish and PowerShell only load completers in an interactive editor: their scripts
    // are checked for every subcommand by the binary's unit test
    // `completions_and_man_pages_cover_every_subcommand`.
    if ran.len() < 2 {
        println!("skipped the shells not installed here (.ci/run installs them): ran {ran:?}");
    }
    for shell in ["elvish", "powershell"] {
        let script = leaktop_ok(&["completions", shell]);
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{shell} lacks {sub}");
        }
    }
}

#[test]
fn man_pages_render_through_man_and_name_every_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let subs = subcommands(&dir);
    // The pages `man` would find after `leaktop man --dir ~/.local/share/man/man1`.
    let render = |page: &Path| -> String {
        let out = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .stdin(Stdio::null())
            .output()
            .expect("run man");
        assert!(
            out.status.success(),
            "man -l {}: {}",
            page.display(),
            stderr(&out)
        );
        // No groff warnings: the roff is well formed.
        assert_eq!(stderr(&out), "", "man -l {}", page.display());
        // Without a terminal, man still bolds and underlines by overstriking (`x\bx`).
        let mut text = String::new();
        for c in stdout(&out).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        text
    };
    if !has("man") {
        println!("skipped rendering: no `man` here; checked the roff text only");
    }
    let main_page = dir.join("leaktop.1");
    let stdout_page = leaktop_ok(&["man"]);
    assert_eq!(std::fs::read_to_string(&main_page).unwrap(), stdout_page);
    let text = if has("man") {
        render(&main_page)
    } else {
        stdout_page.replace("\\-", "-")
    };
    for sub in &subs {
        assert!(
            text.contains(&format!("leaktop-{sub}(1)")),
            "leaktop(1) lacks {sub}:\n{text}"
        );
        let page: PathBuf = dir.join(format!("leaktop-{sub}.1"));
        let own = leaktop_ok(&["man", sub]);
        assert_eq!(std::fs::read_to_string(&page).unwrap(), own, "{sub}");
        if has("man") {
            let rendered = render(&page);
            assert!(rendered.contains(&format!("leaktop {sub}")), "{rendered}");
        }
    }
    // The page of `dump` documents its flags.
    assert!(leaktop_ok(&["man", "dump"]).contains("all\\-frames"));
    // A subcommand without a page is a clear error.
    let out = leaktop_out(&["man", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no subcommand `nope`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn both_crates_carry_the_metadata_crates_io_needs() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", stderr(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["leaktop", "leaktop-agent"] {
        let pkg = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no package {name}"));
        for field in [
            "description",
            "license",
            "repository",
            "readme",
            "rust_version",
        ] {
            let v = pkg[field].as_str().unwrap_or("");
            assert!(!v.trim().is_empty(), "{name}: no {field}");
        }
        let manifest = Path::new(pkg["manifest_path"].as_str().unwrap());
        let readme = manifest
            .parent()
            .unwrap()
            .join(pkg["readme"].as_str().unwrap());
        let readme_text = std::fs::read_to_string(&readme)
            .unwrap_or_else(|e| panic!("{name}: readme {}: {e}", readme.display()));
        assert!(readme_text.contains("cargo install") || name == "leaktop-agent");
        let keywords = pkg["keywords"].as_array().unwrap();
        assert!((1..=5).contains(&keywords.len()), "{name}: {keywords:?}");
        for k in keywords {
            let k = k.as_str().unwrap();
            assert!(
                k.len() <= 20
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c)),
                "{name}: crates.io refuses the keyword {k:?}"
            );
        }
        let categories = pkg["categories"].as_array().unwrap();
        assert!(
            (1..=5).contains(&categories.len()),
            "{name}: {categories:?}"
        );
    }
}
