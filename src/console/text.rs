//! The harness's figures as text for a person at a terminal: the demo's live
//! panel and closing summary, and the bench report as a table.

use std::collections::BTreeMap;

use crate::harness::bench::{Report, LATENCIES, SUSTAINABLE};
use crate::harness::demo::{Outcome, Status};

/// The demo's live panel, a few lines of text.
pub fn demo_panel(status: &Status) -> String {
    let seconds = status.elapsed.as_secs_f64().max(1e-3);
    let mut text = format!(
        "presence demo  {:>5.1} s  input {} records ({:.0}/s)  (Ctrl-C ends it)\n",
        seconds,
        status.produced,
        status.produced as f64 / seconds
    );
    text += &format!(
        "in stores now {} phones; walk-ins {}, in the last minute {}\n",
        status.present_total(),
        status.walkins,
        status.recent_total()
    );
    text += "  store        in now  walk-ins last minute\n";
    let most = status.present.first().map_or(1, |(_, n)| (*n).max(1));
    for (store, n) in status.present.iter().take(6) {
        let bar = "#".repeat((n * 20 / most) as usize);
        let recent = status
            .recent
            .iter()
            .find(|(recent, _)| recent == store)
            .map_or(0, |(_, n)| *n);
        text += &format!("  {store:<12} {n:>6}  {recent:>6}  {bar}\n");
    }
    text += &latency_line(&status.latency);
    text += &format!("rejected {}\n", rejected_text(&status.rejected));
    text
}

/// What the demo did, once it ends.
pub fn demo_summary(outcome: &Outcome) -> String {
    let status = &outcome.status;
    let seconds = status.elapsed.as_secs_f64().max(1e-3);
    let mut text = format!(
        "\ndemo summary: {} after {:.1} s\n",
        if outcome.interrupted {
            "stopped by Ctrl-C"
        } else {
            "finished"
        },
        seconds
    );
    let producing = outcome.producing.as_secs_f64().max(1e-3);
    text += &format!(
        "  produced {} records in {:.1} s ({:.0}/s); the pipeline {}\n",
        status.produced,
        producing,
        status.produced as f64 / producing,
        outcome.pipeline.describe()
    );
    text += &format!(
        "  walk-ins {} ({} in the last minute, at {} stores); in stores at the end {} phones\n",
        status.walkins,
        status.recent_total(),
        status.recent.len(),
        status.present_total()
    );
    // Timed while it ran, as the panel showed it (not the walk-ins flushed
    // at shutdown).
    text += &format!("  {}", latency_line(&status.latency));
    text
}

/// The demo's latency quantiles, one line.
fn latency_line(latency: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "latency ingest -> walk-in readable (ms): p50 {} p90 {} p99 {} max {} (n={})\n",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.9),
        latency.value_at_quantile(0.99),
        latency.max(),
        latency.len()
    )
}

/// Rejected records by reason (`none` without any).
fn rejected_text(rejected: &BTreeMap<String, u64>) -> String {
    if rejected.is_empty() {
        return "none".to_owned();
    }
    rejected
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report of `presence bench`, as a table for a terminal, with what
/// each row measures.
pub fn bench_summary(report: &Report) -> String {
    let mut text = format!(
        "offered {}/s, achieved {:.0}/s, lag at end {} records, {} (commit {})\n{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        report.rate_offered,
        report.rate_achieved,
        report.lag_end,
        if report.sustainable { "sustainable" } else { "NOT sustainable" },
        report.commit,
        "latency ms", "p50", "p90", "p99", "p99.9", "max", "samples"
    );
    for (name, l) in &report.latency_ms {
        text.push_str(&format!(
            "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        ));
    }
    if let Some(c) = &report.checkpoints {
        text.push_str(&format!(
            "checkpoints: {} completed, {} failed, {:.0} bytes written per checkpoint, last {} bytes\n",
            c["completed"], c["failures"], c["bytes_per_checkpoint"].as_f64().unwrap_or(0.0), c["last_size_bytes"]
        ));
        // What a checkpoint costs in the store: requests and bytes by operation.
        let per = &c["store_per_checkpoint"];
        let ops: Vec<String> = ["put", "get", "list", "delete"]
            .iter()
            .map(|op| {
                let requests = per[op]["requests"].as_f64().unwrap_or(0.0);
                let bytes = per[op]["bytes"].as_f64().unwrap_or(0.0);
                match *op {
                    "put" | "get" => format!("{op} {requests:.1} ({bytes:.0} bytes)"),
                    _ => format!("{op} {requests:.1}"),
                }
            })
            .collect();
        text.push_str(&format!(
            "checkpoint store requests per checkpoint: {}\n",
            ops.join(", ")
        ));
    }
    if let Some(q) = &report.queries {
        let l = &q.latency_ms;
        text.push_str(&format!(
            "queries: offered {}/s, answered {:.0}/s ({} of {}, {} failed); latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}\n",
            q.rate_offered, q.rate_answered, q.answered, q.offered, q.failed, l.p50, l.p90, l.p99, l.max
        ));
    }
    // A tail percentile read from a handful of samples beyond it is noise.
    for (name, l) in &report.latency_ms {
        let beyond = |quantile: f64| (l.count as f64 * (1.0 - quantile)).floor() as u64;
        let thin: Vec<String> = [("p99", 0.99), ("p99.9", 0.999)]
            .into_iter()
            .filter(|(_, q)| beyond(*q) < 100)
            .map(|(p, q)| format!("{p} on {}", beyond(q)))
            .collect();
        if !thin.is_empty() && l.count > 0 {
            text.push_str(&format!(
                "note: {name}'s {} samples beyond it (fewer than 100: a rough figure)\n",
                thin.join(", ")
            ));
        }
    }
    text.push_str("where:\n");
    for (name, meaning) in LATENCIES {
        if report.latency_ms.contains_key(name) {
            text.push_str(&format!("  {name:<12} {meaning}\n"));
        }
    }
    text.push_str(&format!("  {:<12} {SUSTAINABLE}\n", "sustainable"));
    text
}
