//! Try jobs in the database: the patch (with its strip level, author and comment) a try
//! BuildSet's SourceStamp carries, written in the same transaction as the
//! BuildSet and its requests, so a master restart loses no try job; and read
//! back when a Build claims the request, for its checkout.
//!
//! A try SourceStamp carries no Changes, so its requests are never merged with
//! others ([`super::requests`]).

use super::requests::{insert_buildset_requests, NewBuildSet, SubmittedBuildSet};
use super::sql::{Sql, SqlError};
use super::{Db, DbError};

/// The patch of a try job, as stored with its SourceStamp.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TryPatch {
    /// `-pN`: leading path components to strip.
    pub level: u32,
    /// The diff (`git diff --binary` / `hg diff --git`); may be empty (build the
    /// base revision as it is).
    pub diff: Vec<u8>,
    /// Who sent the try job (the `[try]` user, or `--username`'s name).
    pub author: String,
    pub comment: String,
}

impl std::fmt::Debug for TryPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TryPatch")
            .field("level", &self.level)
            .field("diff", &format_args!("{} bytes", self.diff.len()))
            .field("author", &self.author)
            .field("comment", &self.comment)
            .finish()
    }
}

impl Db {
    /// Store a try BuildSet: its SourceStamp, the patch and one BuildRequest per
    /// builder, in one transaction; the requests of `here` not announced to
    /// the other masters ([`Db::add_buildset_here`]).
    pub async fn add_try_buildset(
        &self,
        bs: NewBuildSet,
        patch: TryPatch,
        at: f64,
        here: Vec<String>,
    ) -> Result<SubmittedBuildSet, DbError> {
        self.write_sql(move |db| {
            let submitted = insert_buildset_requests(db, &bs, at, &here, None)?;
            add_patch(db, submitted.buildset_id, &patch)?;
            Ok(submitted)
        })
        .await
    }
}

// The queries, on either backend ([`super::sql`]).

/// Store the patch of a try BuildSet, with its SourceStamp (in the transaction
/// that inserted the BuildSet).
pub fn add_patch(db: &mut dyn Sql, buildset_id: i64, patch: &TryPatch) -> Result<(), SqlError> {
    db.execute(
        "INSERT INTO sourcestamp_patches(sourcestamp, level, patch, author, comment)
         SELECT sourcestamp, ?2, ?3, ?4, ?5 FROM buildsets WHERE id = ?1",
        &[
            buildset_id.into(),
            i64::from(patch.level).into(),
            patch.diff.clone().into(),
            patch.author.as_str().into(),
            patch.comment.as_str().into(),
        ],
    )?;
    Ok(())
}

/// The patch of a SourceStamp, if it is a try job's (read by the claim of its
/// Build, [`super::requests`]).
pub fn patch_of(db: &mut dyn Sql, sourcestamp: i64) -> Result<Option<TryPatch>, SqlError> {
    let Some(r) = db.query_opt(
        "SELECT level, patch, author, comment FROM sourcestamp_patches WHERE sourcestamp = ?1",
        &[sourcestamp.into()],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(TryPatch {
        level: u32::try_from(r.i64(0)?).unwrap_or(0),
        diff: r.opt_blob(1)?.unwrap_or_default(),
        author: r.string(2)?,
        comment: r.string(3)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::requests::NewSourceStamp;

    #[tokio::test]
    async fn a_try_buildset_keeps_its_patch_and_is_never_merged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let bs = NewBuildSet {
            reason: "try by ann: x".into(),
            scheduler: "try".into(),
            sourcestamp: NewSourceStamp {
                revision: Some("abc".into()),
                ..Default::default()
            },
            builders: vec!["b".into()],
            ..Default::default()
        };
        let patch = TryPatch {
            level: 1,
            diff: b"\x00binary\xff".to_vec(),
            author: "ann".into(),
            comment: "x".into(),
        };
        let one = db
            .add_try_buildset(bs.clone(), patch.clone(), 1.0, Vec::new())
            .await
            .unwrap();
        let two = db
            .add_try_buildset(bs, TryPatch::default(), 2.0, Vec::new())
            .await
            .unwrap();
        drop(db);
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let c = db.claim_request("b", "s", 1, 3.0).await.unwrap().unwrap();
        assert_eq!(c.request_ids, vec![one.requests[0].1]);
        assert_eq!(c.patch, Some(patch));
        assert_eq!(c.revision.as_deref(), Some("abc"));
        let c = db.claim_request("b", "s", 1, 4.0).await.unwrap().unwrap();
        assert_eq!(c.request_ids, vec![two.requests[0].1]);
        assert_eq!(c.patch.map(|p| p.diff.len()), Some(0));
    }
}
