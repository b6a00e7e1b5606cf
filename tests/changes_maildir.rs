//! The maildir change sources (`[changesource:NAME]`, `type = maildir`), on a
//! running master with a real slave:
//! * svn: real mails of svn's own `commit-email.pl` (Debian's subversion-tools),
//!   run by a real `post-commit` hook of an `svnadmin create` repository and
//!   delivered into the maildir as an MTA does (`tmp/`, then renamed into `new/`),
//!   become Changes (author, revision, files under the prefix, log) and builds of
//!   that revision; the mail moves to `cur/`;
//! * a malformed mail is moved to `bad/` with its reason, logged, and the master goes
//!   on reading the next one;
//! * a mail stored but not yet moved when the master stopped is not submitted again
//!   after the restart;
//! * cvs: a syncmail message becomes a Change and a build (the source added by a
//!   reconfig);
//! * bzr: a Bazaar commit mail (the email plugin's `brz log -v` of a real branch)
//!   becomes a Change and a build of that revno;
//! * `checkconfig`: an unknown format and a missing maildir are errors at their line.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use scheduler_common::{blamelist, ini, wait_finished, wait_some, GitRepo, Site};

const COMMIT_EMAIL: &str = "/usr/share/subversion/hook-scripts/commit-email.pl";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::skip(&format!("`{tool}` is not installed (Debian: {package})"));
    }
    ok
}

/// Files in `dir` (names), sorted; none when it does not exist.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Deliver `text` into `maildir` as an MTA does: written into `tmp/`, renamed into
/// `new/`.
fn deliver(maildir: &Path, name: &str, text: &str) {
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
    let tmp = maildir.join("tmp").join(name);
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, maildir.join("new").join(name)).unwrap();
}

/// An svn repository with `trunk/`, whose `post-commit` hook runs commit-email.pl
/// and delivers its mail into `maildir`.
struct SvnRepo {
    root: PathBuf,
    wc: PathBuf,
}

impl SvnRepo {
    fn new(dir: &Path, maildir: &Path) -> SvnRepo {
        std::fs::create_dir_all(dir).unwrap();
        let root = dir.join("repo");
        run(Command::new("svnadmin").arg("create").arg(&root));
        let url = format!("file://{}", root.display());
        run(Command::new("svn").args([
            "mkdir",
            "-q",
            "--username",
            "init",
            "-m",
            "layout",
            &format!("{url}/trunk"),
        ]));
        // The hook runs with an empty environment: full paths, PATH set. The mail
        // is commit-email.pl's own (`--stdout` is its way to hand the message to
        // something other than /usr/sbin/sendmail); delivery is the maildir way.
        // The script stops unless its `$sendmail` program exists, even with
        // `--stdout`, and tells the admin to edit it: the hook runs a copy whose
        // `$sendmail` is /bin/false (never run: `--stdout` writes the mail), so
        // the test needs no MTA on the machine.
        let script = std::fs::read_to_string(COMMIT_EMAIL).unwrap();
        let setting = "$sendmail = \"/usr/sbin/sendmail\";";
        assert!(
            script.contains(setting),
            "{COMMIT_EMAIL} no longer has the line {setting}"
        );
        let commit_email = dir.join("commit-email.pl");
        std::fs::write(
            &commit_email,
            script.replacen(setting, "$sendmail = \"/bin/false\";", 1),
        )
        .unwrap();
        let commit_email = commit_email.display();
        let hook = root.join("hooks/post-commit");
        let m = maildir.display();
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nPATH=/usr/bin:/bin\nexport PATH\nset -e\n\
                 for d in tmp new cur; do mkdir -p '{m}'/$d; done\n\
                 name=\"$(date +%s).r$2.$$.autobot-test\"\n\
                 /usr/bin/perl {commit_email} \"$1\" \"$2\" --stdout -h example.org dev@example.org > '{m}'/tmp/\"$name\"\n\
                 mv '{m}'/tmp/\"$name\" '{m}'/new/\"$name\"\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wc = dir.join("wc");
        run(Command::new("svn")
            .args(["checkout", "-q", &format!("{url}/trunk")])
            .arg(&wc));
        SvnRepo { root, wc }
    }

    fn trunk(&self) -> String {
        format!("file://{}/trunk", self.root.display())
    }

