//! podnet's IPAM: addresses for pods from host-local style range sets.
//!
//! One address per range set per attachment (`CNI_CONTAINERID`, `CNI_IFNAME`),
//! never the same address to two live attachments: allocation is a locked,
//! atomic read-modify-write of the network's state (see [`store`]). Each
//! allocation records its network namespace's path and inode, so addresses
//! leaked by a crash or reboot are reclaimed safely: by GC, and, when a range
//! set is exhausted, by releasing only allocations whose namespace verifiably
//! no longer exists.

pub mod error;
pub mod range;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use error::IpamError;
pub use range::{validate_range_sets, Range, RangeSet};
pub use store::Allocation;
use store::{LockedStore, State};

/// Default directory of the IPAM's state (the plugin's `ipam.dataDir`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/podnet/ipam";

/// Who is asking for addresses: the CNI attachment and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns_path: String,
    /// Device and inode of the namespace (from `stat`).
    pub netns_id: Option<(u64, u64)>,
}

/// The IPAM of one network.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    ranges: Vec<RangeSet>,
    reserved: HashSet<IpAddr>,
}

/// How an allocation's namespace looks now.
fn namespace_gone(a: &Allocation) -> bool {
    let Some(recorded) = a.netns_id else {
        return false;
    };
    match namespace_id(Path::new(&a.netns_path)) {
        None => true,
        Some(now) => now != recorded,
    }
}

/// Device and inode of the file at `path`, or `None` when it does not exist.
pub fn namespace_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    Some((md.dev(), md.ino()))
}

impl Ipam {
    /// The IPAM of `network`, keeping its state under `data_dir/network`.
    pub fn new(
        data_dir: &Path,
        network: &str,
        ranges: Vec<RangeSet>,
        reserved: Vec<IpAddr>,
    ) -> Result<Self, IpamError> {
        validate_range_sets(&ranges)?;
        if network.is_empty() || network.contains('/') || network.starts_with('.') {
            return Err(IpamError::Config(format!(
                "network name {network:?} cannot name a directory"
            )));
        }
        Ok(Ipam {
            dir: data_dir.join(network),
            ranges,
            reserved: reserved.into_iter().collect(),
        })
    }

    /// The IPAM of `network` over whole `blocks`, one range set each (as the
    /// node agent writes the CNI config), to read what it holds.
    pub fn of_blocks(
        data_dir: &Path,
        network: &str,
        blocks: &[ipnet::IpNet],
    ) -> Result<Self, IpamError> {
        let ranges = blocks
            .iter()
            .map(|b| {
                vec![Range {
                    subnet: *b,
                    range_start: None,
                    range_end: None,
                    gateway: None,
                }]
            })
            .collect();
        Ipam::new(data_dir, network, ranges, Vec::new())
    }

    /// The range sets this IPAM allocates from.
    pub fn ranges(&self) -> &[RangeSet] {
        &self.ranges
    }

    /// One address per range set for `who`; returns the existing ones if it already has them.
    pub fn allocate(&self, who: &Attachment) -> Result<Vec<Allocation>, IpamError> {
        let store = LockedStore::lock(&self.dir)?;
        let mut state = store.read()?;
        state.last_allocated.resize(self.ranges.len(), None);
        let mine: Vec<Allocation> = state
            .allocations
            .iter()
            .filter(|a| a.container_id == who.container_id && a.ifname == who.ifname)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for set in 0..self.ranges.len() {
            if let Some(existing) = mine
                .iter()
                .find(|a| a.range_set == set && self.in_set(set, a.ip))
            {
                out.push(existing.clone());
                continue;
            }
            let ip = match self.next_free(set, &state) {
                Some(ip) => ip,
                None => {
                    // Exhausted: release what belongs to namespaces that are verifiably gone.
                    state
                        .allocations
                        .retain(|a| a.range_set != set || !namespace_gone(a));
                    self.next_free(set, &state)
                        .ok_or_else(|| IpamError::Exhausted(self.describe(set)))?
                }
            };
            let alloc = Allocation {
                ip,
                range_set: set,
                container_id: who.container_id.clone(),
                ifname: who.ifname.clone(),
                netns_path: who.netns_path.clone(),
                netns_id: who.netns_id,
            };
            state.last_allocated[set] = Some(ip);
            state.allocations.push(alloc.clone());
            out.push(alloc);
        }
        store.write(&mut state)?;
        Ok(out)
    }

