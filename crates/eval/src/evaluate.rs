//! Running every method over every user, with lifts and bootstrap confidence intervals.

use crate::error::EvalError;
use std::fmt::Write;

use pinnersage_core::blend::blend_shares;
use pinnersage_core::sample::SplitMix64;
use pinnersage_index::{AnnIndex, ExactIndex, Metric};
use rayon::prelude::*;
use serde::Serialize;

use crate::methods::{Method, UserQueries, queries};
use crate::metrics::{
    DIVERSITY_AT, NEGATIVES_PER_TEST_ITEM, RELEVANCE_COSINE, diversity, minority_items,
    r_precision, recall, reciprocal_rank, relevance,
};

/// How many candidates each method gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Budget {
    /// Every method gets the same number of distinct candidates: each query embedding's
    /// neighbour list is as long as the budget and the blend fills up to it, skipping
    /// duplicates, as the server builds its list.
    #[default]
    Equal,
    /// The paper's protocol: `floor(candidates / e)` neighbours per query embedding, overlaps
    /// dropped without refilling, so methods with several embeddings get fewer candidates.
    PerEmbedding,
}

/// The decay of the user average that [`minority_items`] measures distance from.
const MINORITY_LAMBDA: f64 = 0.01;
use crate::split::{Split, UserSplit};

/// Evaluation settings.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Methods; the first is the baseline lifts are relative to.
    pub methods: Vec<Method>,
    /// Candidates per user (the paper: 400).
    pub candidates: usize,
    /// How they are shared among a method's query embeddings.
    pub budget: Budget,
    /// Ward merge threshold.
    pub alpha: f64,
    /// Seed of medoid sampling and of the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples of users for the confidence intervals.
    pub bootstrap: usize,
}

/// A metric's mean over users, its lift over the baseline, and 95% bootstrap intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Mean over users.
    pub value: f64,
    /// 95% percentile-bootstrap interval of the mean.
    pub ci: [f64; 2],
    /// `value / baseline − 1`.
    pub lift: f64,
    /// 95% interval of the lift (users resampled jointly for both methods).
    pub lift_ci: [f64; 2],
}

impl Stat {
    /// Two Markdown table cells: `value [ci]` and `lift [ci]` (lifts in percent).
    fn cells(&self) -> String {
        let pct = |x: f64| format!("{:+.0}%", 100.0 * x);
        format!(
            "{:.4} [{:.4}, {:.4}] | {} [{}, {}]",
            self.value,
            self.ci[0],
            self.ci[1],
            pct(self.lift),
            pct(self.lift_ci[0]),
            pct(self.lift_ci[1])
        )
    }
}

/// One method's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodResult {
    /// Stable name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Recall: share of test items found among the candidates.
    pub recall: Stat,
    /// Relevance: share of test items with cosine >= 0.8 to a candidate.
    pub relevance: Stat,
    /// Recall of the user's minority test items only (see [`minority_items`]): what a
    /// multi-interest profile is for. Units with fewer than two test items are left out.
    pub minority_recall: Stat,
    /// Recall@K and HitRate@K for K in [`CUTOFFS`].
    pub at_k: Vec<AtK>,
    /// R-Precision of the test items against [`NEGATIVES_PER_TEST_ITEM`] sampled non-engaged
    /// items each, scored by the highest cosine to any of the user's embeddings (popularity:
    /// by training engagements).
    pub r_precision: Stat,
    /// Mean reciprocal rank of each test item among its sampled non-engaged items.
    pub reciprocal_rank: Stat,
    /// Mean cosine distance between pairs of the first [`DIVERSITY_AT`] recommendations.
    pub diversity: Stat,
    /// Mean interests per user before sampling (1 for single-embedding methods).
    pub clusters_per_user: f64,
    /// Mean query embeddings per user.
    pub embeddings_per_user: f64,
    /// Mean candidates per user.
    pub candidates_per_user: f64,
}

/// The evaluation's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// How engagements were split (see [`Split::description`]).
    pub split: String,
    /// Units evaluated: users (time split) or user-days (walk-forward).
    pub users: usize,
    /// Units excluded for too little history.
    pub excluded_users: usize,
    /// Test items over all users.
    pub test_items: usize,
    /// Candidates per user.
    pub candidates: usize,
    /// How they were shared among a method's embeddings.
    pub budget: Budget,
    /// Ward merge threshold.
    pub alpha: f64,
    /// Per method, baseline first.
    pub methods: Vec<MethodResult>,
}

