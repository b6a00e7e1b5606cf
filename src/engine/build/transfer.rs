//! The Steps that move files between the slave and the master's artifacts
//! (`type = upload`, `upload-dir`, `download`, and the factory's `artifacts =
//! GLOB...`), over the worker protocol's `upload_file`, `upload_directory`,
//! `download_file`, `glob` and `stat` (Buildbot's FileUpload, DirectoryUpload
//! and FileDownload), so they work on an autobot slave and a stock
//! buildbot-worker alike.
//!
//! An upload is streamed into a temporary file of the artifacts tree in blocks
//! of [`ARTIFACT_BLOCKSIZE`], hashed as it arrives, and renamed into place and
//! recorded only once complete; one larger than `maxArtifactSize` is refused by
//! the slave and by the master, and leaves neither file nor row (see
//! [`crate::engine::artifacts`]). Paths are checked again once interpolated:
//! the slave's stays inside its builder's directory (the autobot slave also
//! confines every path to its basedir in the kernel), the master's inside the
//! artifacts directory.

use rmpv::Value;

use super::{BuildContext, Interruption, StepEnd, StepLogs};
use crate::engine::artifacts::{check_rel, settle_dir, ArtifactStore};
use crate::factory::results::StepResult;
use crate::factory::{StepKind, StepSpec, DEFAULT_WORKDIR};
use crate::logstore::Channel;
use crate::protocol::map;
use crate::slavelink::command::CommandError;
use crate::slavelink::transfer::ARTIFACT_BLOCKSIZE;
use crate::slavelink::DownloadSource;

/// The largest artifact this Build may upload: its factory's
/// `maxArtifactSize`, else `[:master:]`'s.
fn max_size(ctx: &BuildContext) -> u64 {
    ctx.factory
        .params
        .get("maxartifactsize")
        .and_then(|v| crate::factory::schema::parse_size(v).ok())
        .unwrap_or_else(|| ctx.inner.config.borrow().max_artifact_size)
}

/// `workdir/rel` on the slave.
fn join(workdir: &str, rel: &str) -> String {
    format!("{}/{}", workdir.trim_end_matches('/'), rel)
}

fn end(result: StepResult, text: String) -> StepEnd {
    StepEnd {
        result,
        text,
        interruption: Interruption::None,
    }
}

/// Whether a failed upload failed for its size (the master's refusal, or the
/// slave's own `maxsize` message).
fn too_large(e: &CommandError) -> bool {
    let m = e.to_string();
    m.contains("bytes allowed; refused") || m.contains("Maximum filesize reached")
}

/// A slave operation, or the slave lost meanwhile.
async fn or_lost<T>(
    ctx: &BuildContext,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let slave = ctx.slave.clone();
    tokio::select! {
        r = fut => Ok(r),
        why = slave.closed() => Err(why),
    }
}

fn lost(logs: &mut StepLogs, why: String) -> StepEnd {
    logs.write(
        Channel::Header,
        &format!("connection to the slave lost: {why}\n"),
    );
    StepEnd {
        result: StepResult::Exception,
        text: "slave lost".into(),
        interruption: Interruption::SlaveLost(why),
    }
}

