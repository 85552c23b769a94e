//! `walvault generate man|completions DIR`: man pages and shell completions from the command
//! line's own definition (clap), so they never drift from `--help`. The Debian package runs
//! it at build time.

use std::fs;
use std::path::Path;

use anyhow::Context;

/// Writes `walvault.1` and one `walvault-COMMAND.1` per visible command into `dir`.
pub fn man(cli: clap::Command, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: String, page: clap::Command| -> anyhow::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let cli = cli.name("walvault");
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("walvault-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("walvault {}", sub.get_name()));
        write(name, page)?;
    }
    write("walvault".into(), cli)?;
    Ok(written)
}

/// Writes the bash, zsh and fish completions into `dir`.
pub fn completions(mut cli: clap::Command, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use clap_complete::Shell;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (shell, file) in [
        (Shell::Bash, "walvault"),
        (Shell::Zsh, "_walvault"),
        (Shell::Fish, "walvault.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cli, "walvault", &mut out);
        let path = dir.join(file);
        fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn man_pages_render_and_completions_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man(crate::cli::Cli::command(), &dir.path().join("man")).expect("man");
        let page = |name: &str| {
            fs::read_to_string(dir.path().join("man").join(name)).expect("page written")
        };
        assert!(page("walvault.1").contains(".TH walvault"));
        assert!(page("walvault.1").contains("archive\\-wal"));
        assert!(page("walvault-get-wal.1").contains("restore_command"));
        assert!(
            !pages.iter().any(|p| p.ends_with("walvault-key-agent.1")),
            "hidden commands get no page"
        );
        // groff reads every page without a warning, where it is installed.
        for p in &pages {
            if let Ok(out) = std::process::Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(p)
                .output()
            {
                assert!(
                    out.status.success() && out.stderr.is_empty(),
                    "{}: {}",
                    p.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let scripts = completions(crate::cli::Cli::command(), &dir.path().join("completions"))
            .expect("completions");
        assert_eq!(scripts.len(), 3);
        let bash = fs::read_to_string(&scripts[0]).expect("bash");
        assert!(bash.contains("archive-wal") && bash.contains("--barman-config"));
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(&scripts[0])
            .status()
            .expect("bash");
        assert!(status.success(), "the bash completion parses");
    }
}
