//! CPU time of the pipeline's processes, from /proc: what a load run cost
//! each of them, read before and after.
//!
//! A process is found by the TCP port it listens on (the order and product
//! services, PostgreSQL, the RabbitMQ node the services use, Redis), so the
//! right one is measured even where several of a kind run. Its figure
//! includes its children: a PostgreSQL backend or an Erlang port program
//! counts while alive (its own time) and after it exits (the parent's
//! `cutime`/`cstime`, once reaped), so the difference of two snapshots is
//! the time spent between them. The machine should be quiet: whatever
//! else a server does in the meantime counts too.
//!
//! Each snapshot also counts the context switches of the process's threads
//! and its live children's (a switch of a child that exited is lost with
//! it; PostgreSQL's pooled backends live through a run). On a machine
//! whose speed drifts, switches per order move far less than CPU time per
//! order: they count wake-ups, not how long each took.

use std::collections::{BTreeMap, HashMap, HashSet};

use procfs::process::{FDTarget, Process};
use serde::{Deserialize, Serialize};

/// CPU seconds per watched process, with when they were read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuSnapshot {
    /// Seconds since the epoch.
    pub at: f64,
    /// User + system seconds of each watched process and its children.
    pub seconds: BTreeMap<String, f64>,
    /// Context switches (voluntary and not) of each watched process's
    /// threads and its live children's.
    #[serde(default)]
    pub switches: BTreeMap<String, u64>,
}

impl CpuSnapshot {
    /// Reads every process of `watched` (a name and the port it listens
    /// on); one not found is left out.
    pub fn take(watched: &[(String, u16)]) -> anyhow::Result<Self> {
        Watch::new(watched)?.snapshot()
    }

    /// Seconds each process used from `before` to this snapshot.
    pub fn since(&self, before: &CpuSnapshot) -> BTreeMap<String, f64> {
        self.seconds
            .iter()
            .filter_map(|(name, after)| Some((name.clone(), after - before.seconds.get(name)?)))
            .collect()
    }

    /// Context switches each process made from `before` to this snapshot
    /// (none for a snapshot that did not count them).
    pub fn switches_since(&self, before: &CpuSnapshot) -> BTreeMap<String, u64> {
        self.switches
            .iter()
            .filter_map(|(name, after)| {
                Some((
                    name.clone(),
                    after.saturating_sub(*before.switches.get(name)?),
                ))
            })
            .collect()
    }
}

/// Processes found once by their ports, then read as often as needed (a
/// ramp reads them at every step: finding them walks every process's open
/// files, reading them does not).
pub struct Watch {
    pids: Vec<(String, i32)>,
}

impl Watch {
    pub fn new(watched: &[(String, u16)]) -> anyhow::Result<Self> {
        let listeners = listening_pids(watched.iter().map(|(_, port)| *port).collect())?;
        Ok(Watch {
            pids: watched
                .iter()
                .filter_map(|(name, port)| Some((name.clone(), *listeners.get(port)?)))
                .collect(),
        })
    }

    /// The name and pid of each process found.
    pub fn pids(&self) -> &[(String, i32)] {
        &self.pids
    }

    pub fn snapshot(&self) -> anyhow::Result<CpuSnapshot> {
        let ticks = procfs::ticks_per_second() as f64;
        let mut seconds = BTreeMap::new();
        let mut switches = BTreeMap::new();
        // Several processes of one name (the nodes of a database
        // cluster) add up.
        for (name, pid) in &self.pids {
            let usage = tree_usage(*pid)?;
            *seconds.entry(name.clone()).or_default() += usage.ticks as f64 / ticks;
            *switches.entry(name.clone()).or_default() += usage.switches;
        }
        Ok(CpuSnapshot {
            at: time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9,
            seconds,
            switches,
        })
    }
}

/// This process's own CPU seconds so far.
pub fn own_seconds() -> anyhow::Result<f64> {
    let stat = Process::myself()?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// What a process and its children used so far.
struct Usage {
    /// User and system ticks of the process, of its children that exited,
    /// and of its live children.
    ticks: u64,
    /// Context switches of the threads of the process and of its live
    /// children.
    switches: u64,
}

/// What `pid` and its children used so far.
fn tree_usage(pid: i32) -> anyhow::Result<Usage> {
    let process = Process::new(pid)?;
    let stat = process.stat()?;
    let mut usage = Usage {
        ticks: stat.utime + stat.stime + (stat.cutime + stat.cstime).max(0) as u64,
        switches: thread_switches(&process),
    };
    for process in procfs::process::all_processes()?.flatten() {
        // A process gone since the listing is simply not counted.
        let Ok(child) = process.stat() else { continue };
        if child.ppid == pid {
            usage.ticks += child.utime + child.stime;
            usage.switches += thread_switches(&process);
        }
    }
    Ok(usage)
}

/// Context switches of every thread of `process` (a thread gone since the
/// listing is not counted).
fn thread_switches(process: &Process) -> u64 {
    let Ok(tasks) = process.tasks() else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| task.status().ok())
        .map(|status| {
            status.voluntary_ctxt_switches.unwrap_or(0)
                + status.nonvoluntary_ctxt_switches.unwrap_or(0)
        })
        .sum()
}

