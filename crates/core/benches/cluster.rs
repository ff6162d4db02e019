//! Criterion benches: a full profile (distances + Ward + cut + medoids + importance), single
//! thread, for m actions of dimension d. Run: `cargo bench -p pinnersage-core`.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pinnersage_core::sample::SplitMix64;
use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};

/// L2-normalised rows drawn around 10 random topics, like real user histories.
fn synthetic(m: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut gauss = || {
        let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let topics: Vec<Vec<f32>> = (0..10).map(|_| (0..d).map(|_| gauss()).collect()).collect();
    let mut out = Vec::with_capacity(m * d);
    for i in 0..m {
        let t = &topics[i % topics.len()];
        let row: Vec<f32> = t.iter().map(|&c| c + 0.8 * gauss()).collect();
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        out.extend(row.iter().map(|v| v / norm));
    }
    out
}

fn bench_profile(c: &mut Criterion) {
    let mut group = c.benchmark_group("profile");
    for &d in &[64usize, 256] {
        for &m in &[20usize, 100, 500, 1000, 2000] {
            let data = synthetic(m, d, 42);
            let times: Vec<i64> = (0..m as i64).map(|i| i * 3_600).collect();
            let x = Embeddings::new(&data, d).unwrap();
            let actions = Actions::new(x, &times, None).unwrap();
            let mut clusterer = Clusterer::new(ProfileParams::default()).unwrap();
            group.throughput(Throughput::Elements(m as u64));
            group.bench_with_input(BenchmarkId::new(format!("d{d}"), m), &m, |b, _| {
                b.iter(|| clusterer.profile(&actions, m as i64 * 3_600).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_profile
}
criterion_main!(benches);
