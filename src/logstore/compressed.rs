//! Finished step logs in either form (`logCompression`): `NAME.log` as written,
//! or `NAME.log.zst` (one zstd frame that records the log's size) once the
//! retention task has compressed it. Every reader goes through here so it reads
//! both forms alike, and streams a compressed log one chunk at a time (never the
//! whole log in memory). The `.ch` file of channel runs and the `.ts` file of
//! arrival times stay as they are: their offsets are those of the uncompressed
//! bytes.
//!
//! Compression writes `NAME.log.zst` under a temporary name, renames it into
//! place and only then (once the database records it) removes `NAME.log`: a
//! reader that opens `NAME.log` first and falls back to `NAME.log.zst` finds the
//! log whenever it looks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{channels_path, times_path, LogBytes};

/// Bytes decompressed per chunk handed to an async reader.
const CHUNK: usize = 64 * 1024;

/// zstd level: the default (3), fast enough for a background thread and about
/// as small as a build log gets at any level.
const LEVEL: i32 = 3;

/// `NAME.log.zst` next to `NAME.log`.
pub fn compressed_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".zst");
    PathBuf::from(s)
}

/// Compress the finished log `log` to `NAME.log.zst` (written under a temporary
/// name, then renamed into place); `NAME.log` stays until
/// [`remove_plain`]. Returns the sizes before and after. A log without its file
/// (deleted meanwhile) is `NotFound`.
pub fn compress_log(log: &Path) -> std::io::Result<(u64, u64)> {
    let mut src = File::open(log)?;
    let len = src.metadata()?.len();
    let dest = compressed_path(log);
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let out = File::create(&tmp)?;
        let mut enc = zstd::stream::write::Encoder::new(std::io::BufWriter::new(out), LEVEL)?;
        enc.include_contentsize(true)?;
        enc.include_checksum(true)?;
        enc.set_pledged_src_size(Some(len))?;
        let copied = std::io::copy(&mut (&mut src).take(len), &mut enc)?;
        if copied != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the log shrank while it was compressed",
            ));
        }
        let out = enc.finish()?;
        let out = out.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        let size = out.metadata()?.len();
        std::fs::rename(&tmp, &dest)?;
        Ok((len, size))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Remove `NAME.log` of a log now stored compressed (missing is fine).
pub fn remove_plain(log: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Remove a log's files in every form (`NAME.log`, `NAME.log.zst`, a leftover
/// temporary one, the `.ch` and `.ts` files); missing ones are fine. Returns the bytes
/// freed.
pub fn remove_log_files(log: &Path) -> std::io::Result<u64> {
    let zst = compressed_path(log);
    let mut tmp = zst.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut freed = 0;
    for p in [
        log.to_path_buf(),
        zst,
        PathBuf::from(tmp),
        channels_path(log),
        times_path(log),
    ] {
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&p) {
            Ok(()) => freed += size,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(freed)
}

/// The uncompressed size a compressed log's frame records; `None` when the
/// frame does not say (not written by autobot).
fn content_size(f: &mut File) -> std::io::Result<Option<u64>> {
    let mut head = [0u8; 18];
    let mut got = 0;
    while got < head.len() {
        let n = f.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(zstd::zstd_safe::get_frame_content_size(&head[..got])
        .ok()
        .flatten())
}

/// A log's uncompressed bytes and their length, whichever form it is in:
/// `NAME.log` if it is there, else `NAME.log.zst` decompressed as it is read.
/// `NotFound` when neither is.
pub fn open_log(log: &Path) -> std::io::Result<(Box<dyn Read + Send>, u64)> {
    match File::open(log) {
        Ok(f) => {
            let len = f.metadata()?.len();
            return Ok((Box::new(f.take(len)), len));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut f = File::open(compressed_path(log))?;
    let len = match content_size(&mut f)? {
        Some(n) => n,
        None => {
            // Counted by reading it through once (only a foreign file lacks it).
            let n = std::io::copy(
                &mut zstd::stream::read::Decoder::new(&mut f)?,
                &mut std::io::sink(),
            )?;
            f.seek(SeekFrom::Start(0))?;
            n
        }
    };
    let dec = zstd::stream::read::Decoder::new(f)?;
    Ok((Box::new(dec.take(len)), len))
}

/// Whether the log is stored compressed (its `NAME.log` gone, `NAME.log.zst`
/// there).
pub fn is_compressed(log: &Path) -> bool {
    !log.exists() && compressed_path(log).exists()
}

/// The last `window` bytes (or fewer) of a log in either form: a compressed
/// one is read through, keeping only a window's worth.
pub fn read_tail(log: &Path, window: u64) -> std::io::Result<Vec<u8>> {
    if let Ok(mut f) = File::open(log) {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(window)))?;
        let mut buf = Vec::new();
        f.take(window).read_to_end(&mut buf)?;
        return Ok(buf);
    }
    let (mut r, len) = open_log(log)?;
    let skip = len.saturating_sub(window);
    std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())?;
    let mut buf = Vec::new();
    r.take(window).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Decoders of compressed logs left where the last [`read_compressed_at`]
/// stopped, so a tail reading on from there does not decompress the log from
/// its start again for every chunk.
struct Cursor {
    path: PathBuf,
    pos: u64,
    len: u64,
    reader: Box<dyn Read + Send>,
}

/// How many [`Cursor`]s are kept (the oldest goes first): a decoder holds its
/// window (2 MiB for a big log), and a tail of a compressed log is rare.
const CURSORS: usize = 2;

static OPEN_CURSORS: std::sync::Mutex<Vec<Cursor>> = std::sync::Mutex::new(Vec::new());

/// Up to `max` bytes of a compressed log from `offset` (for a live tail that
/// outlived the log's compression) and the log's length; `None` when the log
/// has no compressed file. Reading on from where the previous call stopped
/// continues its decoder; another offset decompresses up to it first.
pub fn read_compressed_at(
    log: &Path,
    offset: u64,
    max: usize,
) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    if !compressed_path(log).exists() {
        return Ok(None);
    }
    let kept = {
        let mut cursors = OPEN_CURSORS.lock().unwrap_or_else(|p| p.into_inner());
        cursors
            .iter()
            .position(|c| c.path == log && c.pos == offset)
            .map(|i| cursors.remove(i))
    };
    let mut cursor = match kept {
        Some(c) => c,
        None => {
            let (mut reader, len) = open_log(log)?;
            let skip = offset.min(len);
            std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())?;
            Cursor {
                path: log.to_path_buf(),
                pos: skip,
                len,
                reader,
            }
        }
    };
    let len = cursor.len;
    if offset >= len {
        return Ok(Some((Vec::new(), len)));
    }
    let mut buf = Vec::new();
    (&mut cursor.reader)
        .take(max as u64)
        .read_to_end(&mut buf)?;
    cursor.pos += buf.len() as u64;
    if cursor.pos < len {
        let mut cursors = OPEN_CURSORS.lock().unwrap_or_else(|p| p.into_inner());
        if cursors.len() >= CURSORS {
            cursors.remove(0);
        }
        cursors.push(cursor);
    }
    Ok(Some((buf, len)))
}

/// A compressed log as an async reader: a blocking task decompresses it one
/// chunk at a time into a channel of two chunks, so a download of any size
/// holds a few chunks in memory and stops decompressing when the client goes.
pub(super) fn async_reader(log: &Path) -> std::io::Result<(LogBytes, u64)> {
    let (mut r, len) = open_log(log)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(2);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        let res = loop {
            match r.read(&mut buf[got..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(got);
        let end = got < CHUNK;
        let msg = match res {
            Ok(()) if got == 0 => return,
            Ok(()) => Ok(buf),
            Err(e) => Err(e),
        };
        let failed = msg.is_err();
        if tx.blocking_send(msg).is_err() || end || failed {
            return;
        }
    });
    Ok((
        Box::new(ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }),
        len,
    ))
}

/// An [`tokio::io::AsyncRead`] over chunks arriving on a channel.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl tokio::io::AsyncRead for ChunkReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.cur.len() {
                let n = buf.remaining().min(this.cur.len() - this.pos);
                buf.put_slice(&this.cur[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(v))) => {
                    this.cur = v;
                    this.pos = 0;
                }
            }
        }
    }
}

