//! IPAM: allocate + release one address on a /16 pool with 10,000 addresses in use.
//! - `free-list`: spectro's algorithm (ranges in a B-tree, O(log ranges));
//! - `scan`: the Cluster API in-cluster IPAM algorithm (list every address in use, scan from
//!   the start, O(addresses in use));
//! - `sqlite-store`: the persisted allocation (one transaction each) for scale.
//!
//! The in-use addresses are spread over the range (every 6th), so the scan has to walk
//! past them and the free-list is fragmented (10,000 ranges), the worst case for it.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use spectro::ipam::{scan_first_free, FreeList, PoolRange};
use spectro::store::{IpRequest, Store};
use spectro::{ClusterId, SqliteStore};

const SIZE: u64 = 65_534; // a /16 without network and broadcast
const IN_USE: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let used: Vec<u64> = (0..IN_USE).map(|i| i * 6).collect();
    let mut fl = FreeList::new(SIZE);
    for u in &used {
        fl.take(*u);
    }
    // A dense prefix (offsets 0..10,000 busy) is the scan's worst case: it walks all of them.
    let dense: Vec<u64> = (0..IN_USE).collect();
    let mut fl_dense = FreeList::new(SIZE);
    for u in &dense {
        fl_dense.take(*u);
    }
    let mut g = c.benchmark_group("ipam-slash16-10000-in-use");
    g.bench_function("free-list/fragmented", |b| {
        b.iter(|| {
            let o = fl.take_lowest().unwrap();
            fl.release(o);
            o
        })
    });
    g.bench_function("free-list/dense", |b| {
        b.iter(|| {
            let o = fl_dense.take_lowest().unwrap();
            fl_dense.release(o);
            o
        })
    });
    g.bench_function("scan/fragmented", |b| {
        b.iter(|| scan_first_free(SIZE, &used, &[]))
    });
    g.bench_function("scan/dense", |b| {
        b.iter(|| scan_first_free(SIZE, &dense, &[]))
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("ipam.db")).unwrap());
    let range = PoolRange {
        first: 0x0a00_0001,
        size: SIZE,
        v6: false,
        reserved: vec![],
    };
    let holder = ClusterId::new();
    let req = |owner: String| IpRequest {
        pool: "bench".into(),
        range: range.clone(),
        cluster: holder,
        owner,
        restrict_to_single_cluster: false,
        fence: None,
    };
    rt.block_on(async {
        for i in 0..IN_USE {
            store.allocate_ip(&req(format!("m{i}"))).await.unwrap();
        }
    });
    let mut i = 0u64;
    g.bench_function("sqlite-store/allocate+release", |b| {
        b.iter(|| {
            i += 1;
            let owner = format!("x{i}");
            rt.block_on(async {
                store.allocate_ip(&req(owner.clone())).await.unwrap();
                store
                    .release_ips(holder, Some(&[owner]), None)
                    .await
                    .unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
