//! Where the machine's time went, second by second (`perf sample-machine`):
//! what a slow second of a long run is to be read against when the
//! server's own statements do not explain it.
//!
//! Each [`Second`] holds the machine's busy, stolen and I/O-wait time,
//! how long tasks waited for a core, for the disk and for memory (the
//! kernel's pressure counters, where it keeps them), the CPU of each
//! process of the pipeline (found by port as [`crate::cpu`] finds them,
//! children included), of everything else on the machine (with its
//! busiest programs: the load generator among them), and the busiest
//! threads of the services. CPU figures are percent of one core over the
//! second (a machine of two cores has 200).
//!
//! A process is read from /proc once a second. A child that exits between
//! two readings is counted once: its parent's children's time grows by
//! all it ever used, and what the earlier readings already counted of it
//! is taken off.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use procfs::process::Process;
use procfs::{Current, CurrentSI};
use serde::Serialize;

use crate::cpu::Watch;

/// Programs of "others" and threads of a service listed per second.
const LISTED: usize = 3;

/// What one second held.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Second {
    /// Seconds since the epoch at the second's end.
    pub at: f64,
    /// CPU time of the whole machine, stolen by its host and idle while
    /// waiting for I/O, in percent of one core.
    pub busy: f64,
    pub steal: f64,
    pub iowait: f64,
    /// Tasks runnable and blocked on I/O at the second's end.
    pub running: u32,
    pub blocked: u32,
    /// Milliseconds some task waited for a core, for the disk and for
    /// memory during the second (none where the kernel keeps no pressure
    /// counters).
    pub cpu_waited_ms: Option<f64>,
    pub io_waited_ms: Option<f64>,
    pub memory_waited_ms: Option<f64>,
    /// CPU of each watched process and its children.
    pub processes: BTreeMap<String, f64>,
    /// CPU of every other process, and the busiest of them by program.
    pub others: f64,
    pub busiest_others: Vec<(String, f64)>,
    /// The busiest threads of each service whose threads are listed.
    pub threads: BTreeMap<String, Vec<(String, f64)>>,
}

/// Counters of one process at one reading.
#[derive(Debug, Clone, PartialEq)]
struct ProcessTicks {
    program: String,
    parent: i32,
    /// When it started, in ticks since boot: a pid reused by a new
    /// process starts later (its name alone does not tell: a kernel
    /// worker's changes with its work).
    started: u64,
    /// Its own user and system ticks.
    ticks: u64,
    /// Ticks of its children that exited and were reaped.
    reaped: u64,
}

/// Every counter a second is the difference of.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    epoch: f64,
    busy: u64,
    steal: u64,
    iowait: u64,
    running: u32,
    blocked: u32,
    /// Microseconds waited in all (core, disk, memory).
    waited_us: [Option<u64>; 3],
    processes: HashMap<i32, ProcessTicks>,
    /// Thread name and ticks by thread id, of each listed service.
    threads: BTreeMap<String, HashMap<i32, (String, u64)>>,
}

/// Reads the machine once a second and says what each second held.
pub struct MachineSampler {
    watched: Vec<(String, i32)>,
    threads_of: Vec<(String, i32)>,
    myself: i32,
    last: Reading,
}

impl MachineSampler {
    /// Watches the processes of `watched` (a name and the port it listens
    /// on) and lists the threads of those named in `threads_of`.
    pub fn new(watched: &[(String, u16)], threads_of: &[&str]) -> anyhow::Result<Self> {
        let watched = Watch::new(watched)?.pids().to_vec();
        let threads_of = watched
            .iter()
            .filter(|(name, _)| threads_of.contains(&name.as_str()))
            .cloned()
            .collect::<Vec<_>>();
        let last = read(&threads_of)?;
        Ok(MachineSampler {
            watched,
            threads_of,
            myself: std::process::id() as i32,
            last,
        })
    }

    /// What the time since the last call (or since [`MachineSampler::new`])
    /// held.
    pub fn read_second(&mut self) -> anyhow::Result<Second> {
        let now = read(&self.threads_of)?;
        let second = difference(
            &self.last,
            &now,
            &self.watched,
            self.myself,
            procfs::ticks_per_second() as f64,
        );
        self.last = now;
        Ok(second)
    }
}