/// Write `data` as a compressed log at `log` (for tests and tools that make
/// one directly).
pub fn write_compressed(log: &Path, data: &[u8]) -> std::io::Result<()> {
    let out = File::create(compressed_path(log))?;
    let mut enc = zstd::stream::write::Encoder::new(out, LEVEL)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.write_all(data)?;
    enc.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_log_reads_back_byte_exact_in_every_way() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.log");
        let mut data = Vec::new();
        for i in 0..200_000u32 {
            data.extend_from_slice(format!("line {i} \u{e9}\n").as_bytes());
        }
        std::fs::write(&p, &data).unwrap();
        let (before, after) = compress_log(&p).unwrap();
        assert_eq!(before, data.len() as u64);
        assert!(after < before / 4, "{after} of {before}");
        // Both forms there: the plain one is read.
        assert!(!is_compressed(&p));
        remove_plain(&p).unwrap();
        assert!(is_compressed(&p));
        let (mut r, len) = open_log(&p).unwrap();
        assert_eq!(len, data.len() as u64);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == data);
        let tail = read_tail(&p, 100).unwrap();
        assert_eq!(tail, &data[data.len() - 100..]);
        let (mid, l) = read_compressed_at(&p, 1000, 50).unwrap().unwrap();
        assert_eq!((mid.as_slice(), l), (&data[1000..1050], len));
        // Read on from there (the kept decoder), and from elsewhere.
        let (next, _) = read_compressed_at(&p, 1050, 70_000).unwrap().unwrap();
        assert_eq!(next.as_slice(), &data[1050..71_050]);
        let (back, _) = read_compressed_at(&p, 10, 5).unwrap().unwrap();
        assert_eq!(back.as_slice(), &data[10..15]);
        let (end, _) = read_compressed_at(&p, len - 3, 50).unwrap().unwrap();
        assert_eq!(end.as_slice(), &data[data.len() - 3..]);
        assert_eq!(remove_log_files(&p).unwrap(), after);
        assert!(!compressed_path(&p).exists());
    }

    #[tokio::test]
    async fn the_async_reader_streams_a_compressed_log() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.log");
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        write_compressed(&p, &data).unwrap();
        let (mut r, len) = crate::logstore::log_reader(&p, true).await.unwrap();
        assert_eq!(len, data.len() as u64);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
    }
}
