//! Spill files: what a shutdown of the memory queue could not save in the database, kept
//! on local disk as `spill-<time>-<pid>.jsonl` (one event per line) and re-enqueued by the
//! next start, which then removes them.
//!
//! A file is written under a temporary name, synced, then renamed: a start never reads a
//! half-written file, and a crash while writing leaves only the temporary one (`.tmp`,
//! never loaded, kept for an operator).

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::domain::Event;

const PREFIX: &str = "spill-";
const SUFFIX: &str = ".jsonl";

/// A spill file read back.
#[derive(Debug)]
pub struct SpillFile {
    pub path: PathBuf,
    pub events: Vec<Event>,
    /// Lines that are not events (left in the file, which is then kept).
    pub unreadable: usize,
}

#[derive(Debug, Clone)]
pub struct SpillDir {
    dir: PathBuf,
}

impl SpillDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpillDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `events` to a new file; returns its path.
    pub fn write(&self, events: &[Event]) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let name = format!(
            "{PREFIX}{}-{}{SUFFIX}",
            Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id()
        );
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!("{name}.tmp"));
        if let Err(err) = write_synced(&temporary, events) {
            // A partial file (a full disk) must not take the space another write needs.
            let _ = fs::remove_file(&temporary);
            return Err(err);
        }
        fs::rename(&temporary, &path)?;
        // The rename itself survives a power loss only once the directory is synced.
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(path)
    }

    /// Every spill file, oldest first. A directory that does not exist holds none.
    pub fn load(&self) -> io::Result<Vec<SpillFile>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            })
            .collect();
        // The names start with the time they were written.
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let mut events = Vec::new();
            let mut unreadable = 0;
            for line in io::BufReader::new(fs::File::open(&path)?).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => events.push(event),
                    Err(_) => unreadable += 1,
                }
            }
            files.push(SpillFile {
                path,
                events,
                unreadable,
            });
        }
        Ok(files)
    }
}

fn write_synced(path: &Path, events: &[Event]) -> io::Result<()> {
    let mut file = io::BufWriter::new(fs::File::create(path)?);
    for event in events {
        serde_json::to_writer(&mut file, event)?;
        file.write_all(b"\n")?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::test_event as event;

    #[test]
    fn written_files_load_back_in_order_and_other_files_are_ignored() {
        let dir = std::env::temp_dir().join(format!("ms-spill-{}", uuid::Uuid::new_v4()));
        let spill = SpillDir::new(&dir);
        assert!(spill.load().unwrap().is_empty(), "no directory, no files");
        let mut nul = event("x");
        nul.body = "with a \0 NUL".into();
        let first = spill.write(&[event("one"), nul.clone()]).unwrap();
        let second = spill.write(&[event("two")]).unwrap();
        fs::write(dir.join("notes.txt"), "not a spill file").unwrap();
        fs::write(dir.join("spill-x.jsonl.tmp"), "half written").unwrap();

        let files = spill.load().unwrap();
        assert_eq!(
            files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            [&first, &second]
        );
        assert_eq!(files[0].events[1], nul, "a NUL survives the round trip");
        assert_eq!(files[1].events[0].body, "two");
        assert!(files.iter().all(|f| f.unreadable == 0));

        fs::write(&second, "{\"not\": \"an event\"}\n").unwrap();
        assert_eq!(spill.load().unwrap()[1].unreadable, 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
