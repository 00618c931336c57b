//! Bounds on what clients can make the gateway hold *before* they have authenticated, so that
//! memory under any flood of unauthenticated traffic is bounded by design (see the security
//! section of `docs/GATEWAY.md` for the arithmetic).
//!
//! - [`HEAD_BUFFER`]: the longest request head (a larger one is answered `431` and the
//!   connection closed); the server's read buffer exists only while a request arrives.
//! - [`AddressLimiter`]: at most N open connections per source address (IPv6: per /64).
//! - [`BodyBudget`]: a global budget of request-body bytes buffered before the signature is
//!   checked; a request that does not fit gets `503` + `Retry-After` without being read.
//! - [`default_max_connections`]: `--max-connections` derived from the memory the gateway is
//!   given (`--memory-limit`, else the cgroup limit), then bounded by the descriptor limit
//!   ([`descriptor_bound`], [`open_file_limit`]).
//! - [`AcceptErrors`]: accept failures (e.g. `EMFILE` past the descriptor limit) back off
//!   exponentially and are logged once per interval with a count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_backoff::Exponential;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The longest request head ([`crate::server`]): its read buffer is taken when a request
/// starts arriving, at [`crate::server::INITIAL_READ_BUFFER`] (agents' request heads are well
/// under 2 KiB), grows up to this, and is freed once the request is read.
pub const HEAD_BUFFER: usize = 8 * 1024;
/// Most header fields in a request head (agents send about ten).
pub const MAX_HEADERS: usize = 32;
/// Memory budgeted per open connection, user space and kernel, sized for the worst case, an
/// unauthenticated connection holding a full head buffer: `tests/flood.rs` measures about
/// 10.5 KB of RSS for one holding a 7 KiB head (8 KiB at most, [`HEAD_BUFFER`]); the kernel
/// adds about 3.7 KiB per TCP socket (socket, inode, file, epoll entry; queues empty while
/// idle). An agent's connections cost far less (release build, `examples/footprint.rs`: about
/// 3.4 KiB of RSS for a held long poll, 1.9 KiB for an idle keep-alive connection). So 16 KiB
/// per connection (docs/GATEWAY.md, "Memory per device").
pub const CONNECTION_COST: u64 = 16 * 1024;
/// Share of the memory limit given to connections (the rest holds the per-device caches,
/// the replay cache and the unauthenticated body budget).
pub const CONNECTION_SHARE_PERCENT: u64 = 50;
/// `--max-connections` when no memory limit is known.
pub const UNLIMITED_MAX_CONNECTIONS: usize = 150_000;
/// Default `--max-connections-per-address`.
pub const DEFAULT_PER_ADDRESS: usize = 1024;
/// Default `--unauthenticated-body-budget` (bytes).
pub const DEFAULT_BODY_BUDGET: usize = 16 * 1024 * 1024;
/// Open connections of the metrics listener (probes and scrapers are few).
pub const METRICS_MAX_CONNECTIONS: usize = 256;
/// Open connections of the metrics listener per source address.
pub const METRICS_PER_ADDRESS: usize = 64;
/// Open connections of the peer listener (`--peer-addr`): replicas are few, each sends a few
/// batches at once, and at most [`crate::forward::MAX_INFLIGHT`] bodies are read at once.
pub const PEER_MAX_CONNECTIONS: usize = 256;
/// Open connections of the peer listener per source address (one replica).
pub const PEER_PER_ADDRESS: usize = 64;
/// How often repeated accept errors are logged (with a count).
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `--max-connections` for a memory limit in bytes: connections get
/// [`CONNECTION_SHARE_PERCENT`] of it at [`CONNECTION_COST`] each; without a limit,
/// [`UNLIMITED_MAX_CONNECTIONS`].
pub fn default_max_connections(memory_limit: Option<u64>) -> usize {
    match memory_limit {
        Some(limit) => {
            let n = limit / 100 * CONNECTION_SHARE_PERCENT / CONNECTION_COST;
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .clamp(64, UNLIMITED_MAX_CONNECTIONS)
        }
        None => UNLIMITED_MAX_CONNECTIONS,
    }
}

