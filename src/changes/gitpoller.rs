//! The git poller: fetches a repository's branches with gix into a bare mirror under
//! the master directory and turns the commits that arrived into Changes.
//!
//! No `git` binary is needed for `http(s)://` URLs (gix speaks the protocol itself;
//! `file://`/plain paths and `ssh://` go through gix's helpers, which start
//! `git-upload-pack`/`ssh` like git does). Only the configured branches are fetched
//! (`+refs/heads/B:refs/heads/B`, no tags), so an unchanged repository costs one
//! ref advertisement and no pack. Objects are never pruned from the mirror, which is
//! what lets a force-push be compared with the history it replaced.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Once;

use gix::bstr::ByteSlice;
use gix::remote::Direction;
use gix::ObjectId;

use super::{error_chain, links_for, Change, PollError, PollResult};
use crate::sources::{redact_in, redact_url};

/// Polls one git repository (several branches) into a bare mirror.
///
/// Holds no state between polls: `poll` gets the last seen head per branch from the
/// caller, who persists the result. Run `poll` on a blocking thread
/// (`tokio::task::spawn_blocking`): it does network and disk I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPoller {
    /// The repository to poll, as a user would give it to `git clone`.
    pub url: String,
    /// Branch names (without `refs/heads/`) whose new commits become Changes.
    pub branches: Vec<String>,
    /// The bare mirror (created on the first poll), e.g. from
    /// [`mirror_path`](super::mirror_path): `MASTERDIR/mirrors/<sanitized url>`.
    /// One poll at a time per mirror: give one poller every branch of a URL rather
    /// than one poller per branch on the same mirror.
    pub mirror_dir: PathBuf,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change, for schedulers and pages that filter on it.
    pub category: Option<String>,
}

/// One commit of the new range, decoded once.
struct Node {
    id: ObjectId,
    parents: Vec<ObjectId>,
    tree: ObjectId,
    who: String,
    when: i64,
    comments: String,
}

impl GitPoller {
    /// A poller for `url`'s `branches` mirrored into `mirror_dir`, with no revlink,
    /// project or category (set the public fields for those).
    pub fn new(
        url: impl Into<String>,
        branches: Vec<String>,
        mirror_dir: impl Into<PathBuf>,
    ) -> GitPoller {
        GitPoller {
            url: url.into(),
            branches,
            mirror_dir: mirror_dir.into(),
            revlink: None,
            project: String::new(),
            category: None,
        }
    }

