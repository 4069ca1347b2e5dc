//! The standard `process_*` metrics (CPU time, memory, file descriptors, start time), read from `/proc` at
//! each scrape, with the names every Prometheus client library uses, so that the usual dashboards and
//! alerts for a process work on sublet as they do on any other target.
//!
//! Read from `/proc/self` (Linux, where the controller runs); elsewhere the series are simply absent.

use prometheus::{Counter, Gauge, Opts, Registry};

/// `/proc` reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space on every ABI.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone)]
pub struct ProcessMetrics {
    cpu: Counter,
    resident: Gauge,
    virtual_bytes: Gauge,
    start: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMetrics {
    /// Registers the process metrics in `registry` (one without the `sublet_` prefix).
    pub fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| Gauge::with_opts(Opts::new(name, help)).expect("valid gauge");
        let m = Self {
            cpu: Counter::with_opts(Opts::new(
                "process_cpu_seconds_total",
                "User and system CPU time spent, in seconds",
            ))
            .expect("valid counter"),
            resident: gauge("process_resident_memory_bytes", "Resident memory size, in bytes"),
            virtual_bytes: gauge("process_virtual_memory_bytes", "Virtual memory size, in bytes"),
            start: gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
            ),
            open_fds: gauge("process_open_fds", "Open file descriptors"),
            max_fds: gauge("process_max_fds", "The limit of open file descriptors"),
        };
        for c in [
            Box::new(m.cpu.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.resident.clone()),
            Box::new(m.virtual_bytes.clone()),
            Box::new(m.start.clone()),
            Box::new(m.open_fds.clone()),
            Box::new(m.max_fds.clone()),
        ] {
            registry.register(c).expect("process metric names are unique");
        }
        m
    }

    /// Reads `/proc` into the metrics; what cannot be read keeps its last value.
    pub fn update(&self) {
        if let Some(stat) = read("/proc/self/stat").as_deref().and_then(Stat::parse) {
            let cpu = (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND;
            let delta = cpu - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            if let Some(boot) = read("/proc/stat").as_deref().and_then(boot_time) {
                self.start.set(boot as f64 + stat.starttime as f64 / TICKS_PER_SECOND);
            }
        }
        if let Some(status) = read("/proc/self/status") {
            if let Some(kb) = status_kb(&status, "VmRSS:") {
                self.resident.set(kb as f64 * 1024.0);
            }
            if let Some(kb) = status_kb(&status, "VmSize:") {
                self.virtual_bytes.set(kb as f64 * 1024.0);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as f64);
        }
        if let Some(limit) = read("/proc/self/limits").as_deref().and_then(max_open_files) {
            self.max_fds.set(limit as f64);
        }
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The fields of `/proc/self/stat` these metrics use.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

impl Stat {
    /// The command name (field 2) may hold spaces and parentheses: fields are counted after its last `)`.
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        // After the name come field 3 (state) onwards, so field n is at index n - 3.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
        })
    }
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    // The soft limit comes first; "unlimited" is no number to report.
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let text = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 12345 1000 200";
        assert_eq!(
            Stat::parse(text),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 12345
            })
        );
        assert_eq!(Stat::parse("42 (truncated"), None);
    }

    #[test]
    fn status_and_limits_lines() {
        let status = "Name:\tsublet\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kb(status, "VmSize:"), Some(123456));
        assert_eq!(status_kb(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1_700_000_000));
    }

    #[test]
    fn this_process_is_measured() {
        let registry = Registry::new();
        let m = ProcessMetrics::register(&registry);
        m.update();
        assert!(m.resident.get() > 0.0);
        assert!(m.open_fds.get() >= 1.0);
        assert!(m.start.get() > 1_600_000_000.0, "start time {}", m.start.get());
    }
}
