//! Choosing the configuration (`eval --tune`): alpha and the retrieval options are compared on
//! a validation split carved from the training period only, and the choice is then measured once
//! on the test split next to the paper's defaults.

use std::fmt::Write as _;

use pinnersage_core::sample::Selection;
use serde::Serialize;

use crate::error::EvalError;
use crate::evaluate::{EvalConfig, MethodResult, evaluate};

use crate::methods::{Blend, Global, Method, Pick, Summary};
use crate::split::{Split, UserSplit};

/// What the tuner may choose from.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneGrid {
    /// Ward merge thresholds.
    pub alphas: Vec<f64>,
    /// Importance decay per day.
    pub lambda: f64,
    /// Interest selections.
    pub picks: Vec<Pick>,
    /// Blends.
    pub blends: Vec<Blend>,
    /// Shares of the global interest (0: none).
    pub globals: Vec<f64>,
    /// Share of each unit's training engagements (the latest) held out for validation.
    pub validation_fraction: f64,
}

impl Default for TuneGrid {
    fn default() -> Self {
        Self {
            alphas: vec![1.0, 1.75, 2.5, 4.0],
            lambda: pinnersage_core::importance::DEFAULT_LAMBDA,
            picks: vec![Pick::Sample(3), Pick::Top(3), Pick::All],
            blends: vec![Blend::RoundRobin, Blend::Importance, Blend::Score],
            globals: vec![0.0, 0.25, 0.5],
            validation_fraction: 0.2,
        }
    }
}

/// Interests a served request takes at most: `serve --medoids` for [`Pick::All`].
const ALL_MEDOIDS: usize = pinnersage_engine::MAX_MEDOIDS;

/// One configuration `batch` and `serve` can run: a profile setting and a retrieval setting.
/// Serialised with the flags' names and values (`alpha`, `lambda`, `medoids`, `selection`,
/// `blend`, `global_share`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Ward merge threshold (`batch --alpha`).
    pub alpha: f64,
    /// Importance decay (`batch --lambda`).
    pub lambda: f64,
    /// Which interests a request draws from (`serve --selection --medoids`).
    pub pick: Pick,
    /// `serve --blend`.
    pub blend: Blend,
    /// `serve --global-share`.
    pub global_share: f64,
}

impl Candidate {
    /// The paper's configuration at `alpha`: sample 3 medoids, round-robin, no global interest.
    pub fn paper(alpha: f64, lambda: f64) -> Self {
        Self {
            alpha,
            lambda,
            pick: Pick::Sample(3),
            blend: Blend::RoundRobin,
            global_share: 0.0,
        }
    }

    /// `serve --medoids` and `serve --selection`.
    fn serve_selection(&self) -> (usize, Selection) {
        match self.pick {
            Pick::Sample(e) => (e, Selection::Sample),
            Pick::Top(e) => (e, Selection::Top),
            Pick::All => (ALL_MEDOIDS, Selection::All),
        }
    }

    /// The evaluation method that retrieves as a server with this configuration does.
    pub fn method(&self) -> Method {
        let global = if self.global_share > 0.0 {
            Global::DecayAverage(self.global_share)
        } else {
            Global::None
        };
        Method::pinnersage(self.lambda, Summary::Medoid, self.pick).blended(self.blend, global)
    }

    /// In words.
    pub fn describe(&self) -> String {
        let pick = match self.pick {
            Pick::All => "all medoids".to_string(),
            Pick::Sample(e) => format!("sample {e}"),
            Pick::Top(e) => format!("top {e}"),
        };
        let global = if self.global_share > 0.0 {
            format!(", global interest {:.0}%", 100.0 * self.global_share)
        } else {
            String::new()
        };
        format!(
            "alpha {}, λ {}, {pick}, {}{global}",
            self.alpha,
            self.lambda,
            self.blend.as_str()
        )
    }