    /// Commit `content` to `file` as `who`; the revision.
    fn commit(&self, who: &str, file: &str, content: &str, msg: &str) -> String {
        let f = self.wc.join(file);
        let existed = f.exists();
        std::fs::write(&f, content).unwrap();
        if !existed {
            run(Command::new("svn").args(["add", "-q"]).arg(&f));
        }
        let mut cmd = Command::new("svn");
        cmd.args(["commit", "--username", who, "-m", msg])
            .arg(&self.wc);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        // A failed post-commit hook is only a warning to svn: the mail is lost.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("hook failed"), "{cmd:?}: {err}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Committed revision "))
            .map(|r| r.trim_end_matches('.').to_string())
            .unwrap_or_else(|| panic!("no revision in {out:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svn_commit_mails_become_builds_bad_mail_is_set_aside_and_restart_resubmits_nothing() {
    if !have("svn", "subversion") || !have("svnadmin", "subversion") {
        return;
    }
    if !Path::new(COMMIT_EMAIL).is_file() {
        support::skip("commit-email.pl is not installed (Debian: subversion-tools)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site_ini = |maildir: &Path, trunk: &str| {
        ini(
            // The factory's own svn poller looks once (recording the head) and not
            // again during the test: the mails are the Changes.
            "pollInterval = 3600\ntreeStable = 1",
            &["s1"],
            &format!(
                "[svnproj]\ntype = shell\nsvn = {trunk}\nstep.show = cat a.c\n\n\
                 [changesource:svn-mail]\ntype = maildir\nmaildir = {}\nformat = svn\n\
                 prefix = trunk/\nproject = svnproj\npollInterval = 1\n",
                maildir.display()
            ),
        )
    };
    let maildir = tmp.path().join("mail");
    let repo = SvnRepo::new(&tmp.path().join("svn"), &maildir);
    let site = Site::new(&site_ini(&maildir, &repo.trunk()));
    let run1 = site.start(&["s1"]).await;
    let db = run1.db().clone();

    let rev = repo.commit(
        "alice",
        "a.c",
        "int main(void) { return 0; }\n",
        "Add a.c\n\nWith a body.",
    );
    let b = wait_finished(&db, "svnproj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(blamelist(&b), vec!["alice"]);
    assert_eq!(b.changes[0].files, vec!["a.c"]);
    assert_eq!(b.changes[0].comments, "Add a.c\n\nWith a body.\n");
    assert_eq!(b.changes[0].revision.as_deref(), Some(rev.as_str()));
    assert!(names(&maildir.join("new")).is_empty());
    let cur = names(&maildir.join("cur"));
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].ends_with(":2,"), "{cur:?}");

    // A malformed mail: set aside with its reason, logged; the master reads on.
    deliver(
        &maildir,
        "1.junk.host",
        "Subject: hi\n\nnot a commit mail at all\n",
    );
    deliver(&maildir, "2.binary.host", "\u{0}\u{1}\u{2}");
    let bad = maildir.join("bad");
    wait_some("the malformed mails in bad/", || {
        let n = names(&bad);
        async move { (n.len() == 4).then_some(()) }
    })
    .await;
    let reason = std::fs::read_to_string(bad.join("1.junk.host.reason")).unwrap();
    assert!(reason.contains("New Revision"), "{reason}");
    assert!(support::log_has(&[
        "change source svn-mail: 1.junk.host is not a svn commit mail",
        "moved to"
    ]));
    let rev2 = repo.commit("bob", "a.c", "int main(void) { return 1; }\n", "Return 1");
    let b2 = wait_finished(&db, "svnproj-s1", 2).await;
    assert_eq!(b2.build.result.as_deref(), Some("success"), "{b2:?}");
    assert_eq!(b2.revision.as_deref(), Some(rev2.as_str()));
    assert_eq!(blamelist(&b2), vec!["bob"]);
    run1.stop().await;

    // The master stopped after storing a mail's Change but before moving it: the
    // same mail back in new/ is not submitted again after the restart.
    let cur = names(&maildir.join("cur"));
    assert_eq!(cur.len(), 2, "{cur:?}");
    let again = cur[1].trim_end_matches(":2,").to_string();
    std::fs::rename(
        maildir.join("cur").join(&cur[1]),
        maildir.join("new").join(&again),
    )
    .unwrap();
    let before = db.changes(100, None).await.unwrap().len();
    assert_eq!(before, 2);
    let run2 = site.start(&["s1"]).await;
    let db = run2.db().clone();
    wait_some("the repeated mail back in cur/", || {
        let n = names(&maildir.join("cur"));
        async move { (n.len() == 2).then_some(()) }
    })
    .await;
    assert!(support::log_has(&[
        "change source svn-mail",
        "was submitted before"
    ]));
    // And a new commit after the restart still builds.
    let rev3 = repo.commit(
        "carol",
        "a.c",
        "int main(void) { return 0; }\n",
        "Back to 0",
    );
    let b3 = wait_finished(&db, "svnproj-s1", 3).await;
    assert_eq!(b3.revision.as_deref(), Some(rev3.as_str()));
    assert!(blamelist(&b3).contains(&"carol".to_string()), "{b3:?}");
    // The mails' Changes (the factory's own svn poller, which looked again at the
    // restart, reports the commits it missed under the repository's URL): one each.
    let from_mail: Vec<_> = db
        .changes(100, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.repository.is_empty())
        .map(|c| c.revision.unwrap_or_default())
        .collect();
    let mut from_mail = from_mail;
    from_mail.sort();
    assert_eq!(from_mail, vec![rev, rev2, rev3]);
    run2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syncmail_message_becomes_a_change_and_a_build() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("git"));
    repo.commit("Ann <ann@example.org>", "src/main.c", "init");
    let maildir = tmp.path().join("cvsmail");
    std::fs::create_dir_all(&maildir).unwrap();
    let factory = format!(
        "[proj]\ntype = shell\ngit = {}#main\nstep.show = ls src\n\n",
        repo.url()
    );
    let site = Site::new(&ini(
        "pollInterval = 3600\ntreeStable = 1",
        &["s1"],
        &factory,
    ));
    let run1 = site.start(&["s1"]).await;
    let db = run1.db().clone();
    // The change source comes with a reconfig.
    support::write_master_ini(
        site.path(),
        ini(
            "pollInterval = 3600\ntreeStable = 1",
            &["s1"],
            &format!(
                "{factory}[changesource:cvs]\ntype = maildir\nmaildir = {}\nformat = cvs\n\
                 prefix = proj/\nproject = proj\npollInterval = 1\n",
                maildir.display()
            ),
        ),
    );
    run1.master.reconfig().await.unwrap();
    // syncmail's message for a commit of two files in proj/src.
    deliver(
        &maildir,
        "1700000000.M1P2.cvs.example.org",
        "Return-Path: <carol@cvs.example.org>\n\
         From: carol@users.example.org\n\
         To: proj-commits@example.org\n\
         Subject: proj/src main.c,1.2,1.3 util.c,1.1,1.2\n\
         Message-Id: <E19h2KY-0003r4-00@cvs.example.org>\n\
         Date: Mon, 28 Jul 2003 00:22:02 -0700\n\
         \n\
         Update of /cvsroot/proj/proj/src\n\
         In directory cvs.example.org:/tmp/cvs-serv14795/src\n\
         \n\
         Modified Files:\n\
         \tmain.c util.c \n\
         Log Message:\n\
         Fix the parser\n\
         \n\
         Index: main.c\n\
         ===================================================================\n\
         RCS file: /cvsroot/proj/proj/src/main.c,v\n",
    );
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(blamelist(&b), vec!["carol"]);
    assert_eq!(b.changes[0].files, vec!["src/main.c", "src/util.c"]);
    assert_eq!(b.changes[0].comments, "Fix the parser\n");
    assert_eq!(b.changes[0].when, 1_059_376_922);
    assert_eq!(names(&maildir.join("cur")).len(), 1);
    run1.stop().await;
}

fn brz_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Debian's brz runs under the interpreter PYTHONEXECUTABLE names, not the
        // first python3 on PATH (a venv's, in the test tools).
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(brz) = std::env::split_paths(&path)
            .map(|d| d.join("brz"))
            .find(|p| p.is_file())
        {
            std::env::set_var("PYTHONEXECUTABLE", brz);
        }
    });
}

