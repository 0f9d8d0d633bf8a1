//! IPAM: IP pools (`PoolRange::of`) and the free-list allocator (`FreeList`) the stores
//! persist, driven by a sequence of operations and checked against a model (the set of
//! offsets held).
//!
//! Properties:
//! - `PoolRange::of` never panics; for a pool it accepts: the range starts at the pool's first
//!   address and has its size (saturated at `u64::MAX`), the reserved offsets are the
//!   gateway's, `address` and `offset` are inverse over the range;
//! - an allocated address is inside the pool's bounds (and its network, for a pool
//!   validation accepts), is never the gateway, and is never handed out twice while held;
//! - allocation takes the lowest free offset (what `scan_first_free`, the baseline, finds);
//!   released offsets are reused; exhaustion (`None`) is reported exactly when the model says
//!   every offset is held or reserved;
//! - `take` succeeds exactly on a free offset, `release` exactly on a held one; `free()` is
//!   the model's count, and the free ranges stay sorted, disjoint, merged and in the range.
#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use spectro_core::ipam::{scan_first_free, FreeList, PoolRange};
use spectro_core::model::document::typed;
use spectro_core::model::IpPool;
use spectro_core::validate::validate_ip_pool;
use spectro_fuzz::check_violations;

#[derive(Arbitrary, Debug)]
enum Shape {
    /// `range` of `len + 1` addresses from `start`.
    Range { start: u128, len: u16 },
    /// `range` with any two ends.
    Wild { start: u128, end: u128 },
    /// `subnet`.
    Subnet { addr: u128, prefix: u8 },
}

#[derive(Arbitrary, Debug)]
enum Gateway {
    /// At an offset from the pool's first address.
    Offset(u16),
    /// The first address of the network.
    First,
    Raw(u128),
}

#[derive(Arbitrary, Debug)]
struct Pool {
    v6: bool,
    shape: Shape,
    prefix: u8,
    gateway: Gateway,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate,
    /// Release the i-th held offset.
    Release(u16),
    /// Release an offset that may or may not be held.
    ReleaseAny(u64),
    /// Take a given offset (the stores seed reserved offsets so).
    Take(u64),
    /// Allocate until the pool is full (bounded).
    Fill(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    pool: Pool,
    ops: Vec<Op>,
}

fn addr(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn build(p: &Pool) -> Option<IpPool> {
    let max = if p.v6 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    };
    let bits = if p.v6 { 128 } else { 32 };
    let mut v = json!({ "name": "pool", "gatewayName": "gw", "prefix": p.prefix });
    let first = match p.shape {
        Shape::Range { start, len } => {
            let start = start & max;
            let end = start.saturating_add(u128::from(len)).min(max);
            v["range"] = json!({ "start": addr(p.v6, start), "end": addr(p.v6, end) });
            start
        }
        Shape::Wild { start, end } => {
            v["range"] = json!({ "start": addr(p.v6, start & max), "end": addr(p.v6, end & max) });
            start & max
        }
        Shape::Subnet { addr: a, prefix } => {
            let prefix = u32::from(prefix) % (bits + 1);
            let mask = if prefix == 0 {
                0
            } else {
                max & !(max.checked_shr(prefix).unwrap_or(0))
            };
            let net = a & mask;
            v["subnet"] = json!(format!("{}/{prefix}", addr(p.v6, net)));
            net
        }
    };
    let gw = match p.gateway {
        Gateway::Offset(o) => first.saturating_add(u128::from(o)).min(max),
        Gateway::First => first,
        Gateway::Raw(r) => r & max,
    };
    v["gateway"] = json!(addr(p.v6, gw));
    typed::<IpPool>(v).ok()
}

/// The model: offsets held, reserved offsets, the range's size.
struct Model {
    size: u64,
    reserved: BTreeSet<u64>,
    held: BTreeSet<u64>,
}

impl Model {
    fn is_free(&self, o: u64) -> bool {
        o < self.size && !self.reserved.contains(&o) && !self.held.contains(&o)
    }

    fn lowest_free(&self) -> Option<u64> {
        // At most |reserved| + |held| offsets to skip.
        let mut o = 0u64;
        while o < self.size {
            if self.is_free(o) {
                return Some(o);
            }
            o += 1;
        }
        None
    }