    /// The configuration file `batch` and `serve` read (`--config`).
    pub fn to_toml(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(
            out,
            "\n[batch]\nalpha = {}\nlambda = {}",
            self.alpha, self.lambda
        );
        let (medoids, selection) = self.serve_selection();
        let _ = writeln!(
            out,
            "\n[serve]\nmedoids = {medoids}\nselection = \"{}\"\nblend = \"{}\"\nglobal_share = {}",
            selection.as_str(),
            self.blend.as_str(),
            self.global_share
        );
        out
    }
}

impl Serialize for Candidate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flags {
            alpha: f64,
            lambda: f64,
            medoids: usize,
            selection: &'static str,
            blend: &'static str,
            global_share: f64,
        }
        let (medoids, selection) = self.serve_selection();
        Flags {
            alpha: self.alpha,
            lambda: self.lambda,
            medoids,
            selection: selection.as_str(),
            blend: self.blend.as_str(),
            global_share: self.global_share,
        }
        .serialize(serializer)
    }
}

/// One candidate's validation score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scored {
    /// The configuration.
    pub candidate: Candidate,
    /// Its mean Recall on the validation split.
    pub recall: f64,
    /// Its mean minority-interest recall on the validation split.
    pub minority_recall: f64,
}

/// What the tuner found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tuned {
    /// Every candidate's validation scores, best Recall first.
    pub validation: Vec<Scored>,
    /// Units of the validation split.
    pub validation_units: usize,
    /// The chosen configuration (best validation Recall).
    pub chosen: Candidate,
    /// On the test split: the last item (baseline), the decay average, the paper's
    /// configuration at the evaluation's alpha, and the chosen one.
    pub test: Vec<MethodResult>,
}

/// Units for validation, from `split`'s training engagements alone: each unit's first
/// `1 − fraction` of training engagements train, the distinct new items of the rest are the
/// validation items. Units left with fewer than `min_train` training engagements or no
/// validation item are dropped (and counted in `excluded`). The test items are never read.
pub fn validation_split(split: &Split, fraction: f64, min_train: usize) -> Split {
    let mut out = Split {
        description: format!(
            "validation: the latest {:.0}% of each unit's training engagements",
            100.0 * fraction
        ),
        ..Split::default()
    };
    for unit in &split.units {
        let n = unit.train.len();
        // At least one engagement on each side when there are two.
        let keep =
            ((n as f64 * (1.0 - fraction)).floor() as usize).clamp(1, n.saturating_sub(1).max(1));
        let train = unit.train[..keep].to_vec();
        let mut seen: Vec<u32> = train.iter().map(|&(r, _)| r).collect();
        seen.sort_unstable();
        let mut test = Vec::new();
        for &(r, _) in &unit.train[keep..] {
            if seen.binary_search(&r).is_err() && !test.contains(&r) {
                test.push(r);
            }
        }
        if train.len() < min_train.max(1) || test.is_empty() {
            out.excluded += 1;
            continue;
        }
        out.shared_training.push(UserSplit {
            user: unit.user,
            train: train.clone(),
            test: Vec::new(),
        });
        out.units.push(UserSplit {
            user: unit.user,
            train,
            test,
        });
    }
    out
}