fn brz(dir: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("brz")
        .args(args)
        .current_dir(dir)
        .env("BRZ_EMAIL", "Joe <joe@acme.com>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bazaar_commit_mail_becomes_a_build_of_its_revno() {
    brz_env();
    if !have("brz", "brz") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let branch = tmp.path().join("proj");
    brz(&branch, &["init", "-q"]);
    std::fs::write(branch.join("a.txt"), "one\n").unwrap();
    brz(&branch, &["add", "-q", "a.txt"]);
    brz(&branch, &["commit", "-q", "-m", "first"]);
    let maildir = tmp.path().join("bzrmail");
    std::fs::create_dir_all(&maildir).unwrap();
    let site = Site::new(&ini(
        "pollInterval = 3600\ntreeStable = 1",
        &["s1"],
        &format!(
            "[proj]\ntype = shell\nbzr = {}\nstep.show = cat a.txt\n\n\
             [changesource:lp]\ntype = maildir\nmaildir = {}\nformat = bzr\n\
             project = proj\npollInterval = 1\n",
            branch.display(),
            maildir.display()
        ),
    ));
    let run1 = site.start(&["s1"]).await;
    let db = run1.db().clone();
    std::fs::write(branch.join("a.txt"), "two\n").unwrap();
    brz(&branch, &["commit", "-q", "-m", "second\n\nwith details"]);
    std::fs::write(branch.join("a.txt"), "three\n").unwrap();
    brz(&branch, &["commit", "-q", "-m", "third"]);
    // Bazaar's email plugin mails `brz log -v` of the revision, as Launchpad does.
    let log = brz(&branch, &["log", "-v", "-r", "2"]);
    deliver(
        &maildir,
        "1.lp.host",
        &format!(
            "From: noreply@launchpad.net\nTo: Joe <joe@acme.com>\n\
             Subject: [Branch ~joe/proj/trunk] Rev 2: second\n\
             Content-Type: text/plain; charset=\"utf-8\"\nMIME-Version: 1.0\n\n{log}\n--\n\n\
             https://code.launchpad.net/~joe/proj/trunk\n"
        ),
    );
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some("2"));
    assert_eq!(blamelist(&b), vec!["Joe <joe@acme.com>"]);
    assert_eq!(b.changes[0].files, vec!["a.txt"]);
    assert_eq!(b.changes[0].comments, "second\n\nwith details\n");
    // The build checked out revno 2, not the newest.
    let built = site.path().join("slave-s1/proj-s1/build/a.txt");
    assert_eq!(std::fs::read_to_string(built).unwrap(), "two\n");
    run1.stop().await;
}