/// The process listening on each of `ports` (TCP, IPv4 or IPv6).
fn listening_pids(ports: HashSet<u16>) -> anyhow::Result<HashMap<u16, i32>> {
    let mut inodes: HashMap<u64, u16> = HashMap::new();
    let entries = procfs::net::tcp()?
        .into_iter()
        .chain(procfs::net::tcp6().unwrap_or_default());
    for entry in entries {
        let port = entry.local_address.port();
        if entry.state == procfs::net::TcpState::Listen && ports.contains(&port) {
            inodes.insert(entry.inode, port);
        }
    }
    let mut pids = HashMap::new();
    for process in procfs::process::all_processes()?.flatten() {
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            let FDTarget::Socket(inode) = fd.target else {
                continue;
            };
            if let Some(port) = inodes.get(&inode) {
                pids.entry(*port).or_insert(process.pid);
            }
        }
    }
    Ok(pids)
}

/// The processes a load run watches, from the settings the services read:
/// `ORDER_PORT`, `PRODUCT_PORT`, and the ports of `ORDER_DATABASE_URL`
/// (every host of a multi-host URL: a cluster's standbys work for each
/// commit too), `AMQP_URL` (its first broker) and `REDIS_URL`; and, as
/// `failover`, the processes listening on `FAILOVER_PORTS` (a comma list:
/// the Patroni agents' REST ports and etcd's, 8441,8442,8443,2479 for
/// `make pg-cluster`).
pub fn pipeline_processes() -> Vec<(String, u16)> {
    let port_of = |name: &str, default: u16| {
        std::env::var(name)
            .ok()
            .and_then(|url| url_port(&url))
            .unwrap_or(default)
    };
    let setting = |name: &str, default: u16| {
        std::env::var(name)
            .ok()
            .and_then(|port| port.parse().ok())
            .unwrap_or(default)
    };
    let mut watched = vec![
        ("order".into(), setting("ORDER_PORT", 8080)),
        ("product".into(), setting("PRODUCT_PORT", 3000)),
    ];
    let database = std::env::var("ORDER_DATABASE_URL").unwrap_or_default();
    watched.extend(
        database_ports(&database)
            .into_iter()
            .map(|port| ("postgres".to_owned(), port)),
    );
    watched.push(("rabbitmq".into(), port_of("AMQP_URL", 5672)));
    watched.push(("redis".into(), port_of("REDIS_URL", 6379)));
    let failover = std::env::var("FAILOVER_PORTS").unwrap_or_default();
    watched.extend(
        failover
            .split(',')
            .filter_map(|port| port.trim().parse().ok())
            .map(|port| ("failover".to_owned(), port)),
    );
    watched
}

/// The port of every host a PostgreSQL URL lists (5432 where it names
/// none, or for a URL that does not parse).
fn database_ports(url: &str) -> Vec<u16> {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return vec![5432];
    };
    let ports = config.get_ports();
    let mut listed: Vec<u16> = (0..config.get_hosts().len().max(1))
        .map(|index| ports.get(index).or(ports.first()).copied().unwrap_or(5432))
        .collect();
    listed.dedup();
    listed
}

/// The port of a URL's (first) server, if it names one.
fn url_port(url: &str) -> Option<u16> {
    let first = url.split(',').next()?;
    let rest = first.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_port = rest.split(['/', '?']).next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_urls() {
        assert_eq!(
            url_port("postgres://postgres@127.0.0.1:5433/orders"),
            Some(5433)
        );
        assert_eq!(
            url_port("amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f"),
            Some(5681)
        );
        assert_eq!(url_port("redis://127.0.0.1"), None);
        assert_eq!(
            database_ports(
                "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442,127.0.0.1:5443/orders\
                 ?target_session_attrs=read-write"
            ),
            vec![5441, 5442, 5443]
        );
        assert_eq!(
            database_ports("postgres://postgres@127.0.0.1/orders"),
            vec![5432]
        );
    }

    #[test]
    fn this_test_finds_its_own_listener_and_counts_its_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let watched = [("me".to_owned(), port)];
        let before = CpuSnapshot::take(&watched).unwrap();
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(busy.elapsed());
        }
        // Each sleep gives up the core: a voluntary switch of this thread.
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let snapshot = CpuSnapshot::take(&watched).unwrap();
        let seconds = snapshot.seconds["me"];
        assert!(seconds >= own_seconds().unwrap() - 0.02, "{seconds}");
        assert!(snapshot.switches_since(&before)["me"] >= 5);
    }
}
