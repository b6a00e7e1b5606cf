//! `autobot list-factories` and `autobot checkconfig`: read-only views of what a
//! master can build and of whether a `master.ini` is valid.

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{config, factory};

#[derive(Debug, Args)]
pub struct ListFactoriesArgs {
    /// List the built-in factory types, each parameter and its default, instead.
    #[arg(long)]
    pub types: bool,
    /// Directory whose projects/*.ini are listed beside the bundled projects
    /// [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub master: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckconfigArgs {
    /// A master directory or its master.ini.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

/// The directory whose `projects/` holds local projects: `--master` or the cwd.
pub fn local_dir(master: Option<&Path>) -> PathBuf {
    master
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `Factories::` listing of every project known from `dir`.
pub fn factories_text(dir: &Path) -> anyhow::Result<String> {
    let projects = config::projects(Some(dir))?;
    Ok(config::list_factories_text(&projects))
}

pub fn list_factories_cmd(args: &ListFactoriesArgs) -> anyhow::Result<()> {
    if args.types {
        print!("{}", factory::types_text());
        return Ok(());
    }
    let dir = local_dir(args.master.as_deref());
    print!("{}", factories_text(&dir)?);
    Ok(())
}

pub fn checkconfig_cmd(args: &CheckconfigArgs) -> anyhow::Result<ExitCode> {
    let path = config::master_ini_path(&args.path);
    let loaded =
        config::load(&path).and_then(|cfg| config::check_local_sources(&cfg).map(|()| cfg));
    match loaded {
        Ok(cfg) => {
            println!("{} is valid.", path.display());
            print!("{}", config::summary(&cfg));
            // Valid but unsafe: said on stderr, each with its place and its fix.
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("autobot: error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Load a master.ini for a command that needs one (with the path in the error).
pub fn load_config(path: &Path) -> anyhow::Result<config::MasterConfig> {
    let ini = config::master_ini_path(path);
    config::load(&ini).with_context(|| format!("invalid configuration {}", ini.display()))
}
