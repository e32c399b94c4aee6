//! `[metrics] textfile`: after every run, Prometheus metrics of every
//! computer in node_exporter's textfile format (the text exposition
//! format, version 0.0.4), replaced atomically so the collector never
//! reads half a file.
//!
//! Each run keeps its computer's numbers in the state directory
//! (`metrics.json`: the last run, and the time of the last success, which
//! outlives later failures), then, under the state directory's metrics
//! lock, writes the textfile from every computer's numbers. Runs that end
//! at once each write a file that holds the other's update.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::state::StateDir;

/// What the textfile says of one computer: its last run.
#[derive(Debug, Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct Computer {
    /// The image of the last run.
    pub image: String,
    /// Its command: provision, load, post-load, power-off.
    pub command: String,
    /// Its result: done, retry, fatal, interrupted.
    pub result: String,
    /// Its exit code.
    pub exit_code: i32,
    /// The attempts it used (the number of the last one it reached).
    pub attempts: u32,
    /// The attempts it had.
    pub max_attempts: u32,
    /// Seconds spent in each phase, over all its attempts.
    pub phases: BTreeMap<String, f64>,
    /// Seconds from its start to its end.
    pub duration: f64,
    /// When it ended (seconds since the epoch).
    pub finished: f64,
    /// When a run of the computer last ended done (seconds since the
    /// epoch), this one or an earlier one.
    pub last_success: Option<f64>,
}

/// The results a run ends with, one series each (1 for the last run's).
const RESULTS: [&str; 4] = ["done", "retry", "fatal", "interrupted"];

/// Seconds since the epoch.
pub fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Keeps `run` as `computer`'s last run (with the last success carried
/// over from the one before when this one failed), then writes the
/// textfile at `textfile` from every computer's numbers.
pub fn record(state: &StateDir, textfile: &Path, computer: &str, mut run: Computer) -> Result<()> {
    if run.last_success.is_none() {
        run.last_success = read(state, computer).and_then(|c| c.last_success);
    }
    state.write_metrics(computer, &serde_json::to_vec_pretty(&run)?)?;
    let Some(_lock) = state.metrics_lock(Duration::from_secs(10))? else {
        anyhow::bail!(
            "another run held the metrics lock in {} for 10 s: {} was not written (the next run writes it)",
            state.root().display(),
            textfile.display()
        );
    };
    let mut all = BTreeMap::new();
    for name in state.computers()? {
        if let Some(c) = read(state, &name) {
            all.insert(name, c);
        }
    }
    crate::state::write_readable(textfile, render(&all).as_bytes()).map_err(|e| {
        e.context(format!(
            "cannot write the metrics textfile {}",
            textfile.display()
        ))
    })
}

/// A computer's numbers, if it has any that parse.
fn read(state: &StateDir, computer: &str) -> Option<Computer> {
    let bytes = state.read_metrics(computer).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// A label value as the text format takes it: `\`, `"` and newlines
/// escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The textfile for `all` computers: each metric's HELP and TYPE once,
/// then its series, one per computer (and result or phase).
pub fn render(all: &BTreeMap<String, Computer>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, series: &mut dyn FnMut(&mut String)| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        series(&mut out);
    };
    let c = |name: &str| format!("computer=\"{}\"", label(name));
    metric(
        "reimage_last_run_result",
        "The result of the computer's last run: 1 for its result, 0 for the others.",
        &mut |o| {
            for (n, m) in all {
                for r in RESULTS {
                    o.push_str(&format!(
                        "reimage_last_run_result{{{},image=\"{}\",command=\"{}\",result=\"{r}\"}} {}\n",
                        c(n),
                        label(&m.image),
                        label(&m.command),
                        u8::from(m.result == r)
                    ));
                }
            }
        },
    );
    let mut simple = |name: &str, help: &str, value: &dyn Fn(&Computer) -> Option<f64>| {
        metric(name, help, &mut |o| {
            for (n, m) in all {
                if let Some(v) = value(m) {
                    o.push_str(&format!("{name}{{{}}} {v}\n", c(n)));
                }
            }
        });
    };
    simple(
        "reimage_last_run_exit_code",
        "The exit code of the computer's last run.",
        &|m| Some(f64::from(m.exit_code)),
    );
    simple(
        "reimage_last_run_attempts",
        "The attempts the computer's last run used.",
        &|m| Some(f64::from(m.attempts)),
    );
    simple(
        "reimage_last_run_max_attempts",
        "The attempts the computer's last run had.",
        &|m| Some(f64::from(m.max_attempts)),
    );
    simple(
        "reimage_last_run_duration_seconds",
        "How long the computer's last run took, start to end.",
        &|m| Some(m.duration),
    );
    simple(
        "reimage_last_run_timestamp_seconds",
        "When the computer's last run ended, in seconds since the epoch.",
        &|m| Some(m.finished),
    );
    simple(
        "reimage_last_success_timestamp_seconds",
        "When a run of the computer last ended done, in seconds since the epoch.",
        &|m| m.last_success,
    );
    metric(
        "reimage_last_run_phase_duration_seconds",
        "Seconds the computer's last run spent in each phase, over all its attempts.",
        &mut |o| {
            for (n, m) in all {
                for (phase, secs) in &m.phases {
                    o.push_str(&format!(
                        "reimage_last_run_phase_duration_seconds{{{},phase=\"{}\"}} {secs}\n",
                        c(n),
                        label(phase)
                    ));
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_each_metric_is_typed_once() {
        let mut all = BTreeMap::new();
        let m = Computer {
            image: "a\"b\\c\nd".into(),
            command: "provision".into(),
            result: "fatal".into(),
            exit_code: 1,
            attempts: 3,
            max_attempts: 3,
            phases: BTreeMap::from([("load".to_string(), 1.5)]),
            duration: 2.0,
            finished: 100.0,
            last_success: None,
        };
        all.insert("pc7".to_string(), m.clone());
        all.insert("pc8".to_string(), m);
        let text = render(&all);
        assert!(
            text.contains(r#"image="a\"b\\c\nd""#),
            "escaped label: {text}"
        );
        assert_eq!(
            text.matches("# TYPE reimage_last_run_result gauge").count(),
            1
        );
        assert!(text.contains(
            "reimage_last_run_phase_duration_seconds{computer=\"pc8\",phase=\"load\"} 1.5\n"
        ));
        // No success yet: no series, rather than a timestamp of 0.
        assert!(!text.contains("reimage_last_success_timestamp_seconds{"));
        assert!(text.ends_with('\n'));
    }
}