/// Cut-offs of Recall@K and HitRate@K (comparable with multi-interest papers).
pub const CUTOFFS: [usize; 3] = [20, 50, 100];

/// Recall@K and HitRate@K of one method at one cut-off, over the blended candidate ranking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtK {
    /// The cut-off.
    pub k: usize,
    /// Share of test items among the first `k` candidates.
    pub recall: Stat,
    /// Share of users with at least one test item among the first `k` candidates.
    pub hit_rate: Stat,
}

/// Per-user outcome of one method.
#[derive(Debug, Clone, Copy, Default)]
struct UserScore {
    recall: f64,
    relevance: f64,
    /// NaN when the unit has no minority items.
    minority_recall: f64,
    recall_at: [f64; CUTOFFS.len()],
    hit_at: [f64; CUTOFFS.len()],
    r_precision: f64,
    reciprocal_rank: f64,
    diversity: f64,
    clusters: usize,
    embeddings: usize,
    candidates: usize,
}

/// Evaluates `config.methods` on the units of `split` over the item matrix `vectors` (`dim`
/// columns, exact cosine retrieval, training items never retrieved); popularity counts
/// `split.shared_training`. `progress(n)` is called as units finish.
pub fn evaluate(
    vectors: &[f32],
    dim: usize,
    split: &Split,
    config: &EvalConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, EvalError> {
    let (users, excluded_users) = (&split.units[..], split.excluded);
    if config.methods.is_empty() || users.is_empty() {
        return Err(EvalError::Empty);
    }
    // First: it validates `dim` and every item row of the split.
    let retriever = Retriever::new(vectors, dim, split, config)?;
    let rows = vectors.len() / dim;
    let norms: Vec<f32> = vectors
        .chunks_exact(dim)
        .map(|r| pinnersage_core::scan::dot(r, r).sqrt())
        .collect();
    let engagements = &retriever.engagements;
    let vector = |r: u32| &vectors[r as usize * dim..(r as usize + 1) * dim];
    let done = std::sync::atomic::AtomicU64::new(0);
    // scores[user][method]
    let scores: Vec<Vec<UserScore>> = users
        .par_iter()
        .map(|user| {
            let train = user.train_items();
            let keep = |r: u32| train.binary_search(&r).is_err();
            // The same sampled non-engaged items for every method (paired comparison).
            let negatives = sample_negatives(user, &train, rows, config.seed);
            let average = queries(
                &Method::DecayAverage {
                    lambda: MINORITY_LAMBDA,
                },
                user,
                vectors,
                dim,
                config.alpha,
                config.seed,
            )?;
            let minority = minority_items(&user.test, &average.queries[0], &vector, &norms);
            let out = config
                .methods
                .iter()
                .map(|method| {
                    let retrieved = retriever.retrieve(method, user, &keep)?;
                    let candidates = retrieved.candidates;
                    let clusters = retrieved.queries.clusters;
                    let embeddings = retrieved.queries.queries.len();
                    let ranking_queries = retrieved.queries.queries;
                    let score = |r: u32| -> f64 {
                        if *method == Method::Popularity {
                            return f64::from(engagements[r as usize]);
                        }
                        let (v, nv) = (vector(r), norms[r as usize]);
                        ranking_queries
                            .iter()
                            .map(|q| {
                                let denom = pinnersage_core::scan::dot(q, q).sqrt() * nv;
                                if denom > 0.0 {
                                    f64::from(pinnersage_core::scan::dot(q, v) / denom)
                                } else {
                                    0.0
                                }
                            })
                            .fold(f64::NEG_INFINITY, f64::max)
                            .max(-1.0)
                    };
                    let positive: Vec<f64> = user.test.iter().map(|&t| score(t)).collect();
                    let negative: Vec<Vec<f64>> = negatives
                        .iter()
                        .map(|group| group.iter().map(|&r| score(r)).collect())
                        .collect();
                    let all_negative: Vec<f64> = negative.iter().flatten().copied().collect();
                    let rr = positive
                        .iter()
                        .zip(&negative)
                        .map(|(&p, n)| reciprocal_rank(p, n))
                        .sum::<f64>()
                        / positive.len().max(1) as f64;
                    let c = &candidates;
                    let top = |k: usize| &c[..k.min(c.len())];
                    Ok(UserScore {
                        recall: recall(&user.test, c),
                        relevance: relevance(&user.test, c, &vector, &norms, RELEVANCE_COSINE),
                        minority_recall: if minority.is_empty() {
                            f64::NAN
                        } else {
                            recall(&minority, c)
                        },
                        recall_at: CUTOFFS.map(|k| recall(&user.test, top(k))),
                        hit_at: CUTOFFS
                            .map(|k| f64::from(u8::from(recall(&user.test, top(k)) > 0.0))),
                        r_precision: r_precision(&positive, &all_negative),
                        reciprocal_rank: rr,
                        diversity: diversity(top(DIVERSITY_AT), &vector, &norms),
                        clusters,
                        embeddings,
                        candidates: c.len(),
                    })
                })
                .collect::<Result<Vec<_>, EvalError>>();
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            out
        })
        .collect::<Result<_, EvalError>>()?;

    let n = users.len();
    let column = |m: usize, f: &dyn Fn(&UserScore) -> f64| -> Vec<f64> {
        scores.iter().map(|s| f(&s[m])).collect()
    };
    let mut rng = SplitMix64::new(config.seed ^ 0xB007);
    let resamples: Vec<Vec<usize>> = (0..config.bootstrap)
        .map(|_| {
            (0..n)
                .map(|_| (rng.next_u64() % n as u64) as usize)
                .collect()
        })
        .collect();
    let stat = |m: usize, f: &dyn Fn(&UserScore) -> f64| -> Stat {
        let (values, base) = (column(m, f), column(0, f));
        // Over the units where both are defined (NaN marks a metric a unit lacks).
        let mean = |v: &[f64], other: &[f64], idx: Option<&[usize]>| {
            let (mut sum, mut n) = (0.0, 0usize);
            let mut add = |i: usize| {
                if v[i].is_finite() && other[i].is_finite() {
                    sum += v[i];
                    n += 1;
                }
            };
            match idx {
                None => (0..v.len()).for_each(&mut add),
                Some(idx) => idx.iter().for_each(|&i| add(i)),
            }
            if n == 0 { f64::NAN } else { sum / n as f64 }
        };
        let (value, base_value) = (mean(&values, &base, None), mean(&base, &values, None));
        let mut means = Vec::with_capacity(resamples.len());
        let mut lifts = Vec::with_capacity(resamples.len());
        for idx in &resamples {
            let (a, b) = (
                mean(&values, &base, Some(idx)),
                mean(&base, &values, Some(idx)),
            );
            means.push(a);
            lifts.push(if b > 0.0 { a / b - 1.0 } else { f64::NAN });
        }
        Stat {
            value,
            ci: percentile_interval(&mut means),
            lift: if base_value > 0.0 {
                value / base_value - 1.0
            } else {
                f64::NAN
            },
            lift_ci: percentile_interval(&mut lifts),
        }
    };
    let methods = config
        .methods
        .iter()
        .enumerate()
        .map(|(m, method)| MethodResult {
            name: method.name(),
            description: method.describe(),
            recall: stat(m, &|s| s.recall),
            relevance: stat(m, &|s| s.relevance),
            minority_recall: stat(m, &|s| s.minority_recall),
            at_k: CUTOFFS
                .iter()
                .enumerate()
                .map(|(i, &k)| AtK {
                    k,
                    recall: stat(m, &|s| s.recall_at[i]),
                    hit_rate: stat(m, &|s| s.hit_at[i]),
                })
                .collect(),
            r_precision: stat(m, &|s| s.r_precision),
            reciprocal_rank: stat(m, &|s| s.reciprocal_rank),
            diversity: stat(m, &|s| s.diversity),
            clusters_per_user: column(m, &|s| s.clusters as f64).iter().sum::<f64>() / n as f64,
            embeddings_per_user: column(m, &|s| s.embeddings as f64).iter().sum::<f64>() / n as f64,
            candidates_per_user: column(m, &|s| s.candidates as f64).iter().sum::<f64>() / n as f64,
        })
        .collect();
    Ok(Report {
        split: split.description.clone(),
        users: n,
        excluded_users,
        test_items: users.iter().map(|u| u.test.len()).sum(),
        candidates: config.candidates,
        budget: config.budget,
        alpha: config.alpha,
        methods,
    })
}

/// What one method retrieved for one unit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retrieved {
    /// Candidate item rows, ranked by blending the queries' neighbour lists (round-robin as
    /// served, or by the method's weights), duplicates dropped; for popularity, by training
    /// engagements.
    pub candidates: Vec<u32>,
    /// The queries they came from.
    pub queries: UserQueries,
}