    /// The addresses `container_id`/`ifname` holds.
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Result<Vec<Allocation>, IpamError> {
        Ok(self
            .allocations()?
            .into_iter()
            .filter(|a| a.container_id == container_id && a.ifname == ifname)
            .collect())
    }

    /// Every live allocation of the network.
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        let store = LockedStore::lock(&self.dir)?;
        Ok(store.read()?.allocations)
    }

    /// Releases what `container_id`/`ifname` holds; releasing nothing is not an error.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Allocation>, IpamError> {
        self.release_where(|a| a.container_id == container_id && a.ifname == ifname)
    }

    /// Releases every allocation whose attachment is not in `valid` (CNI GC).
    pub fn gc(&self, valid: &[(String, String)]) -> Result<Vec<Allocation>, IpamError> {
        let valid: HashSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        self.release_where(|a| !valid.contains(&(a.container_id.as_str(), a.ifname.as_str())))
    }

    /// Free addresses left in each range set (capped at `u64::MAX`), for STATUS.
    pub fn free_counts(&self) -> Result<Vec<u128>, IpamError> {
        let used = self.allocations()?;
        Ok((0..self.ranges.len())
            .map(|set| {
                let total: u128 = self.ranges[set]
                    .iter()
                    .map(|r| r.bounds().1 - r.bounds().0 + 1)
                    .sum();
                let taken = used.iter().filter(|a| a.range_set == set).count() as u128;
                total.saturating_sub(taken + self.ranges[set].len() as u128)
            })
            .collect())
    }

    fn release_where(
        &self,
        mut doomed: impl FnMut(&Allocation) -> bool,
    ) -> Result<Vec<Allocation>, IpamError> {
        let store = LockedStore::lock(&self.dir)?;
        let mut state = store.read()?;
        let (gone, kept): (Vec<_>, Vec<_>) = state.allocations.drain(..).partition(|a| doomed(a));
        state.allocations = kept;
        if !gone.is_empty() {
            store.write(&mut state)?;
        }
        Ok(gone)
    }

    fn in_set(&self, set: usize, ip: IpAddr) -> bool {
        self.ranges[set].iter().any(|r| r.allocatable(ip))
    }

    /// The next free address of range set `set` after the last one handed out (round robin).
    fn next_free(&self, set: usize, state: &State) -> Option<IpAddr> {
        let used: HashSet<IpAddr> = state.allocations.iter().map(|a| a.ip).collect();
        let ranges = &self.ranges[set];
        let last = state.last_allocated.get(set).copied().flatten();
        // Start in the range holding the last address, right after it.
        let start_idx = last
            .and_then(|ip| ranges.iter().position(|r| r.subnet.contains(&ip)))
            .unwrap_or(0);
        for step in 0..=ranges.len() {
            let idx = (start_idx + step) % ranges.len();
            let range = &ranges[idx];
            let (lo, hi) = range.bounds();
            let resume = match last {
                Some(ip) if idx == start_idx && range.subnet.contains(&ip) => {
                    range::to_u128(ip).saturating_add(1)
                }
                _ => lo,
            };
            // On the last pass, cover the part of the first range before `resume`.
            let (from, to) = if step == ranges.len() {
                (lo, resume.saturating_sub(1).min(hi))
            } else {
                (resume, hi)
            };
            let mut n = from;
            while n <= to && n >= lo {
                let ip = range::from_u128(n, range.subnet.addr());
                if range.allocatable(ip) && !used.contains(&ip) && !self.reserved.contains(&ip) {
                    return Some(ip);
                }
                match n.checked_add(1) {
                    Some(next) => n = next,
                    None => break,
                }
            }
            if step == ranges.len() {
                break;
            }
        }
        None
    }

    fn describe(&self, set: usize) -> String {
        self.ranges[set]
            .iter()
            .map(|r| r.subnet.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests;
