//! The HTML report: the text table and two SVG plots made with plotters
//! (visibility-lag CDF per region pair, convergence over time).

use plotters::prelude::*;

use crate::report::Report;
use crate::world::World;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The page for a finished run.
pub fn render(world: &World, report: &Report) -> String {
    let lag = lag_cdf_svg(world).unwrap_or_else(|e| format!("<p>lag plot failed: {e}</p>"));
    let conv = convergence_svg(world).unwrap_or_else(|e| format!("<p>convergence plot failed: {e}</p>"));
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>geocache-sim: {name} seed {seed}</title>\
         <style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}pre{{background:#f6f6f6;padding:1em}}</style>\
         </head><body>\n<h1>geocache-sim: {name}, seed {seed}</h1>\n<pre>{text}</pre>\n\
         <h2>Visibility lag, cumulative</h2>\n{lag}\n<h2>Convergence over time</h2>\n\
         <p>Write applications still pending on live nodes, sampled each virtual second.</p>\n{conv}\n</body></html>\n",
        name = escape(&report.scenario),
        seed = report.seed,
        text = escape(&report.to_text()),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

type PlotResult = Result<String, Box<dyn std::error::Error>>;

fn lag_cdf_svg(world: &World) -> PlotResult {
    let names: Vec<&str> = world.scenario.regions.iter().map(|r| r.name.as_str()).collect();
    let series: Vec<(String, Vec<(f64, f64)>)> = world
        .lag_histograms()
        .into_iter()
        .filter(|((a, b), _)| a != b)
        .map(|((a, b), h)| {
            let points = (0..=100)
                .map(|p| {
                    let q = f64::from(p) / 100.0;
                    (h.value_at_quantile(q) as f64 / 1_000.0, q)
                })
                .collect();
            (format!("{} -> {}", names[a], names[b]), points)
        })
        .collect();
    let x_max = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)?;
        chart.configure_mesh().x_desc("lag (ms)").y_desc("share of writes visible").draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.iter().copied(), &color))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn convergence_svg(world: &World) -> PlotResult {
    let points: Vec<(f64, f64)> = world.convergence.iter().map(|&(t, n)| (t, n as f64)).collect();
    let x_max = points.last().map_or(1.0, |p| p.0.max(1.0));
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc("virtual time (s)").y_desc("pending applications").draw()?;
        chart.draw_series(LineSeries::new(points, &COLORS[0]))?;
        root.present()?;
    }
    Ok(svg)
}