    /// Fetches and reports what is new since `last_seen` (branch → revision).
    ///
    /// A branch missing from `last_seen` only has its head recorded (a first poll builds
    /// no history). An error for one branch lands in [`PollResult::failed`] and does not
    /// lose the others' Changes; an `Err` means nothing could be polled at all.
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        self.poll_interruptible(last_seen, &AtomicBool::new(false))
    }

    /// [`poll`](Self::poll), but a fetch in progress stops early once `interrupt` is
    /// set (the master's shutdown).
    pub fn poll_interruptible(
        &self,
        last_seen: &BTreeMap<String, String>,
        interrupt: &AtomicBool,
    ) -> Result<PollResult, PollError> {
        install_tls_provider();
        let url = redact_url(&self.url);
        let mut result = PollResult::default();

        let mut wanted = Vec::new();
        for branch in &self.branches {
            let full = format!("refs/heads/{branch}");
            if branch.is_empty() || gix::refs::FullName::try_from(full.as_str()).is_err() {
                result.failed.insert(
                    branch.clone(),
                    PollError::BranchMissing {
                        url: url.clone(),
                        branch: branch.clone(),
                    },
                );
            } else {
                wanted.push(branch.as_str());
            }
        }
        if wanted.is_empty() {
            return Err(first_failure(result, &url));
        }

        let mut repo = self.open_mirror()?;
        repo.object_cache_size_if_unset(8 * 1024 * 1024);
        let remote_heads = self.fetch(&repo, &wanted, interrupt)?;

        for branch in wanted {
            let Some(head) = remote_heads.get(branch).copied() else {
                result.failed.insert(
                    branch.to_string(),
                    PollError::BranchMissing {
                        url: url.clone(),
                        branch: branch.to_string(),
                    },
                );
                continue;
            };
            let head_hex = head.to_string();
            let old = last_seen.get(branch).map(|s| s.trim().to_ascii_lowercase());
            match old.as_deref() {
                None => {}
                Some(old) if old == head_hex => {}
                Some(old) => match self.changes_since(&repo, branch, old, head) {
                    Ok((changes, forced)) => {
                        if forced {
                            tracing::warn!(
                                repository = %url,
                                branch,
                                old,
                                new = %head_hex,
                                new_commits = changes.len(),
                                "branch was force-pushed: its head no longer descends from the last seen revision; \
                                 reporting only commits not reachable from the old head"
                            );
                            result.forced.push(branch.to_string());
                        }
                        result.changes.extend(changes);
                    }
                    Err(reason) => {
                        result.failed.insert(
                            branch.to_string(),
                            PollError::History {
                                url: url.clone(),
                                branch: branch.to_string(),
                                reason,
                            },
                        );
                        continue;
                    }
                },
            }
            result.heads.insert(branch.to_string(), head_hex);
        }

        if result.heads.is_empty() && !result.failed.is_empty() {
            return Err(first_failure(result, &url));
        }
        Ok(result)
    }

    /// Opens the bare mirror, creating it on the first poll.
    fn open_mirror(&self) -> Result<gix::Repository, PollError> {
        let err = |reason: String| PollError::Mirror {
            path: self.mirror_dir.clone(),
            reason,
        };
        let is_repo = self.mirror_dir.join("HEAD").is_file();
        if is_repo {
            return gix::open(&self.mirror_dir).map_err(|e| err(error_chain(&e)));
        }
        std::fs::create_dir_all(&self.mirror_dir).map_err(|e| err(e.to_string()))?;
        tracing::info!(
            repository = %redact_url(&self.url),
            mirror = %self.mirror_dir.display(),
            "creating the git mirror"
        );
        gix::init_bare(&self.mirror_dir).map_err(|e| err(error_chain(&e)))
    }

    /// Fetches `branches` into the mirror; returns the remote's head per branch found.
    fn fetch(
        &self,
        repo: &gix::Repository,
        branches: &[&str],
        interrupt: &AtomicBool,
    ) -> Result<HashMap<String, ObjectId>, PollError> {
        let fetch_err = |e: gix::Error| PollError::Fetch {
            url: redact_url(&self.url),
            reason: redact_in(&error_chain(&e), &self.url),
        };
        let specs: Vec<String> = branches
            .iter()
            .map(|b| format!("+refs/heads/{b}:refs/heads/{b}"))
            .collect();
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(fetch_err)?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
            .map_err(fetch_err)?;
        let connection = remote.connect(Direction::Fetch).map_err(fetch_err)?;
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(fetch_err)?;

        let mut heads = HashMap::new();
        for mapping in &prepare.ref_map().mappings {
            if let gix::remote::fetch::refmap::Source::Ref(r) = &mapping.remote {
                let (name, target, peeled) = r.unpack();
                let Some(branch) = name.strip_prefix(b"refs/heads/") else {
                    continue;
                };
                if let Some(id) = peeled.or(target) {
                    heads.insert(branch.to_str_lossy().into_owned(), id.to_owned());
                }
            }
        }
        if heads.is_empty() {
            // Nothing to receive; gix would refuse a fetch where no refspec matched.
            return Ok(heads);
        }
        // The common case: every advertised head is already the mirror's. Hanging up
        // now skips the ref update machinery, the cheapest possible unchanged poll.
        let up_to_date = heads.iter().all(|(branch, id)| {
            repo.try_find_reference(format!("refs/heads/{branch}").as_str())
                .ok()
                .flatten()
                .and_then(|r| r.try_id().map(|own| own.detach()))
                .is_some_and(|own| own == *id)
        });
        if up_to_date {
            return Ok(heads);
        }
        prepare
            .receive(gix::progress::Discard, interrupt)
            .map_err(fetch_err)?;
        Ok(heads)
    }

    /// The Changes between `old` and `head`, oldest first, and whether the branch was
    /// rewritten (`old` is not an ancestor of `head`).
    fn changes_since(
        &self,
        repo: &gix::Repository,
        branch: &str,
        old: &str,
        head: ObjectId,
    ) -> Result<(Vec<Change>, bool), String> {
        let old_id = match ObjectId::from_hex(old.as_bytes()) {
            Ok(id) if repo.has_object(id) => id,
            _ => {
                // The mirror was rebuilt after history was rewritten away: there is no
                // way to tell which commits are new, so start over from the head.
                tracing::warn!(
                    repository = %redact_url(&self.url),
                    branch,
                    old,
                    "the last seen revision is unknown to the mirror; recording the new head without Changes"
                );
                return Ok((Vec::new(), true));
            }
        };
        let nodes = walk_new_commits(repo, head, old_id).map_err(|e| error_chain(&e))?;
        let forced = !nodes.iter().any(|n| n.parents.contains(&old_id));
        let order = topological_order(&nodes);
        let trees: HashMap<ObjectId, ObjectId> = nodes.iter().map(|n| (n.id, n.tree)).collect();

        let repository = redact_url(&self.url);
        let mut state = gix::diff::tree::State::default();
        let mut changes = Vec::with_capacity(nodes.len());
        for index in order {
            let node = &nodes[index];
            let parent_tree = match node.parents.first() {
                None => None,
                Some(p) => Some(match trees.get(p) {
                    Some(tree) => *tree,
                    None => repo
                        .find_commit(*p)
                        .and_then(|c| c.tree_id().map(|id| id.detach()))
                        .map_err(|e| error_chain(&e))?,
                }),
            };
            let files = changed_files(repo, parent_tree, node.tree, &mut state)
                .map_err(|e| format!("diff of {}: {e}", node.id))?;
            let revision = node.id.to_string();
            changes.push(Change {
                who: node.who.clone(),
                files,
                comments: node.comments.clone(),
                links: links_for(self.revlink.as_deref(), &revision),
                revision,
                branch: branch.to_string(),
                when: node.when,
                repository: repository.clone(),
                category: self.category.clone(),
                project: self.project.clone(),
            });
        }
        Ok((changes, forced))
    }
}