/// Exact cosine retrieval for every method, as the evaluation runs it.
pub struct Retriever<'a> {
    index: ExactIndex<&'a [f32]>,
    vectors: &'a [f32],
    dim: usize,
    /// Items by shared-training engagements, most engaged first.
    popular: Vec<u32>,
    /// Shared-training engagements per item row.
    pub engagements: Vec<u32>,
    candidates: usize,
    budget: Budget,
    alpha: f64,
    seed: u64,
}

impl<'a> Retriever<'a> {
    /// A retriever over `vectors` (`dim` columns) with popularity from `split.shared_training`
    /// and candidates, alpha and seed from `config`. Fails when `dim` does not divide the
    /// matrix or the split refers to a row outside it.
    pub fn new(
        vectors: &'a [f32],
        dim: usize,
        split: &Split,
        config: &EvalConfig,
    ) -> Result<Self, EvalError> {
        let index = ExactIndex::new(vectors, dim, Metric::Cosine)?;
        let rows = vectors.len() / dim;
        let outside = |u: &&UserSplit| {
            let out = |r: u32| r as usize >= rows;
            u.train.iter().any(|&(r, _)| out(r)) || u.test.iter().any(|&r| out(r))
        };
        if let Some(u) = split
            .units
            .iter()
            .chain(&split.shared_training)
            .find(outside)
        {
            return Err(EvalError::RowOutOfRange { user: u.user, rows });
        }
        let (popular, engagements) = popular_items(&split.shared_training, rows);
        Ok(Self {
            index,
            vectors,
            dim,
            popular,
            engagements,
            candidates: config.candidates,
            budget: config.budget,
            alpha: config.alpha,
            seed: config.seed,
        })
    }

