//! Whether a data dir may have lost the last writes of its journal: then
//! sequence numbers its peers hold may be gone here, and the node must not
//! use them again (it writes under a new origin id, `disk.rs`).
//!
//! Two signs: a new boot of the machine since the node last ran (the OS
//! lost what it had not written to the device), and a journal that fjall
//! cut at written bytes when it opened it (a torn write, or damage).

use std::path::{Path, PathBuf};

/// How far each journal under `dir` was written: the end of its last
/// non-zero byte (the rest is fjall's preallocation).
pub(super) fn journal_extents(dir: &Path) -> Vec<(PathBuf, u64)> {
    journal_sizes(dir)
        .into_iter()
        .filter_map(|(path, _)| Some((path.clone(), written_extent(&path).ok()?)))
        .collect()
}

/// The journals fjall cut below what was written (`extents`, taken before
/// it opened them), each described with its offsets. fjall cuts a journal
/// at its first unreadable batch; past the end of what was written a
/// journal is zeros, so written bytes past the cut held writes that are
/// gone here.
pub(super) fn journal_cuts(extents: &[(PathBuf, u64)], dir: &Path) -> Vec<String> {
    journal_sizes(dir)
        .iter()
        .filter_map(|(path, after)| {
            let written = extents.iter().find(|(p, _)| p == path).map(|(_, w)| *w)?;
            (*after < written)
                .then(|| format!("{} (cut at byte {after}; written up to byte {written})", path.display()))
        })
        .collect()
}

fn written_extent(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 1 << 20;
    let mut file = std::fs::File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let len = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..len])?;
        if let Some(last) = buf[..len].iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The size of every journal file under `dir`.
fn journal_sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect()
}

/// This boot of the machine, so a restart can tell a killed process (the
/// OS still holds what it wrote) from a machine that went down.
pub(super) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_cut_below_its_written_bytes_is_found_and_its_zero_tail_is_not() {
        let dir = std::env::temp_dir().join(format!("geocache-tail-loss-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let journal = dir.join("0.jnl");
        let mut bytes = vec![7u8; 1_000];
        bytes.extend(vec![0u8; 3 << 20]);
        std::fs::write(&journal, &bytes).unwrap();
        let extents = journal_extents(&dir);
        assert_eq!(extents, vec![(journal.clone(), 1_000)], "the preallocated zeros are not written bytes");
        // Cut to the written end (what fjall does to a clean journal).
        std::fs::write(&journal, &bytes[..1_000]).unwrap();
        assert!(journal_cuts(&extents, &dir).is_empty());
        // Cut below it (a damaged batch at byte 600).
        std::fs::write(&journal, &bytes[..600]).unwrap();
        let cuts = journal_cuts(&extents, &dir);
        assert_eq!(cuts.len(), 1);
        assert!(cuts[0].contains("cut at byte 600; written up to byte 1000"), "{}", cuts[0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
