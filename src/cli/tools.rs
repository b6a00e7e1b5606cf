//! `autobot completions SHELL` and `autobot manpages DIR`: shell completions
//! (clap_complete) and man pages (clap_mangen) made from the command line's own
//! definition, so they always match the binary; `scripts/install.sh` installs
//! both under its prefix.

use anyhow::Context;
use clap::{Args, CommandFactory, ValueEnum};
use std::path::PathBuf;

/// The shells `autobot completions` writes for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Directory to write autobot.1 and one autobot-VERB.1 per subcommand into
    /// (made if missing), e.g. ~/.local/share/man/man1.
    pub dir: PathBuf,
}

/// Print the completion script for a shell on standard output.
pub fn completions_cmd(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "autobot", &mut std::io::stdout());
    Ok(())
}

/// Write the man pages into a directory; prints each file written.
pub fn manpages_cmd(args: &ManpagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut pages = vec![("autobot".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("autobot-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut text)
            .with_context(|| format!("cannot render the man page {name}.1"))?;
        let path = args.dir.join(format!("{name}.1"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