/// Run a transfer Step (already interpolated) whose slave paths are relative
/// to `workdir` (`builder_dir` is the builder's directory on the slave).
pub(super) async fn transfer_step(
    ctx: &mut BuildContext,
    step: &StepSpec,
    logs: &mut StepLogs,
    builder_dir: &str,
    workdir: &str,
) -> StepEnd {
    let store = ArtifactStore::new(&ctx.inner.basedir);
    match &step.kind {
        StepKind::Upload { src, dest } => {
            for p in [src, dest] {
                if let Err(e) = check_rel(p) {
                    logs.write(Channel::Header, &format!("{e}\n"));
                    return end(StepResult::Failure, format!("upload refused: {}", e.why));
                }
            }
            match upload_one(ctx, &store, logs, &join(workdir, src), src, dest).await {
                Ok(Ok(())) => end(StepResult::Success, format!("uploaded {dest}")),
                Ok(Err(text)) => end(StepResult::Failure, text),
                Err(why) => lost(logs, why),
            }
        }
        StepKind::UploadDir { src, dest } => {
            for p in [src, dest] {
                if let Err(e) = check_rel(p) {
                    logs.write(Channel::Header, &format!("{e}\n"));
                    return end(StepResult::Failure, format!("upload refused: {}", e.why));
                }
            }
            upload_dir(ctx, &store, logs, &join(workdir, src), src, dest).await
        }
        StepKind::Download { src, dest, mode } => {
            for p in [src, dest] {
                if let Err(e) = check_rel(p) {
                    logs.write(Channel::Header, &format!("{e}\n"));
                    return end(StepResult::Failure, format!("download refused: {}", e.why));
                }
            }
            let file = match store.open_any(src) {
                Ok(f) => f,
                Err(e) => {
                    logs.write(
                        Channel::Header,
                        &format!("cannot read artifacts/{src} on the master: {e}\n"),
                    );
                    return end(StepResult::Failure, format!("download: no {src}"));
                }
            };
            logs.write(
                Channel::Header,
                &format!("downloading artifacts/{src} to {dest}\n"),
            );
            let slave_dest = join(workdir, dest);
            let sent = or_lost(
                ctx,
                ctx.slave
                    .download_file(DownloadSource::Opened(file), &slave_dest, *mode),
            )
            .await;
            match sent {
                Ok(Ok(r)) => {
                    logs.write(Channel::Header, &format!("downloaded {} bytes\n", r.bytes));
                    end(StepResult::Success, format!("downloaded {dest}"))
                }
                Ok(Err(e)) => {
                    logs.write(Channel::Header, &format!("{e}\n"));
                    end(StepResult::Failure, format!("download of {src} failed"))
                }
                Err(why) => lost(logs, why),
            }
        }
        StepKind::Artifacts { globs } => {
            artifacts_step(ctx, &store, logs, builder_dir, globs).await
        }
        _ => end(StepResult::Exception, "not a transfer step".into()),
    }
}

/// Upload the slave's `slave_src` as the artifact `dest`. `Err`: the slave was
/// lost; `Ok(Err(text))`: the step's failure text (the log says why).
async fn upload_one(
    ctx: &BuildContext,
    store: &ArtifactStore,
    logs: &mut StepLogs,
    slave_src: &str,
    shown_src: &str,
    dest: &str,
) -> Result<Result<(), String>, String> {
    let builder = ctx.claimed.builder.clone();
    let number = ctx.claimed.number;
    let max = max_size(ctx);
    let (part, file) = match store.create(&builder, number, dest) {
        Ok(p) => p,
        Err(e) => {
            logs.write(
                Channel::Header,
                &format!("cannot write the artifact {dest}: {e}\n"),
            );
            return Ok(Err(format!("upload of {shown_src} failed")));
        }
    };
    logs.write(
        Channel::Header,
        &format!("uploading {shown_src} to the artifact {dest}\n"),
    );
    let mut stop = ctx.stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| s.is_some()).await;
    };
    let got = or_lost(
        ctx,
        ctx.slave.upload_into(
            slave_src,
            tokio::fs::File::from_std(file),
            &part.shown,
            Some(max),
            ARTIFACT_BLOCKSIZE,
            stopped,
        ),
    )
    .await;
    let up = match got {
        Err(why) => {
            part.abandon();
            return Err(why);
        }
        Ok(Err(e)) => {
            part.abandon();
            if too_large(&e) {
                logs.write(
                    Channel::Header,
                    &format!(
                        "{shown_src} is larger than maxArtifactSize ({max} bytes): refused, nothing was kept\n"
                    ),
                );
                return Ok(Err(format!(
                    "upload of {shown_src} refused: larger than maxArtifactSize"
                )));
            }
            logs.write(Channel::Header, &format!("{e}\n"));
            return Ok(Err(format!("upload of {shown_src} failed")));
        }
        Ok(Ok(up)) => up,
    };
    if let Err(e) = part.commit() {
        logs.write(
            Channel::Header,
            &format!("cannot put the artifact {dest} in place: {e}\n"),
        );
        return Ok(Err(format!("upload of {shown_src} failed")));
    }
    let at = crate::calendar::now_f64();
    let db = &ctx.inner.db;
    if let Err(e) = db
        .add_artifact(
            ctx.claimed.build_id,
            &builder,
            number,
            dest,
            up.bytes,
            &up.sha256,
            at,
        )
        .await
    {
        logs.write(
            Channel::Header,
            &format!("cannot record the artifact: {e}\n"),
        );
        return Ok(Err(format!("upload of {shown_src} failed")));
    }
    logs.write(
        Channel::Header,
        &format!("{dest}: {} bytes, sha256 {}\n", up.bytes, up.sha256),
    );
    Ok(Ok(()))
}

