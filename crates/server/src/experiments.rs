//! Online experiments: the file that defines them (`serve --experiments FILE`) and the arm of a
//! user in the running one.
//!
//! ```toml
//! [[experiment]]
//! name = "multi-interest"
//! salt = "2026-12-a"          # a new salt reshuffles the users
//! control = "single-interest" # default: the first arm
//!
//! [[experiment.arm]]
//! name = "single-interest"
//! share = 0.5
//! selection = "top"           # medoids, selection, blend, global_share: as in a request;
//! medoids = 1                 # unset ones are the server's defaults
//!
//! [[experiment.arm]]
//! name = "pinnersage"
//! share = 0.5
//! # alpha = 1.0              # profiles cut at another alpha: a variant of the served
//!                             # generation (`batch --variant-alpha 1.0`)
//!
//! [experiment.force]          # users pinned to an arm, for debugging
//! "user-1" = "pinnersage"
//! ```
//!
//! An arm may be `external = true` (the team's current recommender): its users get no items
//! from us, only the assignment. At most one experiment is active (`active = false` keeps
//! another defined but idle): two would share the same requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pinnersage_core::blend::Blend;
use pinnersage_core::experiment::{Split, SplitError};
use pinnersage_core::sample::Selection;
use pinnersage_engine::Retrieval;
use serde::{Deserialize, Serialize};

/// Why an experiments file was refused; nothing of it is used.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not TOML of the experiments' shape (unknown keys included).
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// An experiment is invalid.
    #[error("experiment {experiment:?}: {message}")]
    Invalid {
        /// The experiment's name.
        experiment: String,
        /// What is wrong.
        message: String,
    },
}

/// What an arm serves.
#[derive(Debug, Clone, PartialEq)]
pub enum ArmPlan {
    /// Our recommendations with these retrieval settings.
    Retrieval(Retrieval),
    /// The team's own recommender: we only assign users to it.
    External,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// Its name, unique in the experiment.
    pub name: String,
    /// Its share of the users.
    pub share: f64,
    /// What it serves.
    pub plan: ArmPlan,
}

/// One experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Its name, unique in the file.
    pub name: String,
    /// The salt of its split.
    pub salt: String,
    /// Whether it assigns users now.
    pub active: bool,
    /// The arms.
    pub arms: Vec<Arm>,
    /// The control arm's position.
    pub control: usize,
    /// Users pinned to an arm (its position).
    pub forced: HashMap<String, usize>,
    split: Split,
}

/// A user's place in the running experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment<'a> {
    /// The experiment.
    pub experiment: &'a str,
    /// The arm.
    pub arm: &'a str,
    /// What the arm serves.
    pub plan: &'a ArmPlan,
}

impl Experiment {
    /// The arm of `user`: forced, or by the split.
    pub fn arm_of(&self, user: &str) -> &Arm {
        let arm = match self.forced.get(user) {
            Some(&arm) => arm,
            None => self.split.arm_of(user),
        };
        &self.arms[arm]
    }
}

/// The experiments a server runs (none by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Experiments {
    /// Every experiment of the file, in its order.
    pub all: Vec<Experiment>,
}

/// The file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    experiment: Vec<ExperimentIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentIn {
    name: String,
    salt: String,
    #[serde(default = "yes")]
    active: bool,
    control: Option<String>,
    #[serde(default)]
    arm: Vec<ArmIn>,
    #[serde(default)]
    force: HashMap<String, String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmIn {
    name: String,
    share: f64,
    #[serde(default)]
    external: bool,
    medoids: Option<usize>,
    selection: Option<String>,
    blend: Option<String>,
    global_share: Option<f64>,
    alpha: Option<f64>,
}

