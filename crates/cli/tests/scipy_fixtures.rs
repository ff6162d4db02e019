//! pinnersage's Ward clustering against scipy on the committed fixtures
//! (`scripts/make_scipy_fixtures.py` documents how they were made).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pinnersage_catalog::npy;
use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scipy")
}

struct Case {
    name: String,
    x: npy::MatrixF32,
    /// scipy linkage with squared heights, n-1 rows of [left, right, height, size].
    z: Vec<[f64; 4]>,
    alphas: Vec<f64>,
    /// One fcluster labelling per alpha.
    labels: Vec<Vec<i64>>,
}

fn load_cases() -> Vec<Case> {
    let dir = fixture_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let f = e.ok()?.file_name().into_string().ok()?;
            f.strip_suffix(".X.npy").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the committed fixtures, found {names:?}"
    );
    names
        .into_iter()
        .map(|name| {
            let read = |suffix: &str| npy::read(dir.join(format!("{name}.{suffix}.npy"))).unwrap();
            let x = read("X").into_f32_matrix().unwrap();
            let z = read("Z")
                .to_f64_vec()
                .chunks_exact(4)
                .map(|r| [r[0], r[1], r[2], r[3]])
                .collect();
            let alphas = read("alphas").to_f64_vec();
            let flat: Vec<i64> = read("labels")
                .to_f64_vec()
                .iter()
                .map(|&v| v as i64)
                .collect();
            let labels = flat.chunks_exact(x.rows).map(<[i64]>::to_vec).collect();
            Case {
                name,
                x,
                z,
                alphas,
                labels,
            }
        })
        .collect()
}

/// Relabels so that labels appear in order of first occurrence: equal partitions compare equal.
fn canonical<T: std::hash::Hash + Eq + Copy>(labels: &[T]) -> Vec<usize> {
    let mut seen = HashMap::new();
    labels
        .iter()
        .map(|l| {
            let next = seen.len();
            *seen.entry(*l).or_insert(next)
        })
        .collect()
}

fn labels_of(clusters: &[Vec<usize>], m: usize) -> Vec<usize> {
    let mut labels = vec![usize::MAX; m];
    for (k, c) in clusters.iter().enumerate() {
        for &i in c {
            assert_eq!(labels[i], usize::MAX, "row {i} in two clusters");
            labels[i] = k;
        }
    }
    assert!(!labels.contains(&usize::MAX), "a row is in no cluster");
    labels
}

/// Every merge of a linkage as (the set of rows it joins, its height), sorted by the set. Merges
/// with nearly equal heights may be listed in either order; the sets they form may not differ.
fn merged_sets(
    n: usize,
    rows: impl Iterator<Item = (usize, usize, f64)>,
) -> Vec<(Vec<usize>, f64)> {
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut out = Vec::new();
    for (left, right, height) in rows {
        let mut set = [members[left].clone(), members[right].clone()].concat();
        set.sort_unstable();
        members.push(set.clone());
        out.push((set, height));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn linkage_matches_scipy() {
    for case in load_cases() {
        let x = Embeddings::new(&case.x.data, case.x.cols).unwrap();
        let ours = Clusterer::new(ProfileParams::default())
            .unwrap()
            .dendrogram(x)
            .linkage();
        assert_eq!(ours.len(), case.z.len(), "{}", case.name);
        for (t, o) in ours.iter().enumerate() {
            assert!(
                o.left < o.right && o.right < case.x.rows + t,
                "{} merge {t}",
                case.name
            );
        }
        let n = case.x.rows;
        let ours = merged_sets(n, ours.iter().map(|r| (r.left, r.right, r.height)));
        let theirs = merged_sets(
            n,
            case.z.iter().map(|r| (r[0] as usize, r[1] as usize, r[2])),
        );
        let scale = case.z.last().map_or(1.0, |r| r[2]);
        for ((our_set, our_h), (their_set, their_h)) in ours.iter().zip(&theirs) {
            assert_eq!(
                our_set, their_set,
                "{}: a merge differs from scipy",
                case.name
            );
            let tol = 1e-5 * their_h.abs() + 1e-9 * scale;
            assert!(
                (our_h - their_h).abs() <= tol,
                "{} merge of {} rows: height {our_h} vs scipy {their_h}",
                case.name,
                our_set.len()
            );
        }
    }
}

#[test]
fn partitions_match_scipy_fcluster() {
    for case in load_cases() {
        let m = case.x.rows;
        let x = Embeddings::new(&case.x.data, case.x.cols).unwrap();
        let times = vec![0i64; m];
        let actions = Actions::new(x, &times, None).unwrap();
        for (alpha, expected) in case.alphas.iter().zip(&case.labels) {
            let params = ProfileParams {
                alpha: *alpha,
                max_actions: m,
                ..Default::default()
            };
            let mut clusterer = Clusterer::new(params).unwrap();
            let cut = clusterer.dendrogram(x).cut(*alpha);
            assert_eq!(
                canonical(&labels_of(&cut, m)),
                canonical(expected),
                "{} alpha {alpha}",
                case.name
            );
            let profile = clusterer.profile(&actions, 0).unwrap();
            let members: Vec<Vec<usize>> =
                profile.clusters.iter().map(|c| c.members.clone()).collect();
            assert_eq!(
                canonical(&labels_of(&members, m)),
                canonical(expected),
                "{} alpha {alpha} (profile)",
                case.name
            );
        }
    }
}
