//! The chart of a ramp: against the offered rate, the achieved rate, the
//! p50 and p99 latency (the 20 ms line drawn), and the pipeline's CPU per
//! order; the knee marked on each. An SVG file beside the run's report.

use std::path::Path;

use plotters::prelude::*;

/// One step of a ramp, as the chart draws it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RampPoint {
    pub offered: f64,
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Pipeline CPU per order placed in the step, in µs.
    pub cpu_us_per_order: Option<f64>,
}

/// The p99 the knee is judged by.
const P99_LIMIT_MS: f64 = 20.0;

/// Draws the ramp into `path` (SVG).
pub fn ramp_svg(
    path: &Path,
    title: &str,
    points: &[RampPoint],
    knee: Option<f64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!points.is_empty(), "a ramp chart needs at least one step");
    let root = SVGBackend::new(path, (900, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(draw)?;
    let panels = root.split_evenly((3, 1));
    let max_x = points.iter().map(|p| p.offered).fold(0.0, f64::max) * 1.05;
    let max_rate = points
        .iter()
        .map(|p| p.offered.max(p.achieved))
        .fold(0.0, f64::max)
        * 1.05;
    let max_ms = points
        .iter()
        .map(|p| p.p99_ms)
        .fold(P99_LIMIT_MS * 2.0, f64::max)
        * 1.2;
    let max_cpu = points
        .iter()
        .filter_map(|p| p.cpu_us_per_order)
        .fold(100.0, f64::max)
        * 1.1;

    let mut rate = chart(&panels[0], "achieved rate (req/s)", max_x, 0.0..max_rate)?;
    rate.draw_series(LineSeries::new(
        points.iter().map(|p| (p.offered, p.offered)),
        BLACK.mix(0.3),
    ))
    .map_err(draw)?
    .label("offered")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.3)));
    line(
        &mut rate,
        points.iter().map(|p| (p.offered, p.achieved)),
        BLUE,
        "achieved",
    )?;
    mark_knee(&mut rate, knee, 0.0, max_rate)?;
    legend(&mut rate)?;

    let mut latency = chart(&panels[1], "latency (ms)", max_x, 0.0..max_ms)?;
    line(
        &mut latency,
        points.iter().map(|p| (p.offered, p.p50_ms)),
        GREEN,
        "p50",
    )?;
    line(
        &mut latency,
        points.iter().map(|p| (p.offered, p.p99_ms)),
        RED,
        "p99",
    )?;
    latency
        .draw_series(LineSeries::new(
            [(0.0, P99_LIMIT_MS), (max_x, P99_LIMIT_MS)],
            RED.mix(0.4),
        ))
        .map_err(draw)?
        .label("p99 limit (20 ms)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.mix(0.4)));
    mark_knee(&mut latency, knee, 0.0, max_ms)?;
    legend(&mut latency)?;

    let mut cpu = chart(
        &panels[2],
        "pipeline CPU per order (µs)",
        max_x,
        0.0..max_cpu,
    )?;
    line(
        &mut cpu,
        points
            .iter()
            .filter_map(|p| Some((p.offered, p.cpu_us_per_order?))),
        MAGENTA,
        "CPU per order",
    )?;
    mark_knee(&mut cpu, knee, 0.0, max_cpu)?;
    legend(&mut cpu)?;
    root.present().map_err(draw)?;
    Ok(())
}

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn chart<'a>(
    area: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    y_label: &str,
    max_x: f64,
    y: std::ops::Range<f64>,
) -> anyhow::Result<Chart<'a>> {
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, y)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("offered rate (req/s)")
        .y_desc(y_label)
        .draw()
        .map_err(draw)?;
    Ok(chart)
}

fn line(
    chart: &mut Chart<'_>,
    points: impl Iterator<Item = (f64, f64)> + Clone,
    color: RGBColor,
    label: &str,
) -> anyhow::Result<()> {
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
        .map_err(draw)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(points.map(|point| Circle::new(point, 3, color.filled())))
        .map_err(draw)?;
    Ok(())
}

fn mark_knee(chart: &mut Chart<'_>, knee: Option<f64>, low: f64, high: f64) -> anyhow::Result<()> {
    if let Some(knee) = knee {
        chart
            .draw_series(LineSeries::new(
                [(knee, low), (knee, high)],
                BLACK.stroke_width(1),
            ))
            .map_err(draw)?
            .label(format!("knee ({knee:.0} req/s)"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    }
    Ok(())
}

fn legend(chart: &mut Chart<'_>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(draw)
}

fn draw<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_is_drawn_with_its_knee() {
        let points: Vec<RampPoint> = (1..=5)
            .map(|step| RampPoint {
                offered: 1000.0 * step as f64,
                achieved: 1000.0 * step.min(4) as f64,
                p50_ms: 2.0 * step as f64,
                p99_ms: 5.0 * (step * step) as f64,
                cpu_us_per_order: Some(400.0 / step as f64),
            })
            .collect();
        let path = std::env::temp_dir().join(format!("ramp-{}.svg", std::process::id()));
        ramp_svg(&path, "a ramp", &points, Some(2000.0)).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("knee (2000 req/s)"));
        assert!(svg.contains("pipeline CPU per order"));
    }
}