impl Experiments {
    /// Reads `path` (TOML, the shape of this module's example); arms' unset retrieval settings
    /// are `defaults` (the server's).
    pub fn load(path: &Path, defaults: &Retrieval) -> Result<Self, ExperimentsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, defaults).map_err(|e| match e {
            ExperimentsError::Syntax { message, .. } => ExperimentsError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// [`Experiments::load`] of a file's text.
    ///
    /// ```
    /// use pinnersage_engine::Retrieval;
    /// use pinnersage_server::experiments::Experiments;
    /// let text = r#"
    ///     [[experiment]]
    ///     name = "e1"
    ///     salt = "s"
    ///     arm = [{ name = "a", share = 0.5, medoids = 1 }, { name = "b", share = 0.5 }]
    /// "#;
    /// let experiments = Experiments::parse(text, &Retrieval::default()).unwrap();
    /// let assigned = experiments.assign("user-1").unwrap();
    /// assert_eq!(assigned.experiment, "e1");
    /// assert!(["a", "b"].contains(&assigned.arm));
    /// ```
    pub fn parse(text: &str, defaults: &Retrieval) -> Result<Self, ExperimentsError> {
        let file: FileIn = toml::from_str(text).map_err(|e| ExperimentsError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut all: Vec<Experiment> = Vec::with_capacity(file.experiment.len());
        for e in file.experiment {
            let experiment = experiment_of(e, defaults)?;
            if all.iter().any(|x| x.name == experiment.name) {
                return Err(invalid(&experiment.name, "is defined twice".into()));
            }
            all.push(experiment);
        }
        let active: Vec<&str> = (all.iter().filter(|e| e.active))
            .map(|e| e.name.as_str())
            .collect();
        if active.len() > 1 {
            return Err(invalid(
                active[1],
                format!(
                    "is active beside {:?}: two experiments would split the same requests (set \
                     `active = false` on all but one)",
                    active[0]
                ),
            ));
        }
        Ok(Self { all })
    }

    /// The experiment assigning users now, if any.
    pub fn active(&self) -> Option<&Experiment> {
        self.all.iter().find(|e| e.active)
    }

    /// The alphas the active experiment's arms read profiles cut at (each once): the served
    /// profile generation must hold them (its own alpha or a variant's).
    pub fn required_cuts(&self) -> Vec<f64> {
        let mut cuts: Vec<f64> = Vec::new();
        let arms = self.active().map_or(&[][..], |e| &e.arms[..]);
        for arm in arms {
            if let ArmPlan::Retrieval(Retrieval { alpha: Some(a), .. }) = arm.plan
                && !cuts.contains(&a)
            {
                cuts.push(a);
            }
        }
        cuts
    }

    /// `user`'s arm in the active experiment, if one runs.
    pub fn assign(&self, user: &str) -> Option<Assignment<'_>> {
        let experiment = self.active()?;
        let arm = experiment.arm_of(user);
        Some(Assignment {
            experiment: &experiment.name,
            arm: &arm.name,
            plan: &arm.plan,
        })
    }

    /// The experiments as `GET /v1/admin/experiments` shows them.
    pub fn view(&self) -> ExperimentsView<'_> {
        ExperimentsView {
            experiments: self
                .all
                .iter()
                .map(|e| ExperimentView {
                    name: &e.name,
                    salt: &e.salt,
                    active: e.active,
                    control: &e.arms[e.control].name,
                    arms: e.arms.iter().map(ArmView::of).collect(),
                    forced_users: e.forced.len(),
                })
                .collect(),
        }
    }
}

fn invalid(experiment: &str, message: String) -> ExperimentsError {
    ExperimentsError::Invalid {
        experiment: experiment.to_owned(),
        message,
    }
}

