//! Factories with several sources, built on a real autobot slave by an in-process
//! master: two git repositories (one on a `#branch` that is not its default) and one
//! hg repository, made with their command lines in a temp dir. Each source lands in
//! its own directory under `build` (named after the URL's last part, `.git`
//! stripped) with its own branch's content; `got_revision_DIR` is set per source and
//! `got_revision` is the first checkout's (hg sources come first); `platform = true`
//! passes the slave's os. Every checkout mode (update, clobber, copy, export) is
//! built twice, around new commits, through the slave's mirror, and once with
//! `mirror = false`.
//!
//! Without `hg` the hg tests fail under `CI=true` and print SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use autobot::db::builds::BuildDetail;
use autobot::engine::ForceRequest;
use engine_common::*;
use scheduler_common::{have_hg, GitRepo, HgRepo};

const WHO: &str = "Ann Author <ann@example.org>";

/// The three repositories: `alpha` (git, main), `beta.git` (git, built from
/// `feature`), `gamma` (hg, default).
struct Repos {
    _tmp: tempfile::TempDir,
    alpha: GitRepo,
    beta: GitRepo,
    gamma: HgRepo,
}

/// Newest revisions: (alpha main, beta feature, beta main, gamma default).
type Heads = (String, String, String, String);

impl Repos {
    fn new() -> (Repos, Heads) {
        let tmp = tempfile::tempdir().unwrap();
        let alpha = GitRepo::new(&tmp.path().join("alpha"));
        let beta = GitRepo::new(&tmp.path().join("beta.git"));
        let gamma = HgRepo::new(&tmp.path().join("gamma"));
        let a = alpha.commit(WHO, "a.txt", "alpha 1");
        let beta_main = beta.commit(WHO, "b.txt", "beta main 1");
        beta.git(&["checkout", "-q", "-b", "feature"], WHO);
        let b = beta.commit(WHO, "b.txt", "beta feature 1");
        beta.git(&["checkout", "-q", "main"], WHO);
        let g = gamma.commit(WHO, "c.txt", "gamma 1");
        let repos = Repos {
            _tmp: tmp,
            alpha,
            beta,
            gamma,
        };
        (repos, (a, b, beta_main, g))
    }

    /// `git = …` and `hg = …` of a factory.
    fn sources(&self) -> String {
        format!(
            "git = {}#main {}#feature\nhg = {}\n",
            self.alpha.url(),
            self.beta.url(),
            self.gamma.url()
        )
    }

    /// A commit to each (and one to beta's main, which no build may see).
    fn commit(&self, n: u32) -> Heads {
        let a = self.alpha.commit(WHO, "a.txt", &format!("alpha {n}"));
        let beta_main = self
            .beta
            .commit(WHO, "b.txt", &format!("beta main {n} (not built)"));
        self.beta.git(&["checkout", "-q", "feature"], WHO);
        let b = self.beta.commit(WHO, "b.txt", &format!("beta feature {n}"));
        self.beta.git(&["checkout", "-q", "main"], WHO);
        let g = self.gamma.commit(WHO, "c.txt", &format!("gamma {n}"));
        (a, b, beta_main, g)
    }
}

/// One slave `s1` (os = mac, so `platform` is not just the default) and
/// `factories`; no polling during the test.
fn ini(factories: &str) -> String {
    format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n\
         pollInterval = 3600\n\n[slave:{SLAVE}]\nos = mac\n\n{factories}\n"
    )
}

async fn build_ok(m: &EngineMaster, builder: &str, number: i64) -> BuildDetail {
    let id = m
        .force(
            builder,
            ForceRequest {
                reason: format!("{builder} #{number}"),
                ..Default::default()
            },
        )
        .await;
    let req = m.wait_request(id).await;
    let b = m.build(builder, number).await;
    let steps: Vec<(&str, Option<&str>)> = b
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(
        req.result.as_deref(),
        Some("success"),
        "{builder} #{number}: {steps:?} {}",
        b.build.text
    );
    b
}

fn prop<'a>(b: &'a BuildDetail, name: &str) -> &'a str {
    match b.properties.get(name) {
        Some((v, _)) => v,
        None => panic!("no property {name} in {:?}", b.properties),
    }
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The last line of a file the repository helpers append to.
fn last_line(path: &Path) -> String {
    text(path).lines().last().unwrap_or_default().to_string()
}

fn git_head(dir: &Path) -> String {
    support::run_ok(
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(dir),
    )
}

