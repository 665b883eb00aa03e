//! Progress of a long CLI operation (`migrate up|down`, `dlq replay --all`): a bar on a
//! terminal, and on anything else (a pipe, a log, CI) one plain line per step, which a
//! script or a person reading a log can follow.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
}

impl Progress {
    /// `total` steps; a bar when stdout is a terminal.
    pub fn new(total: u64) -> Self {
        Self::with_terminal(total, std::io::stdout().is_terminal())
    }

    fn with_terminal(total: u64, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("█▓░"),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: 0,
        }
    }

    /// One step finished; `line` says what it was.
    pub fn step(&mut self, line: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(line.to_string());
                bar.inc(1);
            }
            None => self.plain(line),
        }
    }

    /// Something to say without finishing a step (a skipped item, a warning).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    }

    /// Ends the bar (left on screen) and prints `summary`.
    pub fn finish(self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        println!("{summary}");
    }

    fn plain(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.line(line));
    }

    fn line(&self, line: &str) -> String {
        format!("[{}/{}] {line}", self.done, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn plain_lines_count_the_steps() {
        let mut progress = Progress::with_terminal(2, false);
        assert!(progress.bar.is_none());
        progress.done += 1;
        assert_eq!(progress.line("applied a"), "[1/2] applied a");
    }
}
