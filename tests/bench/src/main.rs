//! leaktop-bench: the overhead of leaktop-agent against plain tokio and tokio-console's
//! console-subscriber, on the same workloads, and the agent at a million tasks.
//! scripts/bench.sh builds and runs it; see docs/performance.md.
//!
//! ```text
//! leaktop-bench suite [--quick] [--runs N] [--workloads a,b] [--variants a,b]
//!                     [--console-exe PATH] [--leaktop PATH] [--out FILE] [--callgrind]
//! leaktop-bench one --workload W --variant V [--n N] [--quick] [--leaktop PATH]
//! ```
//!
//! Workloads: spawn, ping-pong, fan-in, park, scale, attach. Variants: plain, agent,
//! console (the last only in a build with `--features console` and
//! `--cfg tokio_unstable`).

mod client;
mod flavors;
mod mem;
mod one;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use one::{Spec, Variant, Workload};

const USAGE: &str = "usage:
  leaktop-bench suite [--quick] [--runs N] [--workloads a,b] [--variants a,b]
                      [--console-exe PATH] [--leaktop PATH] [--out FILE] [--callgrind]
  leaktop-bench one --workload W --variant V [--n N] [--quick] [--leaktop PATH]
workloads: spawn, ping-pong, fan-in, park, scale, attach, contention
variants:  plain, agent, console";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("one") => cmd_one(&args[1..]),
        Some("suite") => cmd_suite(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => Err(format!("expected a command\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // Goals missed: the table says which.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("leaktop-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--flag value` pairs and bare `--switch`es.
struct Args<'a> {
    rest: &'a [String],
}

impl<'a> Args<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn value(&mut self, flag: &str) -> Result<&'a str, String> {
        self.next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
    }
}

fn parse_list<T>(s: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| parse(x).ok_or_else(|| format!("unknown {what} '{x}'\n{USAGE}")))
        .collect()
}

fn cmd_one(args: &[String]) -> Result<bool, String> {
    let mut a = Args { rest: args };
    let (mut workload, mut variant, mut n, mut leaktop) = (None, None, None, None);
    let mut quick = false;
    while let Some(flag) = a.next() {
        match flag {
            "--workload" => {
                let v = a.value(flag)?;
                workload = Some(Workload::parse(v).ok_or(format!("unknown workload '{v}'"))?);
            }
            "--variant" => {
                let v = a.value(flag)?;
                variant = Some(Variant::parse(v).ok_or(format!("unknown variant '{v}'"))?);
            }
            "--n" => {
                let v = a.value(flag)?;
                n = Some(v.parse::<usize>().map_err(|e| format!("--n {v}: {e}"))?);
            }
            "--quick" => quick = true,
            "--leaktop" => leaktop = Some(PathBuf::from(a.value(flag)?)),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    let workload = workload.ok_or(format!("one: --workload is required\n{USAGE}"))?;
    let variant = variant.ok_or(format!("one: --variant is required\n{USAGE}"))?;
    let n = n.unwrap_or(workload.size(quick));
    let rec = one::run(&Spec {
        workload,
        variant,
        n,
        leaktop,
        quick,
    })?;
    println!(
        "{}",
        serde_json::to_string(&rec).map_err(|e| format!("cannot encode the result: {e}"))?
    );
    // Parked tasks are not torn down one by one: the process ends here.
    std::process::exit(0)
}

fn cmd_suite(args: &[String]) -> Result<bool, String> {
    let mut a = Args { rest: args };
    let mut opts = suite::Options {
        quick: false,
        runs: 5,
        workloads: Workload::ALL.to_vec(),
        variants: Variant::ALL.to_vec(),
        console_exe: None,
        leaktop: None,
        out: None,
        callgrind: false,
    };
    let mut runs = None;
    while let Some(flag) = a.next() {
        match flag {
            "--quick" => opts.quick = true,
            "--callgrind" => opts.callgrind = true,
            "--runs" => {
                let v = a.value(flag)?;
                runs = Some(v.parse::<usize>().map_err(|e| format!("--runs {v}: {e}"))?);
            }
            "--workloads" => {
                opts.workloads = parse_list(a.value(flag)?, Workload::parse, "workload")?
            }
            "--variants" => opts.variants = parse_list(a.value(flag)?, Variant::parse, "variant")?,
            "--console-exe" => opts.console_exe = Some(PathBuf::from(a.value(flag)?)),
            "--leaktop" => opts.leaktop = Some(PathBuf::from(a.value(flag)?)),
            "--out" => opts.out = Some(PathBuf::from(a.value(flag)?)),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    opts.runs = runs.unwrap_or(if opts.quick { 1 } else { 5 }).max(1);
    if opts.workloads.contains(&Workload::Attach) && opts.leaktop.is_none() {
        return Err(
            "the attach workload needs --leaktop PATH (the release leaktop binary), \
                    or leave it out with --workloads"
                .into(),
        );
    }
    suite::run(&opts)
}