fn read(threads_of: &[(String, i32)]) -> anyhow::Result<Reading> {
    let kernel = procfs::KernelStats::current()?;
    let total = &kernel.total;
    let iowait = total.iowait.unwrap_or(0);
    let steal = total.steal.unwrap_or(0);
    let busy = total.user
        + total.nice
        + total.system
        + total.irq.unwrap_or(0)
        + total.softirq.unwrap_or(0);
    let waited_us = [
        procfs::CpuPressure::current().ok().map(|p| p.some.total),
        procfs::IoPressure::current().ok().map(|p| p.some.total),
        procfs::MemoryPressure::current().ok().map(|p| p.some.total),
    ];
    let mut processes = HashMap::new();
    for process in procfs::process::all_processes()?.flatten() {
        // A process gone since the listing is read as gone.
        let Ok(stat) = process.stat() else { continue };
        processes.insert(
            stat.pid,
            ProcessTicks {
                program: stat.comm.clone(),
                parent: stat.ppid,
                started: stat.starttime,
                ticks: stat.utime + stat.stime,
                reaped: (stat.cutime + stat.cstime).max(0) as u64,
            },
        );
    }
    let mut threads = BTreeMap::new();
    for (name, pid) in threads_of {
        let mut of_service = HashMap::new();
        if let Ok(tasks) = Process::new(*pid).and_then(|process| process.tasks()) {
            for task in tasks.flatten() {
                let Ok(stat) = task.stat() else { continue };
                of_service.insert(stat.pid, (stat.comm, stat.utime + stat.stime));
            }
        }
        threads.insert(name.clone(), of_service);
    }
    Ok(Reading {
        at: Instant::now(),
        epoch: time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9,
        busy,
        steal,
        iowait,
        running: kernel.procs_running.unwrap_or(0),
        blocked: kernel.procs_blocked.unwrap_or(0),
        waited_us,
        processes,
        threads,
    })
}

