//! The table's rules replayed over a [`Plan`] in plain code: what the kernel
//! will decide for a new flow through one node. Tests compare it with the
//! API's reference verdict ([`podnet_policy::World::allows`]); `explain`
//! can use it to say which set let a packet through.

use std::net::IpAddr;

use podnet_kernel::nftables::SetElement;

use crate::layout::{Dir, PeerKey, PortKey, SetId};
use crate::plan::{addr, in_range, Plan};

impl Plan {
    /// Whether this node's forward chain passes a new flow: the source's
    /// egress when it is an isolated local pod, the destination's ingress likewise.
    pub fn passes(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> bool {
        let v6 = dst.is_ipv6();
        let isolated = |dir, ip| {
            self.sets
                .get(&SetId::Isolated { dir, v6 })
                .is_some_and(|s| s.iter().any(|e| e.key == addr(ip)))
        };
        if isolated(Dir::Out, src) && !self.side(Dir::Out, src, dst, proto, port) {
            return false;
        }
        !isolated(Dir::In, dst) || self.side(Dir::In, dst, src, proto, port)
    }

    /// The `ingress4`/`egress4` chains: class lookup, class sets, then any-peer sets.
    fn side(&self, dir: Dir, local: IpAddr, peer: IpAddr, proto: u8, port: u16) -> bool {
        let v6 = local.is_ipv6();
        let class = self.class_of(peer);
        let keys = [PortKey::Port, PortKey::Proto, PortKey::All, PortKey::Range];
        let hit = |peer_key: PeerKey, class: Option<u32>| {
            keys.iter().any(|ports| {
                let set = SetId::Allow {
                    dir,
                    peer: peer_key,
                    ports: *ports,
                    v6,
                };
                let Some(elems) = self.sets.get(&set) else {
                    return false;
                };
                let key = key_of(local, class, *ports, proto, port);
                if *ports == PortKey::Range {
                    elems
                        .iter()
                        .any(|e| range_holds(e, &key, &set.spec().range_fields))
                } else {
                    elems.contains(&SetElement::new(key, None))
                }
            })
        };
        class.is_some_and(|c| hit(PeerKey::Class, Some(c))) || hit(PeerKey::Any, None)
    }

    /// `pod-class` first, then `net-class`, as the entry chain's rules go.
    fn class_of(&self, peer: IpAddr) -> Option<u32> {
        let v6 = peer.is_ipv6();
        let data = |e: &SetElement| {
            e.data
                .as_ref()
                .and_then(|d| <[u8; 4]>::try_from(d.as_slice()).ok())
                .map(u32::from_ne_bytes)
        };
        let key = addr(peer);
        if let Some(e) = self
            .sets
            .get(&SetId::PodClass { v6 })
            .and_then(|s| s.iter().find(|e| e.key == key))
        {
            return data(e);
        }
        self.sets
            .get(&SetId::NetClass { v6 })?
            .iter()
            .find(|e| in_range(e, peer))
            .and_then(data)
    }
}

fn key_of(local: IpAddr, class: Option<u32>, ports: PortKey, proto: u8, port: u16) -> Vec<u8> {
    let mut k = addr(local);
    if let Some(c) = class {
        k.extend_from_slice(&c.to_ne_bytes());
    }
    if ports != PortKey::All {
        k.extend_from_slice(&[proto, 0, 0, 0]);
    }
    if matches!(ports, PortKey::Port | PortKey::Range) {
        let b = port.to_be_bytes();
        k.extend_from_slice(&[b[0], b[1], 0, 0]);
    }
    k
}

/// Whether `key` lies inside a range element, field by field.
fn range_holds(e: &SetElement, key: &[u8], fields: &[u32]) -> bool {
    let Some(end) = &e.key_end else {
        return false;
    };
    let mut at = 0;
    for len in fields {
        let (len, padded) = (*len as usize, (*len as usize).div_ceil(4) * 4);
        let f = |b: &[u8]| b.get(at..at + len).map(<[u8]>::to_vec);
        match (f(&e.key), f(end), f(key)) {
            (Some(lo), Some(hi), Some(x)) if lo <= x && x <= hi => {}
            _ => return false,
        }
        at += padded;
    }
    true
}
