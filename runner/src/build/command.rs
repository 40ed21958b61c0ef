//! Running git and docker: every line they print goes into the job's log as it happens, and the
//! last lines of a failed run are kept for the job's error.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::joblog::JobLog;

/// Lines of a failed step quoted in the job's error.
pub const TAIL_LINES: usize = 20;

/// Output of a command that ran to its end.
pub struct Ran {
    /// How it ended.
    pub status: ExitStatus,
    /// Its last [`TAIL_LINES`] lines, stdout and stderr interleaved.
    tail: VecDeque<String>,
}

impl Ran {
    /// The last lines, one string.
    pub fn tail_text(&self) -> String {
        self.tail
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `command`, sending each line of its output to `log` with `prefix`.
pub async fn run_logged(mut command: Command, prefix: &str, log: &JobLog) -> std::io::Result<Ran> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward(stdout, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward(stderr, tx.clone()));
    }
    drop(tx);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    while let Some(line) = rx.recv().await {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        log.line(format!("{prefix}{line}")).await;
    }
    let status = child.wait().await?;
    Ok(Ran { status, tail })
}

async fn forward(stream: impl AsyncRead + Unpin, tx: tokio::sync::mpsc::Sender<String>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Progress bars redraw with '\r'; keep what the line finally showed.
        let line = line
            .rsplit('\r')
            .find(|s| !s.trim().is_empty())
            .unwrap_or("")
            .to_owned();
        if tx.send(line).await.is_err() {
            break;
        }
    }
}

/// Whether a failed clone or push said something no retry will change.
pub fn permanent(output: &str) -> bool {
    let output = output.to_ascii_lowercase();
    [
        "not found",
        "does not exist",
        "does not appear to be a git repository",
        "authentication failed",
        "unauthorized",
        "denied",
        "invalid reference",
        "name unknown",
        "could not read username",
        "not allowed",
        "redirect",
    ]
    .iter()
    .any(|hint| output.contains(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_failures_are_recognised() {
        assert!(permanent("fatal: repository 'file:///nope' does not exist"));
        assert!(permanent("unauthorized: authentication required"));
        assert!(permanent("fatal: transport 'file' not allowed"));
        assert!(!permanent("fatal: unable to access: Connection refused"));
    }
}
