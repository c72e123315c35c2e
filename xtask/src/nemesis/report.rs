//! The figures of a run, from its history and its faults: operations by kind and outcome, the
//! time from each fault to the next acknowledged write (for a leader kill: the failover time),
//! and the longest stretch without an acknowledged write. Computes and formats; never decides
//! the verdict.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::faults::{Fault, Kind};
use super::history::{Action, Outcome, Record};
use crate::bench::percentile::percentile;

/// Operations of one kind by outcome: ok, failed, indeterminate.
pub type Counts = [usize; 3];

/// Counts of writes and reads by outcome.
pub fn counts(records: &[Record]) -> (Counts, Counts) {
    let mut writes = [0; 3];
    let mut reads = [0; 3];
    for record in records {
        let row = match record.action {
            Action::Write(_) => &mut writes,
            Action::Read(_) => &mut reads,
        };
        let column = match record.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Unknown => 2,
        };
        row[column] += 1;
    }
    (writes, reads)
}

/// Completion times of acknowledged writes with their invocation times, by completion.
fn acknowledged_writes(records: &[Record]) -> Vec<(Duration, Duration)> {
    let mut writes: Vec<(Duration, Duration)> = records
        .iter()
        .filter(|r| matches!(r.action, Action::Write(_)) && r.outcome == Outcome::Ok)
        .map(|r| (r.invoked, r.completed))
        .collect();
    writes.sort_by_key(|&(_, completed)| completed);
    writes
}

/// Time from `at` to the first acknowledged write invoked at or after it (a write in flight
/// when the fault hit does not count); `None` when none came.
pub fn next_acknowledged_write(records: &[Record], at: Duration) -> Option<Duration> {
    acknowledged_writes(records)
        .iter()
        .filter(|&&(invoked, _)| invoked >= at)
        .map(|&(_, completed)| completed - at)
        .min()
}

/// For each fault kind, the times from injection to the next acknowledged write, sorted.
pub fn recoveries(records: &[Record], faults: &[Fault], kind: Kind) -> Vec<Duration> {
    let mut times: Vec<Duration> = faults
        .iter()
        .filter(|f| f.kind == kind)
        .filter_map(|f| next_acknowledged_write(records, f.injected))
        .collect();
    times.sort();
    times
}

/// The longest time between two consecutive acknowledged writes: (start, end) since the run
/// began; `None` with fewer than two.
pub fn longest_write_gap(records: &[Record]) -> Option<(Duration, Duration)> {
    let completions: Vec<Duration> = acknowledged_writes(records)
        .iter()
        .map(|&(_, completed)| completed)
        .collect();
    completions
        .windows(2)
        .map(|pair| (pair[0], pair[1]))
        .max_by_key(|&(start, end)| end - start)
}

/// Min, median and max of sorted times.
pub fn spread(sorted: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    Some((*sorted.first()?, percentile(sorted, 50.0)?, *sorted.last()?))
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

/// The table of operations and faults printed at the end of a run.
pub fn table(records: &[Record], faults: &[Fault]) -> String {
    let mut out = String::new();
    let (writes, reads) = counts(records);
    let _ = writeln!(out, "operations            ok      fail  indeterminate");
    for (name, row) in [("writes", writes), ("reads", reads)] {
        let _ = writeln!(
            out,
            "  {name:<12} {:>9} {:>9} {:>14}",
            row[0], row[1], row[2]
        );
    }
    let _ = writeln!(
        out,
        "\nfault → next acknowledged write   count   min / median / max"
    );
    for kind in Kind::ALL {
        let injected = faults.iter().filter(|f| f.kind == kind).count();
        let times = recoveries(records, faults, kind);
        let mut figures = spread(&times).map_or_else(
            || "-".to_string(),
            |(min, median, max)| {
                format!("{} / {} / {}", seconds(min), seconds(median), seconds(max))
            },
        );
        if times.len() < injected {
            let _ = write!(
                figures,
                " ({} with no acknowledged write after it)",
                injected - times.len()
            );
        }
        let _ = writeln!(out, "  {:<31} {injected:>5}   {figures}", kind.name());
    }
    for fault in faults.iter().filter(|f| f.kind == Kind::TransferLeader) {
        let _ = writeln!(
            out,
            "  transfer at {}: {}",
            seconds(fault.injected),
            fault.note
        );
    }
    let failover = recoveries(records, faults, Kind::KillLeader);
    match spread(&failover) {
        Some((min, median, max)) => {
            let _ = writeln!(
                out,
                "\nfailover (leader kill → next acknowledged write, {} kills): min {}, median {}, max {}",
                failover.len(),
                seconds(min),
                seconds(median),
                seconds(max)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nfailover: no leader kill followed by an acknowledged write in this run"
            );
        }
    }
    if let Some((start, end)) = longest_write_gap(records) {
        let during: Vec<String> = faults
            .iter()
            .filter(|f| f.injected <= end && f.healed >= start)
            .map(|f| format!("{} (node {})", f.kind.name(), f.node))
            .collect();
        let during = if during.is_empty() {
            "no fault".to_string()
        } else {
            during.join(", ")
        };
        let _ = writeln!(
            out,
            "longest write gap: {} ({} → {} into the run; during: {during})",
            seconds(end - start),
            seconds(start),
            seconds(end)
        );
    }
    out
}

/// The figures as JSON for `history.json`.
pub fn json(records: &[Record], faults: &[Fault]) -> Json {
    let (writes, reads) = counts(records);
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    let recovery: serde_json::Map<String, Json> = Kind::ALL
        .iter()
        .map(|&kind| {
            let times: Vec<f64> = recoveries(records, faults, kind)
                .into_iter()
                .map(millis)
                .collect();
            (kind.name().to_string(), json!(times))
        })
        .collect();
    json!({
        "writes": {"ok": writes[0], "fail": writes[1], "indeterminate": writes[2]},
        "reads": {"ok": reads[0], "fail": reads[1], "indeterminate": reads[2]},
        "nextAcknowledgedWriteMs": recovery,
        "longestWriteGapMs": longest_write_gap(records).map(|(s, e)| millis(e - s)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(invoked: u64, completed: u64, outcome: Outcome) -> Record {
        Record {
            id: 0,
            client: 0,
            key: 0,
            node: 1,
            action: Action::Write(1),
            outcome,
            invoked: Duration::from_millis(invoked),
            completed: Duration::from_millis(completed),
            note: String::new(),
        }
    }

    #[test]
    fn failover_counts_from_the_kill_to_the_next_write_sent_after_it() {
        let records = [
            write(0, 10, Outcome::Ok),
            // In flight at the kill: does not count.
            write(90, 1500, Outcome::Ok),
            write(200, 900, Outcome::Fail),
            write(1000, 1800, Outcome::Ok),
            write(1100, 1700, Outcome::Ok),
        ];
        let fault = Fault {
            kind: Kind::KillLeader,
            node: 1,
            injected: Duration::from_millis(100),
            healed: Duration::from_millis(600),
            note: String::new(),
        };
        assert_eq!(
            recoveries(&records, &[fault], Kind::KillLeader),
            [Duration::from_millis(1600)]
        );
        assert_eq!(
            longest_write_gap(&records),
            Some((Duration::from_millis(10), Duration::from_millis(1500)))
        );
        assert_eq!(counts(&records).0, [4, 1, 0]);
    }
}