/// Every commit reachable from `head` but not from `old`, decoded.
fn walk_new_commits(
    repo: &gix::Repository,
    head: ObjectId,
    old: ObjectId,
) -> Result<Vec<Node>, gix::Error> {
    let mut nodes = Vec::new();
    for info in repo.rev_walk([head]).with_hidden([old]).all()? {
        let info = info?;
        let commit = repo.find_commit(info.id)?;
        let decoded = commit.decode()?;
        let author = decoded.author()?;
        let when = decoded.time()?.seconds;
        nodes.push(Node {
            id: info.id,
            parents: decoded.parents().collect(),
            tree: decoded.tree(),
            who: format!(
                "{} <{}>",
                author.name.to_str_lossy(),
                author.email.to_str_lossy()
            ),
            when,
            comments: decoded.message.to_str_lossy().trim_end().to_string(),
        });
    }
    Ok(nodes)
}

/// Indices of `nodes` with every parent before its children; among commits that are
/// ready at the same time the older (by commit time, then by walk order) goes first.
fn topological_order(nodes: &[Node]) -> Vec<usize> {
    let index: HashMap<ObjectId, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut waiting_on = vec![0usize; nodes.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for parent in &node.parents {
            if let Some(&p) = index.get(parent) {
                waiting_on[i] += 1;
                children[p].push(i);
            }
        }
    }
    // The walk goes from the head backwards: a later walk position is older.
    let key = |i: usize| Reverse((nodes[i].when, Reverse(i)));
    let mut ready: BinaryHeap<_> = (0..nodes.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(key)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, Reverse(i)))) = ready.pop() {
        order.push(i);
        for &child in &children[i] {
            waiting_on[child] -= 1;
            if waiting_on[child] == 0 {
                ready.push(key(child));
            }
        }
    }
    order
}

/// Paths that differ between two trees (`None`: the empty tree), files only, sorted.
fn changed_files(
    repo: &gix::Repository,
    old_tree: Option<ObjectId>,
    new_tree: ObjectId,
    state: &mut gix::diff::tree::State,
) -> Result<Vec<String>, String> {
    let kind = repo.object_hash();
    let old = match old_tree {
        Some(id) => Some(repo.find_tree(id).map_err(|e| error_chain(&e))?),
        None => None,
    };
    let new = repo.find_tree(new_tree).map_err(|e| error_chain(&e))?;
    let old_iter =
        gix::objs::TreeRefIter::from_bytes(old.as_ref().map_or(&[][..], |t| &t.data), kind);
    let new_iter = gix::objs::TreeRefIter::from_bytes(&new.data, kind);
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(old_iter, new_iter, state, &repo.objects, &mut recorder)
        .map_err(|e| error_chain(&e))?;
    use gix::diff::tree::recorder::Change as C;
    let mut files: Vec<String> = recorder
        .records
        .into_iter()
        .filter_map(|change| match change {
            C::Addition {
                entry_mode, path, ..
            }
            | C::Deletion {
                entry_mode, path, ..
            } => (!entry_mode.is_tree()).then_some(path),
            C::Modification {
                previous_entry_mode,
                entry_mode,
                path,
                ..
            } => (!entry_mode.is_tree() || !previous_entry_mode.is_tree()).then_some(path),
        })
        .map(|path| path.to_str_lossy().into_owned())
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The first failure of a poll that got nothing at all, as its error.
fn first_failure(result: PollResult, url: &str) -> PollError {
    result
        .failed
        .into_values()
        .next()
        .unwrap_or_else(|| PollError::Fetch {
            url: url.to_string(),
            reason: "no branch to poll".to_string(),
        })
}

/// reqwest is built without a TLS provider of its own (aws-lc is slow to build);
/// gix's `https://` transport needs one installed before its first client.
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
