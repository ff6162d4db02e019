//! Line charts of the sweeps as SVG text (plotters; the caller writes the file).

use crate::error::EvalError;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure: a y quantity against the figure's shared x quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Panel caption and y-axis label.
    pub title: String,
    /// The lines.
    pub series: Vec<Series>,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// A figure of `panels` side by side sharing the x quantity `x_label`, as an SVG document. The
/// legend is drawn once, in the first panel.
///
/// ```
/// use pinnersage_eval::plot::{Panel, Series, svg_figure};
/// let panel = Panel {
///     title: "Recall".into(),
///     series: vec![Series { name: "given".into(), points: vec![(1.0, 0.1), (2.0, 0.2)] }],
/// };
/// let svg = svg_figure("alpha sweep", "alpha", &[panel]).unwrap();
/// assert!(svg.starts_with("<svg") && svg.contains("Recall") && svg.contains("given"));
/// ```
pub fn svg_figure(title: &str, x_label: &str, panels: &[Panel]) -> Result<String, EvalError> {
    let mut svg = String::new();
    {
        let width = 420 * panels.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 360)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| EvalError::Plot(e.to_string());
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| EvalError::Plot(e.to_string()))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (p, (area, panel)) in areas.iter().zip(panels).enumerate() {
            let points = || panel.series.iter().flat_map(|s| s.points.iter());
            let (x0, x1) = bounds(points().map(|p| p.0));
            let (_, y1) = bounds(points().map(|p| p.1));
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 16))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, 0.0..y1 * 1.08)
                .map_err(|e| EvalError::Plot(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .x_label_formatter(&|x| format!("{}", (x * 1e6).round() / 1e6))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| EvalError::Plot(e.to_string()))?;
            for (i, series) in panel.series.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(series.points.iter().copied(), colour))
                    .map_err(|e| EvalError::Plot(e.to_string()))?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
                chart
                    .draw_series(
                        series
                            .points
                            .iter()
                            .map(|&p| Circle::new(p, 3, colour.filled())),
                    )
                    .map_err(|e| EvalError::Plot(e.to_string()))?;
            }
            if p > 0 {
                continue;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|e| EvalError::Plot(e.to_string()))?;
        }
        root.present().map_err(|e| EvalError::Plot(e.to_string()))?;
    }
    Ok(svg)
}

/// The range of `values` (finite ones), widened when empty or flat.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo <= 0.0 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}
