//! The suite: every (workload, variant) measured in a fresh child process, runs
//! alternating the variants' order, then medians, spreads and ratios to plain tokio from
//! the same suite run, printed as one table and written as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::one::{Record, Variant, Workload, FAN_IN_PRODUCERS};

/// What to run.
pub struct Options {
    pub quick: bool,
    pub runs: usize,
    pub workloads: Vec<Workload>,
    pub variants: Vec<Variant>,
    /// The leaktop-bench built with `--features console` and `--cfg tokio_unstable`.
    pub console_exe: Option<PathBuf>,
    /// The release `leaktop` binary (attach workload).
    pub leaktop: Option<PathBuf>,
    pub out: Option<PathBuf>,
    /// Also count instructions under callgrind (workloads 1-4).
    pub callgrind: bool,
}

/// One row of the result: a metric of one workload in one variant.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: Workload,
    pub metric: String,
    pub unit: String,
    pub variant: Variant,
    pub n: usize,
    /// wall clock (medians of runs) or callgrind (instructions, one count).
    pub method: &'static str,
    pub runs: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max - min) / median, percent.
    pub spread_pct: f64,
    pub ratio_to_plain: Option<f64>,
    pub delta_to_plain: Option<f64>,
}

/// A goal of issue 10 and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub workload: Workload,
    pub metric: String,
    pub method: &'static str,
    pub goal: String,
    pub value: String,
    pub ok: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    section: &'static str,
    quick: bool,
    runs: usize,
    cores: usize,
    worker_threads: usize,
    load_before: String,
    load_after: String,
    rows: &'a [Row],
    goals: &'a [Goal],
    raw: &'a [Record],
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn exe_for(opts: &Options, v: Variant) -> Result<PathBuf, String> {
    if v == Variant::Console {
        return opts
            .console_exe
            .clone()
            .ok_or_else(|| "no console build".to_string());
    }
    std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))
}

fn one_args(opts: &Options, w: Workload, v: Variant, n: usize) -> Vec<String> {
    let mut args = vec![
        "one".into(),
        "--workload".into(),
        w.name().into(),
        "--variant".into(),
        v.name().into(),
        "--n".into(),
        n.to_string(),
    ];
    if opts.quick {
        args.push("--quick".into());
    }
    if let Some(l) = &opts.leaktop {
        args.push("--leaktop".into());
        args.push(l.display().to_string());
    }
    args
}

/// Runs one measurement in a child process and parses its record.
fn measure(opts: &Options, w: Workload, v: Variant, n: usize) -> Result<Record, String> {
    let exe = exe_for(opts, v)?;
    let out = Command::new(&exe)
        .args(one_args(opts, w, v, n))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} {} ({}) failed: {}",
            w.name(),
            v.name(),
            exe.display(),
            out.status
        ));
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| format!("{} {}: unreadable result {line:?}: {e}", w.name(), v.name()))
}

