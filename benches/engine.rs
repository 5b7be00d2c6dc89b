//! Engine and planner speed on a generated organisation of 100,000 identities, 500
//! policies and 5,000 exceptions. Run: `cargo bench --bench engine`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::engine::{Engine, NothingHeld, Settings};
use gatehouse::plan::{AccessState, plan};
use gatehouse::synthetic::{OrgSize, identity_yaml, snapshot};
use jiff::Timestamp;

const SIZE: OrgSize = OrgSize {
    identities: 100_000,
    policies: 500,
    exceptions: 5_000,
};

/// `cargo test --benches` runs each benchmark once as a smoke test: a small organisation will do.
const SMOKE: OrgSize = OrgSize {
    identities: 1_000,
    policies: 50,
    exceptions: 100,
};

fn benches(c: &mut Criterion) {
    let size = if std::env::args().any(|a| a == "--test") {
        SMOKE
    } else {
        SIZE
    };
    let now: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let base = snapshot(size, None);
    let moved = snapshot(size, Some(100));
    let mut group = c.benchmark_group("engine-100k");
    group.sample_size(10);

    let engine = Engine::new(&base, Settings::default());
    group.bench_function("evaluate (indexed snapshot)", |b| {
        b.iter(|| black_box(engine.evaluate(now, &NothingHeld)))
    });
    group.bench_function("index + evaluate", |b| {
        b.iter(|| black_box(Engine::new(&base, Settings::default()).evaluate(now, &NothingHeld)))
    });

    let mut live = engine.clone();
    let mut flip = 0usize;
    group.bench_function("re-evaluate one changed identity", |b| {
        b.iter(|| {
            flip += 1;
            let i = size.identities / 3;
            let identity = serde_yaml::from_str(&identity_yaml(i, flip % 2)).unwrap();
            let affected = live.upsert_identity(&identity);
            for key in &affected {
                black_box(live.evaluate_identity(key, now, &NothingHeld));
            }
        })
    });

    let before = AccessState::from_desired(&engine.evaluate(now, &NothingHeld));
    let after = Engine::new(&moved, Settings::default()).evaluate(now, &before);
    group.bench_function("plan diff of two 100k states (1% movers)", |b| {
        b.iter(|| black_box(plan(&before, &after)))
    });
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
