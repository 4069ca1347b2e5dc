//! `--plot FILE.svg`: capacity, internal demand, lent and leased GPUs over time for the `sublet` policy.
//!
//! A month of minutes is 44,640 points per line; the lines are averaged into at most [`MAX_POINTS`] buckets so
//! the SVG stays small and readable.

use plotters::prelude::*;

use super::sublet::Series;

const MAX_POINTS: usize = 1500;

/// Draws `series` (one entry per step of `step_seconds`) as an SVG document.
pub fn svg(series: &Series, step_seconds: i64, title: &str) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1400, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let bucket = series.len().div_ceil(MAX_POINTS).max(1);
        let day = 86_400.0 / step_seconds as f64;
        let points = |i: usize| -> Vec<(f64, f64)> {
            series
                .chunks(bucket)
                .enumerate()
                .map(|(b, c)| {
                    let mean = c.iter().map(|v| f64::from(v[i])).sum::<f64>() / c.len() as f64;
                    ((b * bucket) as f64 / day, mean)
                })
                .collect()
        };
        let days = series.len() as f64 / day;
        let top = series.iter().map(|v| v[0]).max().unwrap_or(1).max(1) as f64 * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..days.max(1e-9), 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("days from the trace start")
            .y_desc("GPUs")
            .draw()
            .map_err(|e| e.to_string())?;
        let lines = [
            ("capacity", 0, BLACK),
            ("internal demand", 1, BLUE),
            ("lent (out of internal use)", 2, RGBColor(230, 150, 0)),
            ("leased", 3, RGBColor(0, 150, 60)),
        ];
        for (label, i, color) in lines {
            chart
                .draw_series(LineSeries::new(points(i), color.stroke_width(1)))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_line_with_its_legend() {
        let series: Series = (0..5000u32)
            .map(|i| [64, i % 64, (64 - i % 64) / 2, (64 - i % 64) / 4])
            .collect();
        let svg = svg(&series, 60, "test").unwrap();
        assert!(svg.starts_with("<svg"));
        for label in ["capacity", "internal demand", "lent (out of internal use)", "leased"] {
            assert!(svg.contains(label), "{label} missing");
        }
        // Bucketed: far fewer points than steps.
        assert!(svg.matches("<polyline").count() >= 4);
    }
}