/// The memory limit of the process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`); `None` when unlimited or unknown.
pub fn cgroup_memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let v2 = read("/sys/fs/cgroup/memory.max");
    let text = v2.or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    let n: u64 = text.trim().parse().ok()?;
    // cgroup v1 says "unlimited" with a huge number.
    (n < (1 << 60)).then_some(n)
}

/// Descriptors `--max-connections` leaves to everything else when it follows the descriptor
/// limit: the metrics and peer listeners' connections ([`METRICS_MAX_CONNECTIONS`],
/// [`PEER_MAX_CONNECTIONS`]), the listeners, the API client's connections, the key and
/// revocation files, the runtime's epoll and wake-up descriptors.
pub const RESERVED_DESCRIPTORS: u64 = (METRICS_MAX_CONNECTIONS + PEER_MAX_CONNECTIONS) as u64 + 128;

/// Fewest connections a descriptor-bound default allows (as with the memory-bound default).
const MIN_MAX_CONNECTIONS: usize = 64;

/// The default `--max-connections` under the soft `RLIMIT_NOFILE` (`None`: unknown or
/// unlimited): `default`, but at most the limit less [`RESERVED_DESCRIPTORS`] (and at least
/// 64), so connections past it wait in the accept backlog instead of failing `accept` with
/// `EMFILE`.
pub fn descriptor_bound(default: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED_DESCRIPTORS);
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            default.min(room.max(MIN_MAX_CONNECTIONS))
        }
        None => default,
    }
}