/// Instructions of the whole process (every thread) running `w` at size `n`, from
/// callgrind's summary.
fn instructions(opts: &Options, w: Workload, v: Variant, n: usize) -> Result<u64, String> {
    let exe = exe_for(opts, v)?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(&exe)
        .args(one_args(opts, w, v, n))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run valgrind (apt-get install -y valgrind): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "callgrind {} {} failed: {}\n{stderr}",
            w.name(),
            v.name(),
            out.status
        ));
    }
    stderr
        .lines()
        .find_map(|l| {
            let rest = l.split("Collected :").nth(1)?;
            rest.trim().parse().ok()
        })
        .ok_or_else(|| format!("no 'Collected' line from callgrind:\n{stderr}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs the suite; returns false if a goal was missed.
pub fn run(opts: &Options) -> Result<bool, String> {
    let load_before = loadavg();
    let mut raw: Vec<Record> = Vec::new();
    let variants_of = |w: Workload| -> Vec<Variant> {
        w.variants()
            .iter()
            .copied()
            .filter(|v| opts.variants.contains(v))
            .filter(|v| *v != Variant::Console || opts.console_exe.is_some())
            .collect()
    };
    for r in 0..opts.runs {
        for &w in &opts.workloads {
            let mut vs = variants_of(w);
            if !vs.is_empty() {
                // Alternate the order from run to run, so drift in the machine's load
                // does not always favour one variant.
                let k = r % vs.len();
                vs.rotate_left(k);
            }
            for v in vs {
                let rec = measure(opts, w, v, w.size(opts.quick))?;
                eprintln!(
                    "[run {}/{}] {:<9} {:<7} {}",
                    r + 1,
                    opts.runs,
                    w.name(),
                    v.name(),
                    rec.metrics
                        .iter()
                        .map(|m| format!("{}={:.1}", m.name, m.value))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                raw.push(rec);
            }
        }
    }
    let mut rows = aggregate(&raw);
    if opts.callgrind {
        rows.extend(callgrind_rows(opts, &variants_of)?);
    }
    let goals = goals(&rows);
    let load_after = loadavg();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    print_table(&rows, &goals, opts, cores, &load_before, &load_after);
    if let Some(out) = &opts.out {
        let doc = Output {
            section: "overhead",
            quick: opts.quick,
            runs: opts.runs,
            cores,
            worker_threads: 2,
            load_before,
            load_after,
            rows: &rows,
            goals: &goals,
            raw: &raw,
        };
        write_json(out, &doc)?;
    }
    Ok(goals.iter().all(|g| g.ok))
}

fn write_json(path: &Path, doc: &impl Serialize) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Medians, spreads and ratios of the wall-clock runs.
pub fn aggregate(raw: &[Record]) -> Vec<Row> {
    // (workload, metric) -> variant -> values; first-seen order of metrics kept.
    let mut order: Vec<(Workload, String, String)> = Vec::new();
    let mut values: BTreeMap<(String, String, &'static str), (usize, Vec<f64>)> = BTreeMap::new();
    for rec in raw {
        for m in &rec.metrics {
            let key = (rec.workload, m.name.clone(), m.unit.clone());
            if !order.contains(&key) {
                order.push(key);
            }
            values
                .entry((
                    rec.workload.name().into(),
                    m.name.clone(),
                    rec.variant.name(),
                ))
                .or_insert_with(|| (rec.n, Vec::new()))
                .1
                .push(m.value);
        }
    }
    let mut rows = Vec::new();
    for (w, metric, unit) in order {
        let get = |v: Variant| values.get(&(w.name().to_string(), metric.clone(), v.name()));
        let plain = get(Variant::Plain).map(|(_, vals)| median(&mut vals.clone()));
        for v in Variant::ALL {
            let Some((n, vals)) = get(v) else { continue };
            let mut vals = vals.clone();
            let med = median(&mut vals);
            let (min, max) = (vals[0], vals[vals.len() - 1]);
            let compare = v != Variant::Plain && plain.is_some();
            rows.push(Row {
                workload: w,
                metric: metric.clone(),
                unit: unit.clone(),
                variant: v,
                n: *n,
                method: "wall",
                runs: vals.len(),
                median: med,
                min,
                max,
                spread_pct: if med != 0.0 {
                    (max - min) / med.abs() * 100.0
                } else {
                    0.0
                },
                ratio_to_plain: plain.filter(|p| compare && *p > 0.0).map(|p| med / p),
                delta_to_plain: plain.filter(|_| compare).map(|p| med - p),
            });
        }
    }
    rows
}

/// Pairs of callgrind runs per cell (median taken).
const CALLGRIND_RUNS: usize = 3;

/// Callgrind sizes: small enough for a ~50× slowdown; a tenth of that for
/// console-subscriber, itself 10-100× slower (per-op counts do not depend on the size).
fn callgrind_size(w: Workload, v: Variant) -> usize {
    let n = match w {
        Workload::Spawn => 20_000,
        Workload::PingPong => 10_000,
        Workload::FanIn => FAN_IN_PRODUCERS * 50,
        Workload::Contention => 6_400,
        _ => 10_000,
    };
    if v == Variant::Console {
        n / 10
    } else {
        n
    }
}

/// Instructions per operation: the difference between runs at 2n and n over n, so the
/// fixed costs (runtime and agent start, warm-up, client) cancel out.
fn callgrind_rows(
    opts: &Options,
    variants_of: &dyn Fn(Workload) -> Vec<Variant>,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for &w in &opts.workloads {
        let metric = match w {
            Workload::Spawn => "instr_per_task",
            Workload::PingPong => "instr_per_round_trip",
            Workload::FanIn => "instr_per_message",
            Workload::Park => "instr_per_task",
            Workload::Contention => "instr_per_request",
            _ => continue,
        };
        // (variant, median, min, max) over CALLGRIND_RUNS pairs: the count of a
        // multi-threaded workload still depends on how often its tasks happen to park
        // (valgrind serialises the threads), by up to tens of percent from run to run.
        let mut per: Vec<(Variant, f64, f64, f64)> = Vec::new();
        for v in variants_of(w) {
            let n = callgrind_size(w, v);
            let mut values = Vec::new();
            for _ in 0..CALLGRIND_RUNS {
                let a = instructions(opts, w, v, n)?;
                let b = instructions(opts, w, v, 2 * n)?;
                values.push((b as f64 - a as f64) / n as f64);
            }
            let value = median(&mut values);
            let (min, max) = (values[0], values[values.len() - 1]);
            eprintln!(
                "[callgrind] {:<9} {:<7} {metric}={value:.0} ({min:.0}..{max:.0})",
                w.name(),
                v.name()
            );
            per.push((v, value, min, max));
        }
        let plain = per
            .iter()
            .find(|(v, ..)| *v == Variant::Plain)
            .map(|(_, x, ..)| *x);
        for (v, value, min, max) in per {
            let compare = v != Variant::Plain && plain.is_some();
            rows.push(Row {
                workload: w,
                metric: metric.into(),
                unit: "instr".into(),
                variant: v,
                n: callgrind_size(w, v),
                method: "callgrind",
                runs: CALLGRIND_RUNS,
                median: value,
                min,
                max,
                spread_pct: if value != 0.0 {
                    (max - min) / value.abs() * 100.0
                } else {
                    0.0
                },
                ratio_to_plain: plain.filter(|p| compare && *p > 0.0).map(|p| value / p),
                delta_to_plain: plain.filter(|_| compare).map(|p| value - p),
            });
        }
    }
    Ok(rows)
}

/// The goals of issue 10, checked against the agent's rows.
pub fn goals(rows: &[Row]) -> Vec<Goal> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.variant == Variant::Agent) {
        let time_metric = r.metric.starts_with("ns_per") || r.metric.starts_with("instr_per");
        let overhead_workload = matches!(
            r.workload,
            Workload::Spawn
                | Workload::PingPong
                | Workload::FanIn
                | Workload::Park
                | Workload::Contention
        );
        if overhead_workload && time_metric {
            if let Some(ratio) = r.ratio_to_plain {
                out.push(Goal {
                    workload: r.workload,
                    metric: r.metric.clone(),
                    method: r.method,
                    goal: "<= 1.10x plain".into(),
                    value: format!("{ratio:.2}x"),
                    ok: ratio <= 1.10,
                });
            }
        }
        if r.workload == Workload::Park && r.metric == "rss_bytes_per_task" {
            if let Some(d) = r.delta_to_plain {
                out.push(Goal {
                    workload: r.workload,
                    metric: r.metric.clone(),
                    method: r.method,
                    goal: "<= +128 B/task".into(),
                    value: format!("{d:+.0} B"),
                    ok: d <= 128.0,
                });
            }
        }
        if r.workload == Workload::Scale && r.metric == "snapshot_ms" {
            out.push(Goal {
                workload: r.workload,
                metric: r.metric.clone(),
                method: r.method,
                goal: "<= 10 ms".into(),
                value: format!("{:.2} ms", r.median),
                ok: r.median <= 10.0,
            });
        }
        if r.workload == Workload::Scale && r.metric == "update_bytes" {
            out.push(Goal {
                workload: r.workload,
                metric: r.metric.clone(),
                method: r.method,
                goal: "<= 64 KiB".into(),
                value: format!("{:.1} KiB", r.median / 1024.0),
                ok: r.median <= 65_536.0,
            });
        }
    }
    out
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(r: &Row) -> String {
    let mut s = fmt_value(r.median);
    if r.runs > 1 {
        s += &format!(" ±{:.0}%", r.spread_pct / 2.0);
    }
    if let Some(ratio) = r.ratio_to_plain {
        if r.unit != "B" || r.metric.contains("per_task") {
            s += &format!(" ({ratio:.2}x)");
        }
    }
    s
}

fn describe(w: Workload, n: usize) -> String {
    let k = |n: usize| {
        if n >= 1_000_000 && n % 1_000_000 == 0 {
            format!("{}M", n / 1_000_000)
        } else if n >= 1_000 && n % 1_000 == 0 {
            format!("{}k", n / 1_000)
        } else {
            n.to_string()
        }
    };
    match w {
        Workload::Spawn => format!("1 spawn storm {}", k(n)),
        Workload::PingPong => format!("2 ping-pong {}", k(n)),
        Workload::FanIn => format!("3 fan-in {}x{}", FAN_IN_PRODUCERS, k(n / FAN_IN_PRODUCERS)),
        Workload::Park => format!("4 park {}", k(n)),
        Workload::Scale => format!("5 scale {}", k(n)),
        Workload::Attach => format!("6 attach {}", k(n)),
        Workload::Contention => format!(
            "7 contention {}x{} on {}",
            crate::one::CONTENTION_CLIENTS,
            k(n / crate::one::CONTENTION_CLIENTS),
            crate::one::CONTENTION_WORKERS
        ),
    }
}

fn print_table(
    rows: &[Row],
    goals: &[Goal],
    opts: &Options,
    cores: usize,
    load_before: &str,
    load_after: &str,
) {
    println!(
        "leaktop overhead: 2 tokio worker threads, {} run(s) per cell{}, {} cores, load {} -> {}",
        opts.runs,
        if opts.quick { " (quick sizes)" } else { "" },
        cores,
        load_before,
        load_after
    );
    println!("cells: median ±half-spread (ratio to plain tokio in the same run); callgrind rows: instructions per op, 2n-n difference, median of 3");
    let header = [
        "workload",
        "metric",
        "plain tokio",
        "leaktop-agent",
        "console-subscriber",
    ];
    let mut lines: Vec<[String; 5]> = vec![header.map(String::from)];
    let mut keys: Vec<(Workload, String, &'static str, usize)> = Vec::new();
    for r in rows {
        let n = rows
            .iter()
            .find(|x| x.workload == r.workload && x.metric == r.metric && x.method == r.method)
            .map_or(r.n, |x| x.n);
        let key = (r.workload, r.metric.clone(), r.method, n);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (w, metric, method, n) in keys {
        let get = |v: Variant| {
            rows.iter()
                .find(|r| {
                    r.workload == w && r.metric == metric && r.method == method && r.variant == v
                })
                .map(cell)
                .unwrap_or_else(|| "-".into())
        };
        let unit = rows
            .iter()
            .find(|r| r.workload == w && r.metric == metric)
            .map(|r| r.unit.clone())
            .unwrap_or_default();
        let label = if unit.is_empty() {
            metric.clone()
        } else {
            format!("{metric} [{unit}]")
        };
        let wl = if method == "callgrind" {
            format!("{} (callgrind)", describe(w, n))
        } else {
            describe(w, n)
        };
        lines.push([
            wl,
            label,
            get(Variant::Plain),
            get(Variant::Agent),
            get(Variant::Console),
        ]);
    }
    let mut widths = [0usize; 5];
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for l in &lines {
        let mut s = String::new();
        for (i, c) in l.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            s += c;
            s += &" ".repeat(pad + 2);
        }
        println!("{}", s.trim_end());
    }
    if !goals.is_empty() {
        println!();
        println!("goals (leaktop-agent):");
        for g in goals {
            println!(
                "  {} {:<24} {:<10} {:<16} {:>10}  {}",
                if g.ok { "ok  " } else { "MISS" },
                g.metric,
                g.method,
                describe_short(g.workload),
                g.value,
                g.goal
            );
        }
    }
}

fn describe_short(w: Workload) -> &'static str {
    w.name()
}