async fn upload_dir(
    ctx: &BuildContext,
    store: &ArtifactStore,
    logs: &mut StepLogs,
    slave_src: &str,
    src: &str,
    dest: &str,
) -> StepEnd {
    let builder = ctx.claimed.builder.clone();
    let number = ctx.claimed.number;
    let max = max_size(ctx);
    let part = match store.create_dir(&builder, number, dest) {
        Ok(p) => p,
        Err(e) => {
            logs.write(
                Channel::Header,
                &format!("cannot write the artifacts {dest}/: {e}\n"),
            );
            return end(StepResult::Failure, format!("upload of {src} failed"));
        }
    };
    logs.write(
        Channel::Header,
        &format!("uploading the directory {src} to the artifacts {dest}/\n"),
    );
    let got = or_lost(
        ctx,
        ctx.slave
            .upload_directory_blocks(slave_src, &part.path, Some(max), ARTIFACT_BLOCKSIZE),
    )
    .await;
    match got {
        Err(why) => return lost(logs, why),
        Ok(Err(e)) => {
            if too_large(&e) {
                logs.write(
                    Channel::Header,
                    &format!(
                        "{src} is larger than maxArtifactSize ({max} bytes, counted as a tarball): refused, nothing was kept\n"
                    ),
                );
                return end(
                    StepResult::Failure,
                    format!("upload of {src} refused: larger than maxArtifactSize"),
                );
            }
            logs.write(Channel::Header, &format!("{e}\n"));
            return end(StepResult::Failure, format!("upload of {src} failed"));
        }
        Ok(Ok(_)) => {}
    }
    let path = part.path.clone();
    let settled = tokio::task::spawn_blocking(move || {
        let mut dropped = Vec::new();
        settle_dir(&path, &mut dropped).map(|f| (f, dropped))
    })
    .await;
    let (files, dropped) = match settled {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            logs.write(Channel::Header, &format!("cannot read the upload: {e}\n"));
            return end(StepResult::Failure, format!("upload of {src} failed"));
        }
        Err(e) => {
            logs.write(Channel::Header, &format!("cannot read the upload: {e}\n"));
            return end(StepResult::Failure, format!("upload of {src} failed"));
        }
    };
    for d in &dropped {
        logs.write(
            Channel::Header,
            &format!("not kept: {d} (only regular files are artifacts)\n"),
        );
    }
    if let Err(e) = part.commit() {
        logs.write(
            Channel::Header,
            &format!("cannot put the artifacts {dest}/ in place: {e}\n"),
        );
        return end(StepResult::Failure, format!("upload of {src} failed"));
    }
    let at = crate::calendar::now_f64();
    for f in &files {
        let path = format!("{dest}/{}", f.rel);
        if let Err(e) = ctx
            .inner
            .db
            .add_artifact(
                ctx.claimed.build_id,
                &builder,
                number,
                &path,
                f.size,
                &f.sha256,
                at,
            )
            .await
        {
            logs.write(
                Channel::Header,
                &format!("cannot record the artifact: {e}\n"),
            );
            return end(StepResult::Failure, format!("upload of {src} failed"));
        }
        logs.write(
            Channel::Header,
            &format!("{path}: {} bytes, sha256 {}\n", f.size, f.sha256),
        );
    }
    end(
        StepResult::Success,
        format!("uploaded {dest}/ ({} files)", files.len()),
    )
}