/// The soft `RLIMIT_NOFILE` of this process; `None` when unlimited.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Parses a memory quantity: plain bytes or a Kubernetes binary/decimal suffix
/// (`Ki Mi Gi Ti`, `k M G T`).
pub fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mul).filter(|n| *n > 0)
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (one host usually
/// holds a whole /64), IPv4-mapped IPv6 as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per source address.
#[derive(Debug)]
pub struct AddressLimiter {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address; released on drop.
#[derive(Debug)]
pub struct AddressPermit {
    limiter: Arc<AddressLimiter>,
    key: IpAddr,
}

impl AddressLimiter {
    /// At most `limit` connections per address.
    pub fn new(limit: usize) -> Arc<AddressLimiter> {
        Arc::new(AddressLimiter {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection from `ip`, or `None` when the address has its limit open.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressPermit> {
        let key = address_key(ip);
        let mut open = self.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressPermit {
            limiter: self.clone(),
            key,
        })
    }

    /// Open connections from `ip`'s address key.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut open = self.limiter.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The global budget of body bytes held by requests not yet authenticated.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    /// A budget of `bytes` (at least one largest request body).
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Reserves `n` bytes, or `None` when the budget is spent (never waits).
    pub fn try_take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        self.bytes.clone().try_acquire_many_owned(n).ok()
    }

    /// Bytes currently free.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// The wait after a failed accept: 10 ms doubling to 1 s per consecutive failure.
const ACCEPT_BACKOFF: Exponential =
    Exponential::new(Duration::from_millis(10), Duration::from_secs(1));

/// Backoff and rate-limited logging of accept errors.
#[derive(Debug)]
pub struct AcceptErrors {
    interval: Duration,
    failures: u32,
    suppressed: u64,
    last_log: Option<Instant>,
}

impl AcceptErrors {
    /// Logs at most once per `interval`.
    pub fn new(interval: Duration) -> AcceptErrors {
        AcceptErrors {
            interval,
            failures: 0,
            suppressed: 0,
            last_log: None,
        }
    }

    /// Records a failure; returns how long to wait before accepting again (10 ms doubling
    /// to 1 s). Logs the first failure of an interval with the count of those since the
    /// last line.
    pub fn failed(&mut self, error: &std::io::Error, now: Instant) -> Duration {
        let delay = ACCEPT_BACKOFF.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.suppressed += 1;
        if self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval)
        {
            tracing::warn!(
                error = %error,
                count = self.suppressed,
                "accept failed ({} time(s) since the last such line); backing off",
                self.suppressed
            );
            self.suppressed = 0;
            self.last_log = Some(now);
        }
        delay
    }

    /// An accept succeeded: the backoff starts over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures not yet logged.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_from_memory() {
        // 1 GiB: half for connections at 16 KiB each.
        assert_eq!(default_max_connections(Some(1 << 30)), 32_767);
        assert_eq!(default_max_connections(None), UNLIMITED_MAX_CONNECTIONS);
        assert_eq!(default_max_connections(Some(1)), 64);
        assert_eq!(
            default_max_connections(Some(u64::MAX)),
            UNLIMITED_MAX_CONNECTIONS
        );
    }

    #[test]
    fn max_connections_from_descriptors() {
        // Unknown or unlimited: the memory-bound default as is.
        assert_eq!(descriptor_bound(150_000, None), 150_000);
        // A high soft limit leaves the default as is; a lower one: the limit less the reserve.
        assert_eq!(descriptor_bound(150_000, Some(1_048_576)), 150_000);
        assert_eq!(
            descriptor_bound(150_000, Some(20_000)),
            20_000 - RESERVED_DESCRIPTORS as usize
        );
        // The memory bound is lower: it stays.
        assert_eq!(descriptor_bound(21_845, Some(1_048_576)), 21_845);
        // A limit at or under the reserve still allows a few connections.
        assert_eq!(descriptor_bound(150_000, Some(1_024)), 1_024 - 640);
        assert_eq!(descriptor_bound(150_000, Some(100)), 64);
        assert_eq!(descriptor_bound(10, Some(100)), 10);
        assert_eq!(descriptor_bound(150_000, Some(0)), 64);
        assert_eq!(descriptor_bound(150_000, Some(u64::MAX)), 150_000);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("1Gi"), Some(1 << 30));
        assert_eq!(parse_memory("512Mi"), Some(512 << 20));
        assert_eq!(parse_memory("1073741824"), Some(1 << 30));
        assert_eq!(parse_memory("2G"), Some(2_000_000_000));
        for bad in ["", "Gi", "1Xi", "-1", "0", "99999999999999999999Ti"] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }

    #[test]
    fn per_address() {
        let l = AddressLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        assert!(l.try_acquire(b).is_some());
        drop(p1);
        assert!(l.try_acquire(a).is_some());
        // One /64 is one address; the IPv4-mapped form is the IPv4 address.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _q1 = l.try_acquire(v6a).unwrap();
        let _q2 = l.try_acquire(v6b).unwrap();
        assert!(l.try_acquire(v6a).is_none());
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(l.open(mapped), 0);
        let _m = l.try_acquire(mapped).unwrap();
        assert_eq!(l.open(b), 1);
    }

    #[test]
    fn body_budget() {
        let b = BodyBudget::new(100);
        let p = b.try_take(60).unwrap();
        assert!(b.try_take(60).is_none());
        drop(p);
        assert!(b.try_take(100).is_some());
        assert!(b.try_take(usize::MAX).is_none());
    }

    #[tokio::test]
    async fn accept_errors_back_off_and_log_once_per_interval() {
        let mut a = AcceptErrors::new(Duration::from_secs(10));
        let e = std::io::Error::other("too many open files");
        let t0 = Instant::now();
        assert_eq!(a.failed(&e, t0), Duration::from_millis(10));
        assert_eq!(a.suppressed(), 0, "the first failure is logged");
        let mut last = Duration::ZERO;
        for i in 1..50 {
            last = a.failed(&e, t0 + Duration::from_millis(i));
        }
        assert_eq!(last, Duration::from_secs(1));
        assert_eq!(a.suppressed(), 49, "counted, not logged");
        a.failed(&e, t0 + Duration::from_secs(11));
        assert_eq!(a.suppressed(), 0, "logged with the count");
        a.succeeded();
        assert_eq!(
            a.failed(&e, t0 + Duration::from_secs(12)),
            Duration::from_millis(10)
        );
    }
}