    /// Up to `candidates` items for `user` under `method`, only items `keep` accepts, from the
    /// exact neighbours of each query embedding: as many as the budget per embedding
    /// ([`Budget::Equal`]: exactly `candidates` whenever the catalog has them) or
    /// `floor(candidates / e)` ([`Budget::PerEmbedding`]).
    pub fn retrieve(
        &self,
        method: &Method,
        user: &UserSplit,
        keep: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Retrieved, EvalError> {
        if *method == Method::Popularity {
            return Ok(Retrieved {
                candidates: self
                    .popular
                    .iter()
                    .copied()
                    .filter(|&r| keep(r))
                    .take(self.candidates)
                    .collect(),
                queries: UserQueries::default(),
            });
        }
        let queries = queries(method, user, self.vectors, self.dim, self.alpha, self.seed)?;
        let per = match self.budget {
            Budget::Equal => self.candidates,
            Budget::PerEmbedding => self.candidates / queries.queries.len().max(1),
        };
        let mut lists = Vec::with_capacity(queries.queries.len());
        for q in &queries.queries {
            let hits = self.index.search_filtered(q, per, keep)?;
            lists.push(
                hits.iter()
                    .map(|n| (n.row, 1.0 - n.distance))
                    .collect::<Vec<_>>(),
            );
        }
        let refs: Vec<&[(u32, f32)]> = lists.iter().map(|l| &l[..]).collect();
        let blended = blend_shares(
            queries.blend,
            &refs,
            &queries.weights,
            self.candidates,
            |_| false,
        );
        let candidates = blended.into_iter().map(|b| b.row).collect();
        Ok(Retrieved {
            candidates,
            queries,
        })
    }
}

/// The 2.5th and 97.5th percentiles (NaN entries ignored; NaN when none is left).
fn percentile_interval(v: &mut Vec<f64>) -> [f64; 2] {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.025), at(0.975)]
}