/// What happened between two readings. `watched` names the root process
/// of each watched name; `myself` (the sampler) is listed among the others
/// as `(sampler)`.
fn difference(
    before: &Reading,
    after: &Reading,
    watched: &[(String, i32)],
    myself: i32,
    ticks_per_second: f64,
) -> Second {
    let elapsed = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let percent = |ticks: u64| 100.0 * ticks as f64 / ticks_per_second / elapsed;
    let root_name: HashMap<i32, &str> = watched
        .iter()
        .map(|(name, pid)| (*pid, name.as_str()))
        .collect();
    let owner = |pid: i32, process: &ProcessTicks| {
        root_name
            .get(&pid)
            .or_else(|| root_name.get(&process.parent))
            .copied()
    };
    let mut processes: BTreeMap<String, u64> =
        watched.iter().map(|(name, _)| (name.clone(), 0)).collect();
    let mut others: BTreeMap<String, u64> = BTreeMap::new();
    for (pid, now) in &after.processes {
        let earlier = before
            .processes
            .get(pid)
            .filter(|earlier| earlier.started == now.started && earlier.ticks <= now.ticks);
        let mut ticks = now.ticks - earlier.map_or(0, |earlier| earlier.ticks);
        if root_name.contains_key(pid) {
            // Children reaped since: all they used, less what was counted
            // of them while they lived.
            let reaped = earlier.map_or(0, |earlier| now.reaped.saturating_sub(earlier.reaped));
            let counted: u64 = before
                .processes
                .iter()
                .filter(|(child, process)| {
                    process.parent == *pid && !after.processes.contains_key(child)
                })
                .map(|(_, process)| process.ticks)
                .sum();
            ticks += reaped.saturating_sub(counted);
        }
        match owner(*pid, now) {
            Some(name) => *processes.entry(name.to_owned()).or_default() += ticks,
            None => {
                let program = if *pid == myself {
                    "(sampler)".to_owned()
                } else {
                    now.program.clone()
                };
                *others.entry(program).or_default() += ticks;
            }
        }
    }
    let busiest = |ticks: BTreeMap<String, u64>| {
        let mut listed: Vec<(String, u64)> = ticks.into_iter().filter(|(_, t)| *t > 0).collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listed
            .into_iter()
            .take(LISTED)
            .map(|(name, ticks)| (name, percent(ticks)))
            .collect::<Vec<_>>()
    };
    let threads = after
        .threads
        .iter()
        .map(|(service, now)| {
            let earlier = before.threads.get(service);
            let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
            for (tid, (name, ticks)) in now {
                let was = earlier
                    .and_then(|threads| threads.get(tid))
                    .map_or(0, |(_, ticks)| *ticks);
                let label = format!("{name}[{tid}]");
                *by_name.entry(label).or_default() += ticks.saturating_sub(was);
            }
            (service.clone(), busiest(by_name))
        })
        .collect();
    let waited_ms = |index: usize| {
        let (Some(before), Some(after)) = (before.waited_us[index], after.waited_us[index]) else {
            return None;
        };
        Some(after.saturating_sub(before) as f64 / 1000.0 / elapsed)
    };
    let other_ticks = others.values().sum();
    Second {
        at: after.epoch,
        busy: percent(after.busy.saturating_sub(before.busy)),
        steal: percent(after.steal.saturating_sub(before.steal)),
        iowait: percent(after.iowait.saturating_sub(before.iowait)),
        running: after.running,
        blocked: after.blocked,
        cpu_waited_ms: waited_ms(0),
        io_waited_ms: waited_ms(1),
        memory_waited_ms: waited_ms(2),
        processes: processes
            .into_iter()
            .map(|(name, ticks)| (name, percent(ticks)))
            .collect(),
        others: percent(other_ticks),
        busiest_others: busiest(others),
        threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn process(program: &str, parent: i32, ticks: u64, reaped: u64) -> ProcessTicks {
        ProcessTicks {
            program: program.into(),
            parent,
            started: 1,
            ticks,
            reaped,
        }
    }

    fn reading(at: Instant, busy: u64, processes: &[(i32, ProcessTicks)]) -> Reading {
        Reading {
            at,
            epoch: 0.0,
            busy,
            steal: 0,
            iowait: 0,
            running: 1,
            blocked: 0,
            waited_us: [Some(busy * 1000), None, None],
            processes: processes.iter().cloned().collect(),
            threads: BTreeMap::new(),
        }
    }

    #[test]
    fn a_second_counts_each_process_once_and_a_reaped_child_only_for_its_last_part() {
        let start = Instant::now();
        let watched = [("postgres".to_owned(), 10)];
        // The server (10) with two backends (11, 12), the load generator
        // (20) and the sampler (30); ticks are hundredths of a second.
        let before = reading(
            start,
            1_000,
            &[
                (10, process("postgres", 1, 100, 0)),
                (11, process("postgres", 10, 40, 0)),
                (12, process("postgres", 10, 30, 0)),
                (20, process("perf", 5, 500, 0)),
                (30, process("perf", 5, 7, 0)),
            ],
        );
        // A second later: the server used 5 ticks, backend 11 used 10,
        // backend 12 used 6 more and exited (36 reaped into the server),
        // a new backend 13 used 4, the generator 25, the sampler 1.
        let after = reading(
            start + Duration::from_secs(1),
            1_080,
            &[
                (10, process("postgres", 1, 105, 36)),
                (11, process("postgres", 10, 50, 0)),
                (13, process("postgres", 10, 4, 0)),
                (20, process("perf", 5, 525, 0)),
                (30, process("perf", 5, 8, 0)),
            ],
        );
        let second = difference(&before, &after, &watched, 30, 100.0);
        assert_eq!(second.processes["postgres"], 5.0 + 10.0 + 6.0 + 4.0);
        assert_eq!(second.others, 26.0);
        assert_eq!(
            second.busiest_others,
            vec![("perf".to_owned(), 25.0), ("(sampler)".to_owned(), 1.0)]
        );
        assert_eq!(second.busy, 80.0);
        assert_eq!(second.cpu_waited_ms, Some(80.0));
        assert_eq!(second.io_waited_ms, None);
    }

    #[test]
    fn a_pid_reused_by_a_new_process_counts_from_zero_and_a_renamed_one_does_not() {
        let start = Instant::now();
        let before = reading(
            start,
            0,
            &[
                (40, process("cargo", 1, 900, 0)),
                (2, process("kworker/0:0-events", 0, 300, 0)),
            ],
        );
        let reused = ProcessTicks {
            started: 500,
            ..process("rustc", 1, 50, 0)
        };
        let after = reading(
            start + Duration::from_secs(2),
            0,
            &[
                (40, reused),
                (2, process("kworker/0:0-mm_percpu_wq", 0, 320, 0)),
            ],
        );
        let second = difference(&before, &after, &[], 0, 100.0);
        // 50 ticks over two seconds: a quarter of a core; the worker's 20
        // a tenth.
        assert_eq!(
            second.busiest_others,
            vec![
                ("rustc".to_owned(), 25.0),
                ("kworker/0:0-mm_percpu_wq".to_owned(), 10.0)
            ]
        );
    }

    #[test]
    fn the_busiest_thread_of_a_watched_process_is_listed_by_its_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut sampler = MachineSampler::new(&[("me".to_owned(), port)], &["me"]).unwrap();
        // The thread spins, then lives on until it has been read (a thread
        // that ended is no longer listed).
        let (spun, spun_seen) = std::sync::mpsc::channel();
        let (read, was_read) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("spinner".into())
            .spawn(move || {
                let busy = Instant::now();
                while busy.elapsed() < Duration::from_millis(300) {
                    std::hint::black_box(busy.elapsed());
                }
                spun.send(()).unwrap();
                was_read.recv().unwrap();
            })
            .unwrap();
        spun_seen.recv().unwrap();
        let second = sampler.read_second().unwrap();
        read.send(()).unwrap();
        spinner.join().unwrap();
        let threads = &second.threads["me"];
        assert!(
            threads
                .first()
                .is_some_and(|(name, _)| name.starts_with("spinner[")),
            "{threads:?}"
        );
        assert!(second.processes["me"] > 0.0, "{second:?}");
        assert!(second.busy > 0.0, "{second:?}");
    }
}