    fn free(&self) -> u64 {
        self.size - self.reserved.len() as u64 - self.held.len() as u64
    }
}

fn check_free_list(fl: &FreeList, m: &Model) {
    assert_eq!(fl.free(), m.free(), "free() is the model's count");
    let mut prev: Option<u64> = None;
    for (s, e) in fl.ranges() {
        assert!(
            s <= e && e < m.size,
            "free range {s}..={e} in 0..{}",
            m.size
        );
        if let Some(p) = prev {
            assert!(
                s > p.saturating_add(1),
                "free ranges sorted, disjoint and merged"
            );
        }
        prev = Some(e);
    }
}

fuzz_target!(|input: Input| {
    let Some(pool) = build(&input.pool) else {
        return;
    };
    let violations = validate_ip_pool(&pool);
    check_violations("IpPool", &violations);
    let valid = violations.is_empty();

    let Some((first, last)) = pool.bounds() else {
        assert!(!valid, "a valid pool has bounds");
        return;
    };
    let (f, l) = (num(first), num(last));
    let Some(range) = PoolRange::of(&pool) else {
        assert!(!valid, "a valid pool has a range");
        return;
    };
    assert_eq!(
        range.first, f,
        "the range starts at the pool's first address"
    );
    assert!(l >= f);
    let span = (l - f).saturating_add(1);
    assert_eq!(
        u128::from(range.size),
        span.min(u128::from(u64::MAX)),
        "size"
    );
    assert_eq!(range.v6, first.is_ipv6());
    // A reserved offset is the gateway's, inside the (possibly saturated) size: in an IPv6
    // range of more than 2^64 - 1 addresses a gateway past it is not reserved (regression:
    // it was truncated to another address).
    for r in &range.reserved {
        assert!(*r < range.size, "reserved offset {r} in the range");
        assert_eq!(
            range.address(*r),
            pool.gateway,
            "the reserved offset is the gateway"
        );
    }
    if let Some(o) = range.offset(pool.gateway) {
        assert!(
            range.reserved.contains(&o),
            "the gateway is never handed out"
        );
    }
    for o in [0, range.size - 1, range.size / 2] {
        assert_eq!(
            range.offset(range.address(o)),
            Some(o),
            "offset(address({o}))"
        );
    }
    let top = if range.v6 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    };
    if let Some(past) = f.checked_add(u128::from(range.size)).filter(|p| *p <= top) {
        assert_eq!(
            range.offset(addr(range.v6, past)),
            None,
            "the address past the range"
        );
    }
    if f > 0 {
        assert_eq!(
            range.offset(addr(range.v6, f - 1)),
            None,
            "the address before the range"
        );
    }
    let network = pool.network();

    // The allocator, seeded as the stores seed it.
    let mut fl = FreeList::new(range.size);
    for r in &range.reserved {
        assert!(fl.take(*r), "a reserved offset is free to reserve");
    }
    assert_eq!(
        fl.ranges().collect::<Vec<_>>(),
        range.initial_free(),
        "initial_free"
    );
    let mut m = Model {
        size: range.size,
        reserved: range
            .reserved
            .iter()
            .copied()
            .filter(|r| *r < range.size)
            .collect(),
        held: BTreeSet::new(),
    };
    check_free_list(&fl, &m);

    let allocate = |fl: &mut FreeList, m: &mut Model| -> bool {
        let want = m.lowest_free();
        if m.size <= 256 {
            let held: Vec<u64> = m.held.iter().copied().collect();
            let reserved: Vec<u64> = m.reserved.iter().copied().collect();
            assert_eq!(
                scan_first_free(m.size, &held, &reserved),
                want,
                "the baseline agrees"
            );
        }
        let got = fl.take_lowest();
        assert_eq!(
            got, want,
            "allocation takes the lowest free offset (None: pool full)"
        );
        let Some(o) = got else {
            assert_eq!(m.free(), 0, "exhaustion only when the pool is full");
            return false;
        };
        let a = range.address(o);
        assert!(
            num(a) >= f && num(a) <= l,
            "{a} inside the pool's bounds {first}..={last}"
        );
        assert_ne!(a, pool.gateway, "the gateway is never handed out");
        if valid {
            if let Some(net) = network {
                assert!(net.contains(&a), "{a} inside the pool's network {net}");
            }
        }
        assert!(m.held.insert(o), "{a} handed out twice while held");
        true
    };

    for op in input.ops.iter().take(64) {
        match op {
            Op::Allocate => {
                allocate(&mut fl, &mut m);
            }
            Op::Fill(n) => {
                for _ in 0..=(*n % 64) {
                    if !allocate(&mut fl, &mut m) {
                        break;
                    }
                }
            }
            Op::Release(i) => {
                if m.held.is_empty() {
                    continue;
                }
                let o = *m
                    .held
                    .iter()
                    .nth(usize::from(*i) % m.held.len())
                    .expect("held");
                assert!(fl.release(o), "releasing a held offset");
                m.held.remove(&o);
                assert!(!fl.release(o), "a double release is refused");
                // Released: the lowest free again if nothing lower is free.
                assert!(
                    m.lowest_free().is_some_and(|w| w <= o),
                    "a released offset is reusable"
                );
            }
            Op::ReleaseAny(o) => {
                // Any offset of the range but a reserved one (releasing the gateway would be
                // the caller's mistake).
                let o = o % m.size;
                if !m.reserved.contains(&o) {
                    let held = m.held.remove(&o);
                    assert_eq!(
                        fl.release(o),
                        held,
                        "release({o}) succeeds exactly on a held offset"
                    );
                }
            }
            Op::Take(o) => {
                let o = o % m.size;
                let free = m.is_free(o);
                assert_eq!(
                    fl.take(o),
                    free,
                    "take({o}) succeeds exactly on a free offset"
                );
                if free {
                    m.held.insert(o);
                }
            }
        }
        check_free_list(&fl, &m);
    }
});