#[test]
fn checkconfig_names_an_unknown_format_and_a_missing_maildir() {
    let tmp = tempfile::tempdir().unwrap();
    let base =
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\n\n[hello]\ntype = shell\nstep.x = true\n\n";
    let check = |body: &str| {
        support::write_master_ini(tmp.path(), format!("{base}{body}"));
        let out = Command::new(engine_common::autobot_bin())
            .arg("checkconfig")
            .arg(tmp.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = check("[changesource:m]\ntype = maildir\nmaildir = mail\nformat = git\n");
    assert!(!ok, "{text}");
    assert!(
        text.contains("master.ini:12: [changesource:m] format: unknown mail format \"git\""),
        "{text}"
    );
    let (ok, text) = check("[changesource:m]\ntype = maildir\nmaildir = nowhere\nformat = svn\n");
    assert!(!ok, "{text}");
    assert!(
        text.contains("master.ini:11: [changesource:m] maildir:"),
        "{text}"
    );
    assert!(text.contains("is not a directory"), "{text}");
    let (ok, text) = check("[changesource:m]\ntype = maildir\nformat = svn\n");
    assert!(
        !ok && text.contains("master.ini:9: [changesource:m]: no `maildir`"),
        "{text}"
    );
    let (ok, text) = check("[changesource:m]\ntype = pop3\n");
    assert!(
        !ok && text.contains("unknown change source type \"pop3\""),
        "{text}"
    );
    std::fs::create_dir_all(tmp.path().join("mail")).unwrap();
    let (ok, text) =
        check("[changesource:m]\ntype = maildir\nmaildir = mail\nformat = cvs\nproject = hello\n");
    assert!(ok, "{text}");
    assert!(text.contains("change sources (1):"), "{text}");
    assert!(text.contains("format=cvs  project=hello"), "{text}");
}
