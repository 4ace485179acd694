//! Shell integration generated from the command line's clap definition: completion
//! scripts (`clap_complete`) and man pages (`clap_mangen`). Both take the `clap::Command`,
//! so a new subcommand or flag is completed and documented without a change here.

use std::path::{Path, PathBuf};

use clap::Command;
pub use clap_complete::Shell;

/// Why a man page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("no subcommand `{name}`: man pages exist for {}", known.join(", "))]
    UnknownSubcommand { name: String, known: Vec<String> },
    #[error("cannot write the man page {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the man page directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The names of `cmd`'s subcommands a user sees (hidden ones and clap's own `help` left
/// out), in their declared order.
pub fn subcommands(cmd: &Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect()
}

/// The completion script of `cmd` for `shell`, for a binary named like the command.
/// Hidden subcommands are not offered. Returned whole, so that a closed stdout is the
/// caller's error to handle, not a panic inside the generator.
pub fn completions(shell: Shell, cmd: Command) -> Vec<u8> {
    let mut cmd = visible_only(&cmd);
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// `cmd` without its hidden subcommands, at every level. clap_complete offers hidden
/// subcommands too (clap issue 1335) and `Command` cannot remove one, so the command is
/// put together again from what completion scripts use: name, version, about, arguments
/// (clap's own `--help`/`--version` come back when it is built) and visible subcommands.
fn visible_only(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_string()).args(cmd.get_arguments().cloned());
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_string());
    }
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    for alias in cmd.get_visible_aliases() {
        out = out.visible_alias(alias.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(visible_only(sub));
    }
    out
}

/// The man page (roff) of `cmd`, or of its subcommand `subcommand` (`leaktop-dump(1)`).
pub fn man_page(cmd: Command, subcommand: Option<&str>) -> Result<Vec<u8>, ManError> {
    let cmd = without_help_subcommand(cmd);
    let page = match subcommand {
        None => clap_mangen::Man::new(cmd),
        Some(name) => clap_mangen::Man::new(find_subcommand(cmd, name)?),
    };
    let mut roff = Vec::new();
    page.render(&mut roff).map_err(|source| ManError::Write {
        path: PathBuf::from("-"),
        source,
    })?;
    Ok(roff)
}

/// Writes the man pages of `cmd` and of each of its subcommands into `dir` (created if
/// missing): `leaktop.1`, `leaktop-dump.1`, …, and returns their paths.
pub fn write_man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    let cmd = without_help_subcommand(cmd);
    std::fs::create_dir_all(dir).map_err(|source| ManError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let mut pages = vec![clap_mangen::Man::new(cmd.clone())];
    for name in subcommands(&cmd) {
        pages.push(clap_mangen::Man::new(find_subcommand(cmd.clone(), &name)?));
    }
    for page in pages {
        let path = dir.join(page.get_filename());
        page.generate_to(dir).map_err(|source| ManError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// clap's `help` subcommand has no page of its own (`--help` is on every page): leaving
/// it out keeps the SUBCOMMANDS section from pointing at a page that does not exist.
fn without_help_subcommand(cmd: Command) -> Command {
    cmd.disable_help_subcommand(true)
}

/// The subcommand `name` of `cmd`, built so that its page is titled `parent-name`.
fn find_subcommand(mut cmd: Command, name: &str) -> Result<Command, ManError> {
    let known = subcommands(&cmd);
    if !known.iter().any(|k| k == name) {
        return Err(ManError::UnknownSubcommand {
            name: name.to_string(),
            known,
        });
    }
    cmd.build();
    cmd.find_subcommand(name)
        .cloned()
        .ok_or_else(|| ManError::UnknownSubcommand {
            name: name.to_string(),
            known,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("tool")
            .version("1.0")
            .about("A tool.")
            .subcommand(
                Command::new("alpha")
                    .about("The first.")
                    .arg(Arg::new("fast").long("fast").action(ArgAction::SetTrue)),
            )
            .subcommand(Command::new("beta").about("The second."))
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn subcommands_leave_out_hidden_ones_and_help() {
        let mut built = cmd();
        built.build();
        assert_eq!(subcommands(&built), ["alpha", "beta"]);
    }

    #[test]
    fn a_subcommand_page_is_titled_with_its_parent_and_has_its_flags() {
        let page = String::from_utf8(man_page(cmd(), Some("alpha")).unwrap()).unwrap();
        assert!(page.contains(".TH tool-alpha 1"), "{page}");
        assert!(page.contains("fast"), "{page}");
        let err = man_page(cmd(), Some("secret")).unwrap_err().to_string();
        assert_eq!(
            err,
            "no subcommand `secret`: man pages exist for alpha, beta"
        );
    }

    #[test]
    fn completions_offer_visible_subcommands_and_flags_only() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(completions(shell, cmd())).unwrap();
            for word in ["alpha", "beta", "fast"] {
                assert!(script.contains(word), "{shell}: no {word}\n{script}");
            }
            assert!(
                !script.contains("secret"),
                "{shell}: offers the hidden one\n{script}"
            );
        }
    }

    #[test]
    fn write_man_pages_writes_one_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        let written = write_man_pages(cmd(), &out).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["tool.1", "tool-alpha.1", "tool-beta.1"]);
        for p in &written {
            assert!(std::fs::read_to_string(p).unwrap().starts_with(".ie"));
        }
    }
}
