//! The journal: one JSON line per handled event and per worker run,
//! appended under the state lock and rotated at a size bound.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{FILE_MODE, JOURNAL_READ_MAX, Lock, SAFE_OPEN_FLAGS, State};

impl State {
    /// Appends one line to the journal. The caller holds the lock. When the
    /// journal would grow past `max_bytes` it is rotated to `journal.jsonl.1`
    /// first, so the two files together stay under twice that.
    pub fn append_journal(&self, _lock: &Lock, entry: &Value, max_bytes: u64) -> Result<()> {
        let path = self.journal_path();
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .mode(FILE_MODE)
                .custom_flags(SAFE_OPEN_FLAGS)
                .open(&path)
                .with_context(|| format!("failed to open {}", path.display()))
        };
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let mut file = open()?;
        let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + line.len() as u64 > max_bytes {
            let old = self.dir.join("journal.jsonl.1");
            fs::rename(&path, &old)
                .with_context(|| format!("failed to rotate {}", path.display()))?;
            file = open()?;
            size = 0;
        }
        // A torn last line (a full disk, say) must not swallow this one.
        let mut last = [0u8; 1];
        if size > 0 && file.read_exact_at(&mut last, size - 1).is_ok() && last[0] != b'\n' {
            line.insert(0, '\n');
        }
        // One write call per line: with O_APPEND and the lock, lines never interleave.
        file.write_all(line.as_bytes())
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(())
    }

    /// The last `n` well-formed journal entries, oldest first. Malformed lines
    /// (a torn tail after a crash, say) are skipped.
    pub fn journal_tail(&self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for path in [self.dir.join("journal.jsonl.1"), self.journal_path()] {
            if let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(SAFE_OPEN_FLAGS)
                .open(&path)
            {
                let f = f.take(JOURNAL_READ_MAX);
                for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        out.push(v);
                    }
                }
            }
        }
        let skip = out.len().saturating_sub(n);
        out.split_off(skip)
    }
}