/// For each test item of `user`, [`NEGATIVES_PER_TEST_ITEM`] distinct random items the user did
/// not engage with (neither in `train`, sorted, nor in the test items); deterministic for the
/// user and `seed`. Fewer when the catalog is too small.
fn sample_negatives(user: &UserSplit, train: &[u32], rows: usize, seed: u64) -> Vec<Vec<u32>> {
    let engaged = |r: u32| train.binary_search(&r).is_ok() || user.test.contains(&r);
    let available = rows.saturating_sub(train.len() + user.test.len());
    let per = NEGATIVES_PER_TEST_ITEM.min(available);
    let mut rng =
        SplitMix64::new(seed ^ 0x005E_ED0F_2E6A ^ u64::from(user.user).wrapping_mul(0x9E37_79B9));
    user.test
        .iter()
        .map(|_| {
            let mut group: Vec<u32> = Vec::with_capacity(per);
            while group.len() < per {
                let r = (rng.next_u64() % rows as u64) as u32;
                if !engaged(r) && !group.contains(&r) {
                    group.push(r);
                }
            }
            group
        })
        .collect()
}

/// Items by training engagements over all users, most engaged first (ties: lower row), and the
/// engagement count of every row.
fn popular_items(users: &[UserSplit], rows: usize) -> (Vec<u32>, Vec<u32>) {
    let mut counts = vec![0u32; rows];
    for u in users {
        for &(r, _) in &u.train {
            counts[r as usize] += 1;
        }
    }
    let mut ranked: Vec<u32> = (0..rows as u32)
        .filter(|&r| counts[r as usize] > 0)
        .collect();
    ranked.sort_by_key(|&r| (std::cmp::Reverse(counts[r as usize]), r));
    (ranked, counts)
}

impl Report {
    /// The report as a Markdown section headed `## title`: one table, absolute values and lifts
    /// over the baseline.
    pub fn to_markdown(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## {title}\n");
        let _ = writeln!(
            out,
            "Split: {}. {} units evaluated ({} excluded for too little history), {} test items, \
             {}, training items excluded, alpha {}. Minority recall: recall of the test items \
             whose cosine to the user's decay average (λ = {MINORITY_LAMBDA}) is below the \
             user's median. Intervals: 95% bootstrap over units.\n",
            self.split,
            self.users,
            self.excluded_users,
            self.test_items,
            match self.budget {
                Budget::Equal => format!(
                    "{} distinct candidates per unit for every method (each embedding's {} exact \
                     cosine neighbours, blended until {})",
                    self.candidates, self.candidates, self.candidates
                ),
                Budget::PerEmbedding => format!(
                    "up to {} candidates per unit (the paper's floor({}/e) exact cosine \
                     neighbours per embedding, overlaps not refilled)",
                    self.candidates, self.candidates
                ),
            },
            self.alpha
        );
        let _ = writeln!(
            out,
            "| method | interests/user | embeddings/user | candidates | Recall | lift | Relevance \
             (cos >= 0.8) | lift | Minority recall | lift | Diversity@{DIVERSITY_AT} |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for m in &self.methods {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {:.3} |",
                m.description,
                m.clusters_per_user,
                m.embeddings_per_user,
                m.candidates_per_user,
                m.recall.cells(),
                m.relevance.cells(),
                m.minority_recall.cells(),
                m.diversity.value,
            );
        }
        let _ = writeln!(
            out,
            "\nRanking: each test item against {NEGATIVES_PER_TEST_ITEM} random non-engaged items \
             (the stand-in for impressions), scored by the best cosine to any user embedding:\n"
        );
        let _ = writeln!(
            out,
            "| method | R-Precision | lift | reciprocal rank | lift |\n|---|---:|---:|---:|---:|"
        );
        for m in &self.methods {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                m.description,
                m.r_precision.cells(),
                m.reciprocal_rank.cells(),
            );
        }
        let _ = writeln!(
            out,
            "\nRanked by blending the embeddings' neighbour lists (round-robin as served, or by \
             the method's weights):\n"
        );
        let mut header = String::from("| method |");
        let mut rule = String::from("|---|");
        for k in CUTOFFS {
            let _ = write!(header, " Recall@{k} | HitRate@{k} |");
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for m in &self.methods {
            let _ = write!(out, "| {} |", m.description);
            for a in &m.at_k {
                let _ = write!(out, " {:.4} | {:.4} |", a.recall.value, a.hit_rate.value);
            }
            out.push('\n');
        }
        out
    }
}