fn experiment_of(e: ExperimentIn, defaults: &Retrieval) -> Result<Experiment, ExperimentsError> {
    let bad = |message: String| invalid(&e.name, message);
    if e.name.trim().is_empty() {
        return Err(bad("the name is empty".into()));
    }
    if e.salt.is_empty() {
        return Err(bad("the salt is empty".into()));
    }
    if e.arm.len() < 2 {
        return Err(bad(format!(
            "has {} arm(s): an experiment compares two at least",
            e.arm.len()
        )));
    }
    let mut arms: Vec<Arm> = Vec::with_capacity(e.arm.len());
    for a in &e.arm {
        if a.name.trim().is_empty() {
            return Err(bad("an arm's name is empty".into()));
        }
        if arms.iter().any(|x| x.name == a.name) {
            return Err(bad(format!("arm {:?} is defined twice", a.name)));
        }
        let plan = plan_of(a, defaults).map_err(|m| bad(format!("arm {:?}: {m}", a.name)))?;
        arms.push(Arm {
            name: a.name.clone(),
            share: a.share,
            plan,
        });
    }
    let shares: Vec<f64> = arms.iter().map(|a| a.share).collect();
    let split = Split::new(&e.salt, &shares).map_err(|err| {
        bad(match err {
            SplitError::Share { arm, share } => {
                format!("arm {:?}: share {share} is not in (0, 1]", arms[arm].name)
            }
            other => other.to_string(),
        })
    })?;
    let position = |name: &str| arms.iter().position(|a| a.name == name);
    let control = match &e.control {
        None => 0,
        Some(name) => {
            position(name).ok_or_else(|| bad(format!("control {name:?} is not an arm")))?
        }
    };
    let mut forced = HashMap::with_capacity(e.force.len());
    for (user, arm) in &e.force {
        let arm = position(arm)
            .ok_or_else(|| bad(format!("user {user:?} is forced into unknown arm {arm:?}")))?;
        forced.insert(user.clone(), arm);
    }
    Ok(Experiment {
        name: e.name,
        salt: e.salt,
        active: e.active,
        arms,
        control,
        forced,
        split,
    })
}

fn plan_of(a: &ArmIn, defaults: &Retrieval) -> Result<ArmPlan, String> {
    let settings = a.medoids.is_some()
        || a.selection.is_some()
        || a.blend.is_some()
        || a.global_share.is_some()
        || a.alpha.is_some();
    if a.external {
        return if settings {
            Err("an external arm takes no retrieval settings".into())
        } else {
            Ok(ArmPlan::External)
        };
    }
    let retrieval = Retrieval {
        medoids: a.medoids.unwrap_or(defaults.medoids),
        selection: match &a.selection {
            Some(s) => s.parse::<Selection>()?,
            None => defaults.selection,
        },
        blend: match &a.blend {
            Some(s) => s.parse::<Blend>()?,
            None => defaults.blend,
        },
        global: a.global_share.unwrap_or(defaults.global),
        alpha: a.alpha.or(defaults.alpha),
    };
    retrieval.check().map_err(|e| e.to_string())?;
    Ok(ArmPlan::Retrieval(retrieval))
}

/// The experiments as JSON.
#[derive(Debug, Serialize)]
pub struct ExperimentsView<'a> {
    /// Each experiment.
    pub experiments: Vec<ExperimentView<'a>>,
}

/// One experiment as JSON.
#[derive(Debug, Serialize)]
pub struct ExperimentView<'a> {
    name: &'a str,
    salt: &'a str,
    active: bool,
    control: &'a str,
    arms: Vec<ArmView<'a>>,
    forced_users: usize,
}

/// One arm as JSON.
#[derive(Debug, Serialize)]
pub struct ArmView<'a> {
    name: &'a str,
    share: f64,
    external: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    medoids: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selection: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blend: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    global_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpha: Option<f64>,
}