/// Whether a `stat` tuple's mode is a regular file's.
fn is_regular(stat: &[i64]) -> bool {
    stat.first().is_some_and(|m| m & 0o170000 == 0o100000)
}

/// The factory's `artifacts = GLOB...`: each glob is expanded by the slave in
/// the builder's `build` directory, and each regular file it matches uploaded
/// under its path relative to that directory.
async fn artifacts_step(
    ctx: &BuildContext,
    store: &ArtifactStore,
    logs: &mut StepLogs,
    builder_dir: &str,
    globs: &[String],
) -> StepEnd {
    let base = join(builder_dir, DEFAULT_WORKDIR);
    let prefix = format!("{}/", base.trim_end_matches('/'));
    let (mut uploaded, mut failed, mut empty) = (0usize, Vec::new(), Vec::new());
    for g in globs {
        if let Err(e) = check_rel(g) {
            logs.write(Channel::Header, &format!("{e}\n"));
            failed.push(g.clone());
            continue;
        }
        let args = map(vec![("path", Value::from(join(&base, g)))]);
        let found = match or_lost(ctx, ctx.slave.run("glob", args)).await {
            Err(why) => return lost(logs, why),
            Ok(Err(e)) => {
                logs.write(Channel::Header, &format!("glob {g}: {e}\n"));
                failed.push(g.clone());
                continue;
            }
            Ok(Ok(o)) if !o.succeeded() => {
                logs.write(
                    Channel::Header,
                    &format!("glob {g}: {}\n", o.failure_message()),
                );
                failed.push(g.clone());
                continue;
            }
            Ok(Ok(o)) => o.files.unwrap_or_default(),
        };
        let mut matched = 0;
        let mut found = found;
        found.sort();
        for f in found {
            let Some(rel) = f.strip_prefix(&prefix) else {
                logs.write(
                    Channel::Header,
                    &format!("not kept: {f} is outside the build directory\n"),
                );
                continue;
            };
            if check_rel(rel).is_err() {
                logs.write(Channel::Header, &format!("not kept: {f}\n"));
                continue;
            }
            let args = map(vec![("path", Value::from(f.as_str()))]);
            match or_lost(ctx, ctx.slave.run("stat", args)).await {
                Err(why) => return lost(logs, why),
                Ok(Ok(o)) if o.stat.as_deref().is_some_and(is_regular) => {}
                Ok(_) => continue,
            }
            matched += 1;
            match upload_one(ctx, store, logs, &f, rel, rel).await {
                Err(why) => return lost(logs, why),
                Ok(Ok(())) => uploaded += 1,
                Ok(Err(_)) => failed.push(rel.to_string()),
            }
        }
        if matched == 0 {
            logs.write(
                Channel::Header,
                &format!("warning: {g} matches no file in {base}\n"),
            );
            empty.push(g.clone());
        }
    }
    let files = if uploaded == 1 { "file" } else { "files" };
    if !failed.is_empty() {
        end(
            StepResult::Failure,
            format!(
                "artifacts: {uploaded} {files}, failed: {}",
                failed.join(" ")
            ),
        )
    } else if !empty.is_empty() {
        end(
            StepResult::Warnings,
            format!(
                "artifacts: {uploaded} {files}; no match: {}",
                empty.join(" ")
            ),
        )
    } else {
        end(
            StepResult::Success,
            format!("artifacts: {uploaded} {files}"),
        )
    }
}