/// Checks one build's trees under `tree` (`build` or `source` of the builder's
/// directory) and its got_revision properties.
fn assert_sources(b: &BuildDetail, tree: &Path, heads: &Heads, n: u32) {
    let (a, fb, _, g) = heads;
    assert_eq!(last_line(&tree.join("alpha/a.txt")), format!("alpha {n}"));
    assert_eq!(
        last_line(&tree.join("beta/b.txt")),
        format!("beta feature {n}"),
        "beta is built from its #feature branch"
    );
    assert!(!text(&tree.join("beta/b.txt")).contains("not built"));
    assert_eq!(last_line(&tree.join("gamma/c.txt")), format!("gamma {n}"));
    assert_eq!(prop(b, "got_revision_alpha"), a);
    assert_eq!(prop(b, "got_revision_beta"), fb);
    assert_eq!(prop(b, "got_revision_gamma"), g);
    assert_eq!(
        prop(b, "got_revision"),
        g,
        "got_revision is the first checkout's (hg first)"
    );
    assert_eq!(b.properties["got_revision_beta"].1, "Source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sources_each_in_its_directory_on_its_branch() {
    if !have_hg() {
        return;
    }
    let (repos, heads) = Repos::new();
    let factories = format!(
        "[multi]\ntype = shell\n{}platform = true\n\
         step.show = sh -c 'cat alpha/a.txt beta/b.txt gamma/c.txt; echo \"platform=$PLATFORM\"'\n",
        repos.sources()
    );
    let m = EngineMaster::start(&ini(&factories), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let builder = format!("multi-{SLAVE}");
    let bdir = m.dir.path().join("slave").join(&builder);

    let b = build_ok(&m, &builder, 1).await;
    let names: Vec<&str> = b.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["checkout-gamma", "checkout-alpha", "checkout-beta", "show"]
    );
    assert_sources(&b, &bdir.join("build"), &heads, 1);
    assert_eq!(git_head(&bdir.join("build/beta")), heads.1);
    assert_ne!(heads.1, heads.2, "beta's main is elsewhere");
    assert_eq!(prop(&b, "platform"), "mac");
    let show = m.log_text(&builder, 1, "show").await;
    assert!(show.contains("platform=mac"), "{show}");
    assert!(show.contains("beta feature 1"), "{show}");
    // One mirror per repository on the slave, and clones that look like clones of
    // the repositories.
    let mut mirrors: Vec<String> = std::fs::read_dir(m.dir.path().join("slave/mirrors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .map(|n| n.rsplit_once('-').unwrap().0.to_string())
        .collect();
    mirrors.sort();
    assert_eq!(mirrors, ["git-alpha", "git-beta", "hg-gamma"]);
    let origin = support::run_ok(
        std::process::Command::new("git")
            .args(["config", "remote.origin.url"])
            .current_dir(bdir.join("build/beta")),
    );
    assert_eq!(origin, repos.beta.url());

    // New commits everywhere: the second build updates each tree to its branch.
    let heads = repos.commit(2);
    let b = build_ok(&m, &builder, 2).await;
    assert_sources(&b, &bdir.join("build"), &heads, 2);
    let log = m.log_text(&builder, 2, "checkout-alpha").await;
    assert!(
        !log.contains(" clone "),
        "mode update updates in place: {log}"
    );
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_with_several_sources_twice() {
    if !have_hg() {
        return;
    }
    let (repos, heads) = Repos::new();
    // Each build appends to a build product in every tree.
    let step =
        "step.product = sh -c 'for d in alpha beta gamma; do echo built >> $d/product; done'\n";
    let mut factories = String::new();
    for (name, extra) in [
        ("upd", "mode = update\n"),
        ("clob", "mode = clobber\n"),
        ("copy", "mode = copy\n"),
        ("exp", "mode = export\n"),
        ("direct", "mode = update\nmirror = false\n"),
    ] {
        factories.push_str(&format!(
            "[{name}]\ntype = shell\n{}{extra}{step}\n",
            repos.sources()
        ));
    }
    let m = EngineMaster::start(&ini(&factories), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let dir = |f: &str| -> PathBuf { m.dir.path().join("slave").join(format!("{f}-{SLAVE}")) };
    let modes = ["upd", "clob", "copy", "exp", "direct"];
    for f in modes {
        let b = build_ok(&m, &format!("{f}-{SLAVE}"), 1).await;
        assert_sources(&b, &dir(f).join("build"), &heads, 1);
    }
    let heads = repos.commit(2);
    for f in modes {
        let builder = format!("{f}-{SLAVE}");
        let b = build_ok(&m, &builder, 2).await;
        let build = dir(f).join("build");
        assert_sources(&b, &build, &heads, 2);
        let products = text(&build.join("alpha/product")).lines().count();
        let log = m.log_text(&builder, 2, "checkout-alpha").await;
        let cloned = log.contains(" clone ");
        let (git_meta, hg_meta) = (build.join("alpha/.git"), build.join("gamma/.hg"));
        match f {
            "upd" | "direct" => {
                assert_eq!(products, 2, "{f}: update keeps build products");
                assert!(!cloned, "{f}: {log}");
                assert!(git_meta.is_dir() && hg_meta.is_dir());
            }
            "clob" => {
                assert_eq!(products, 1, "clobber starts afresh");
                assert!(cloned, "{log}");
            }
            "copy" | "exp" => {
                assert_eq!(products, 1, "{f}: a fresh copy of the source tree");
                assert!(!cloned, "{f}: the copy dir is updated: {log}");
                let source = dir(f).join("source");
                assert_sources(&b, &source, &heads, 2);
                assert!(source.join("alpha/.git").is_dir() && source.join("gamma/.hg").is_dir());
                let exported = f == "exp";
                assert_eq!(!git_meta.exists(), exported, "{f}: .git in build");
                assert_eq!(!hg_meta.exists(), exported, "{f}: .hg in build");
            }
            _ => unreachable!(),
        }
        // Through the slave's mirror, or straight from the repository.
        let via_mirror = log.contains("flock");
        assert_eq!(via_mirror, f != "direct", "{f}: {log}");
    }
    m.master.shutdown().await;
}