/// Chooses alpha and the retrieval options by validation Recall on
/// [`validation_split`]`(split)`, then evaluates the choice on `split` beside the last item, the
/// decay average and the paper's configuration at `config.alpha` (which, like `config.seed`,
/// `config.candidates` and `config.budget`, the validation runs use too). `progress(n)` counts
/// evaluated units.
pub fn tune(
    vectors: &[f32],
    dim: usize,
    split: &Split,
    config: &EvalConfig,
    grid: &TuneGrid,
    min_train: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Tuned, EvalError> {
    if grid.alphas.is_empty() || grid.picks.is_empty() || grid.blends.is_empty() {
        return Err(EvalError::Input("the tuning grid is empty".into()));
    }
    let validation = validation_split(split, grid.validation_fraction, min_train);
    if validation.units.is_empty() {
        return Err(EvalError::Input(
            "no unit has enough training engagements to carve a validation split from".into(),
        ));
    }
    let mut candidates_at = Vec::new();
    for &alpha in &grid.alphas {
        let mut at = Vec::new();
        for &pick in &grid.picks {
            for &blend in &grid.blends {
                for &global in &grid.globals {
                    at.push(Candidate {
                        alpha,
                        lambda: grid.lambda,
                        pick,
                        blend,
                        global_share: global,
                    });
                }
            }
        }
        candidates_at.push((alpha, at));
    }
    let mut scored = Vec::new();
    let mut done = 0u64;
    for (alpha, candidates) in &candidates_at {
        let run = EvalConfig {
            methods: candidates.iter().map(Candidate::method).collect(),
            alpha: *alpha,
            bootstrap: 0,
            ..config.clone()
        };
        let report = evaluate(vectors, dim, &validation, &run, &|n| progress(done + n))?;
        done += validation.units.len() as u64;
        for (candidate, result) in candidates.iter().zip(&report.methods) {
            scored.push(Scored {
                candidate: *candidate,
                recall: result.recall.value,
                minority_recall: result.minority_recall.value,
            });
        }
    }
    // Best Recall first; ties keep grid order (the simpler configuration comes first).
    scored.sort_by(|a, b| b.recall.total_cmp(&a.recall));
    let chosen = scored[0].candidate;
    let paper = Candidate::paper(config.alpha, grid.lambda);
    let at_default = EvalConfig {
        methods: vec![
            Method::LastItem,
            Method::DecayAverage {
                lambda: grid.lambda,
            },
            paper.method(),
        ],
        ..config.clone()
    };
    let mut test = evaluate(vectors, dim, split, &at_default, &|n| progress(done + n))?.methods;
    let at_chosen = EvalConfig {
        methods: vec![Method::LastItem, chosen.method()],
        alpha: chosen.alpha,
        ..config.clone()
    };
    let mut tuned = evaluate(vectors, dim, split, &at_chosen, &|_| {})?.methods;
    let mut chosen_result = tuned.remove(1);
    chosen_result.description = format!("tuned: {}", chosen.describe());
    test[2].description = format!("paper: {}", paper.describe());
    test.push(chosen_result);
    Ok(Tuned {
        validation_units: validation.units.len(),
        validation: scored,
        chosen,
        test,
    })
}

impl Tuned {
    /// The tuning as a Markdown section headed `### title`.
    pub fn to_markdown(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "Chosen on a validation split carved from the training period only ({} units: the \
             latest share of each unit's training engagements held out), by Recall; the test \
             split was not read until the choice was made. Best validation candidates:\n",
            self.validation_units
        );
        let _ = writeln!(
            out,
            "| configuration | validation Recall | validation minority recall |\n|---|---:|---:|"
        );
        for s in self.validation.iter().take(8) {
            let _ = writeln!(
                out,
                "| {} | {:.4} | {:.4} |",
                s.candidate.describe(),
                s.recall,
                s.minority_recall
            );
        }
        let _ = writeln!(
            out,
            "\nOn the test split (lifts over the last item, 95% bootstrap intervals):\n"
        );
        let _ = writeln!(
            out,
            "| method | Recall | lift | Minority recall | lift | Diversity@50 |\n|---|---:|---:|---:|---:|---:|"
        );
        let pct = |x: f64| format!("{:+.0}%", 100.0 * x);
        for m in &self.test {
            let _ = writeln!(
                out,
                "| {} | {:.4} [{:.4}, {:.4}] | {} [{}, {}] | {:.4} | {} | {:.3} |",
                m.description,
                m.recall.value,
                m.recall.ci[0],
                m.recall.ci[1],
                pct(m.recall.lift),
                pct(m.recall.lift_ci[0]),
                pct(m.recall.lift_ci[1]),
                m.minority_recall.value,
                pct(m.minority_recall.lift),
                m.diversity.value
            );
        }
        out
    }
}
