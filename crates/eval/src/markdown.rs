//! The evaluation report's Markdown beyond the metric tables ([`crate::Report::to_markdown`]):
//! the sweeps' tables and figures, and the example users with their recommendations.

use crate::examples::Example;
use crate::sweep::SweepPoint;

/// The sweeps as Markdown tables, one row per setting and embedding kind, with the figures
/// (`alpha-sweep.svg`, `embeddings-sweep.svg`). Each slice holds `(embedding kind, points)`.
pub fn sweep_markdown(
    alpha_points: &[(&str, Vec<SweepPoint>)],
    e_points: &[(&str, Vec<SweepPoint>)],
) -> String {
    let lift = |x: f64| format!("{:+.0}%", 100.0 * x);
    let mut out = String::from(
        "\n## Sweeps\n\nPinnerSage (Ward + medoids, λ = 0.01) sampling 3 medoids, against alpha; \
         lifts over the last item.\n\n![alpha sweep](alpha-sweep.svg)\n\n| embeddings | alpha \
         | interests/user | Recall | lift | Relevance | lift | Diversity@50 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let row = |out: &mut String, kind: &str, p: &SweepPoint, per_user: f64| {
        out.push_str(&format!(
            "| {kind} | {} | {:.1} | {:.4} | {} | {:.4} | {} | {:.3} |\n",
            p.x,
            per_user,
            p.recall.value,
            lift(p.recall.lift),
            p.relevance.value,
            lift(p.relevance.lift),
            p.diversity.value
        ));
    };
    for (kind, points) in alpha_points {
        for p in points {
            row(&mut out, kind, p, p.clusters_per_user);
        }
    }
    out.push_str(
        "\nPinnerSage at the default alpha sampling e medoids (the paper's Fig. 7).\n\n\
         ![embeddings sweep](embeddings-sweep.svg)\n\n| embeddings | e | embeddings/user | \
         Recall | lift | Relevance | lift | Diversity@50 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (kind, points) in e_points {
        for p in points {
            row(&mut out, kind, p, p.embeddings_per_user);
        }
    }
    out
}

/// What the example tables print for items and users.
pub struct Names<'a> {
    /// Item ids by row.
    pub items: &'a [String],
    /// Item attributes by row (JSON object text).
    pub meta: &'a [Option<Box<str>>],
    /// User ids by dense user index.
    pub users: &'a [String],
}

impl Names<'_> {
    /// An item's title (or name, or first text attribute, or id), safe inside a table cell.
    pub fn item(&self, row: u32) -> String {
        let id = &self.items[row as usize];
        let parsed = self.meta[row as usize]
            .as_deref()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        let title = parsed.as_ref().and_then(|v| {
            ["title", "name"]
                .iter()
                .find_map(|k| v.get(k).and_then(|t| t.as_str()))
                .or_else(|| v.as_object()?.values().find_map(|t| t.as_str()))
        });
        title.unwrap_or(id).replace('|', "\\|")
    }
}

/// Example users as Markdown: their interests, test items and each method's first
/// recommendations, hits marked.
pub fn examples_markdown(shown: &[Example], names: &Names<'_>) -> String {
    let mut out = String::from(
        "\n### Examples\n\nThree users, light to heavy (by training engagements). \
         Recommendations marked ✓ are items the user engaged with in the test period.\n",
    );
    for ex in shown {
        out.push_str(&format!(
            "\n**User {}**: {} training engagements, {} interests. Largest interests (medoid, \
             actions): {}.\n\nEngaged in the test period: {}{}.\n\n",
            names.users[ex.user as usize],
            ex.train,
            ex.interests.len(),
            ex.interests
                .iter()
                .take(6)
                .map(|i| format!("{} ({})", names.item(i.medoid), i.size))
                .collect::<Vec<_>>()
                .join("; "),
            ex.test
                .iter()
                .take(8)
                .map(|&r| names.item(r))
                .collect::<Vec<_>>()
                .join("; "),
            if ex.test.len() > 8 {
                format!(" and {} more", ex.test.len() - 8)
            } else {
                String::new()
            }
        ));
        out.push_str("| # |");
        for (method, _) in &ex.recommendations {
            out.push_str(&format!(" {method} |"));
        }
        out.push_str("\n|---:|");
        out.push_str(&"---|".repeat(ex.recommendations.len()));
        out.push('\n');
        let depth = ex
            .recommendations
            .iter()
            .map(|r| r.1.len())
            .max()
            .unwrap_or(0);
        for rank in 0..depth {
            out.push_str(&format!("| {} |", rank + 1));
            for (_, list) in &ex.recommendations {
                let cell = list.get(rank).map_or(String::new(), |&r| {
                    let hit = if ex.test.contains(&r) { "✓ " } else { "" };
                    format!("{hit}{}", names.item(r))
                });
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    out
}
