//! What `/proc` says about processes and the machine: process trees, CPU seconds, resident
//! memory, busy time. Reads only; the benches decide what to measure and when.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use super::parse::number;
use crate::util;

/// `roots` and every process descended from them, found through `/proc`.
pub fn with_descendants(roots: &[u32]) -> Result<Vec<u32>> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in fs::read_dir("/proc").context("list /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read; it is no one's child then.
        if let Ok(fields) = stat_fields(pid)
            && let Some(ppid) = fields.get(STAT_PPID).and_then(|p| p.parse().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = BTreeSet::new();
    let mut queue: Vec<u32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        if found.insert(pid) {
            queue.extend(children.get(&pid).into_iter().flatten());
        }
    }
    Ok(found.into_iter().collect())
}

/// Index of the parent pid among the fields after the command name in `/proc/PID/stat`
/// (field 4 of `proc(5)`, counting from 1 with pid and comm as fields 1 and 2).
const STAT_PPID: usize = 1;
/// Index of `utime` (field 14), counted the same way.
const STAT_UTIME: usize = 11;
/// Index of `stime` (field 15).
const STAT_STIME: usize = 12;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let (_, rest) = text
        .rsplit_once(')')
        .with_context(|| format!("unexpected {path}: {text:?}"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// User plus system CPU seconds consumed so far by `pids`, summed.
pub fn cpu_seconds(pids: &[u32], ticks_per_second: f64) -> Result<f64> {
    let mut ticks = 0_u64;
    for &pid in pids {
        let fields = stat_fields(pid)?;
        for index in [STAT_UTIME, STAT_STIME] {
            let value = fields
                .get(index)
                .with_context(|| format!("/proc/{pid}/stat is too short"))?;
            ticks += number::<u64>(value, "CPU ticks")?;
        }
    }
    Ok(ticks as f64 / ticks_per_second)
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`) in KiB, summed over `pids`.
pub fn memory_kib(pids: &[u32], field: &str) -> Result<u64> {
    let mut total = 0;
    for &pid in pids {
        let path = format!("/proc/{pid}/status");
        let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .with_context(|| format!("no {field} in {path}"))?;
        total += number::<u64>(value.trim().trim_end_matches("kB"), field)?;
    }
    Ok(total)
}

/// Clock ticks per second, the unit of `/proc/PID/stat` CPU times.
pub fn clock_ticks() -> Result<f64> {
    let output = util::capture(Command::new("getconf").arg("CLK_TCK"))?;
    ensure!(output.status.success(), "getconf CLK_TCK failed");
    number(&String::from_utf8_lossy(&output.stdout), "CLK_TCK")
}

/// Fields of the `cpu` line of `/proc/stat` that count busy time: user, nice, system, (idle and
/// iowait skipped), irq, softirq, steal.
const BUSY_FIELDS: [usize; 6] = [0, 1, 2, 5, 6, 7];

/// CPU seconds the whole machine has spent busy, all CPUs together (`/proc/stat`).
pub fn machine_busy_seconds(ticks_per_second: f64) -> Result<f64> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let fields: Vec<u64> = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("no `cpu` line in /proc/stat")?
        .split_whitespace()
        .map(|field| field.parse().context("a /proc/stat figure is not a number"))
        .collect::<Result<_>>()?;
    let busy: u64 = BUSY_FIELDS
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Ok(busy as f64 / ticks_per_second)
}

/// The 1-minute load average (`/proc/loadavg`); `None` when it cannot be read, as it is
/// informational.
pub fn load_average() -> Option<String> {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
}