impl<'a> ArmView<'a> {
    fn of(arm: &'a Arm) -> Self {
        let retrieval = match &arm.plan {
            ArmPlan::Retrieval(r) => Some(r),
            ArmPlan::External => None,
        };
        Self {
            name: &arm.name,
            share: arm.share,
            external: retrieval.is_none(),
            medoids: retrieval.map(|r| r.medoids),
            selection: retrieval.map(|r| r.selection.as_str()),
            blend: retrieval.map(|r| r.blend.as_str()),
            global_share: retrieval.map(|r| r.global),
            alpha: retrieval.and_then(|r| r.alpha),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiments, String> {
        Experiments::parse(text, &Retrieval::default()).map_err(|e| e.to_string())
    }

    const TWO_ARMS: &str = r#"
        [[experiment]]
        name = "multi"
        salt = "s1"
        control = "single"
        [[experiment.arm]]
        name = "single"
        share = 0.5
        selection = "top"
        medoids = 1
        [[experiment.arm]]
        name = "all"
        share = 0.3
        selection = "all"
        blend = "importance"
        [[experiment.arm]]
        name = "current"
        share = 0.2
        external = true
        [experiment.force]
        "user-1" = "current"
    "#;

    #[test]
    fn arms_take_the_servers_defaults_where_unset() {
        let experiments = parse(TWO_ARMS).unwrap();
        let e = experiments.active().unwrap();
        assert_eq!(e.arms[e.control].name, "single");
        let ArmPlan::Retrieval(single) = &e.arms[0].plan else {
            panic!("{:?}", e.arms[0])
        };
        assert_eq!(
            (single.medoids, single.selection, single.blend),
            (1, Selection::Top, Retrieval::default().blend)
        );
        let ArmPlan::Retrieval(all) = &e.arms[1].plan else {
            panic!()
        };
        assert_eq!(
            (all.selection, all.blend),
            (Selection::All, Blend::Importance)
        );
        assert_eq!(e.arms[2].plan, ArmPlan::External);
        assert_eq!(experiments.assign("user-1").unwrap().arm, "current");
        let view = serde_json::to_value(experiments.view()).unwrap();
        assert_eq!(view["experiments"][0]["arms"][2]["external"], true);
        assert_eq!(view["experiments"][0]["forced_users"], 1);
    }

    #[test]
    fn no_experiment_assigns_nobody() {
        assert_eq!(parse("").unwrap().assign("user-1"), None);
        let idle = TWO_ARMS.replace(
            "control = \"single\"",
            "control = \"single\"\nactive = false",
        );
        assert_eq!(parse(&idle).unwrap().assign("user-1"), None);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            (
                TWO_ARMS.replace("share = 0.2", "share = 0.3"),
                "add up to 1.1",
            ),
            (TWO_ARMS.replace("medoids = 1", "medoids = 0"), "`medoids`"),
            (
                TWO_ARMS.replace("selection = \"top\"", "selection = \"best\""),
                "unknown selection",
            ),
            (
                TWO_ARMS.replace("medoids = 1", "medoid = 1"),
                "unknown field `medoid`",
            ),
            (
                TWO_ARMS.replace("\"user-1\" = \"current\"", "\"user-1\" = \"nope\""),
                "unknown arm \"nope\"",
            ),
            (
                TWO_ARMS.replace("control = \"single\"", "control = \"x\""),
                "control \"x\"",
            ),
            (
                TWO_ARMS.replace("external = true", "external = true\nmedoids = 2"),
                "no retrieval settings",
            ),
            (
                TWO_ARMS.replace("name = \"all\"", "name = \"single\""),
                "defined twice",
            ),
            (
                TWO_ARMS.replace(
                    "share = 0.5\n        selection",
                    "share = -0.5\n        selection",
                ),
                "share -0.5",
            ),
            (
                format!("{TWO_ARMS}\n{}", TWO_ARMS.replace("\"multi\"", "\"other\"")),
                "active beside",
            ),
            (format!("{TWO_ARMS}\n{TWO_ARMS}"), "defined twice"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let one_arm = r#"
            [[experiment]]
            name = "lonely"
            salt = "s"
            arm = [{ name = "a", share = 1.0 }]
        "#;
        assert!(parse(one_arm).unwrap_err().contains("two at least"));
    }
}
