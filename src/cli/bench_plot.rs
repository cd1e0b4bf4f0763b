//! `wgpool bench --plot report.svg`: throughput against tensor size, GPU and CPU, forward and
//! backward, on a sweep of case-A-shaped tensors (N×64×112×112, kernel 2).

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use wgpool::bench::{Direction, Prepared, bytes_moved, random_data, time_for};
use wgpool::{Context, cpu};

use super::Failure;
use super::bench::sweep_specs;

struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Measures the sweep and writes the SVG.
pub fn draw(ctx: &Context, path: &Path, software: bool, no_cpu: bool) -> Result<(), Failure> {
    let mut series = vec![];
    for (device, color) in [("GPU", RGBColor(0x1f, 0x77, 0xb4)), ("CPU", RGBColor(0xd6, 0x27, 0x28))] {
        if device == "CPU" && no_cpu {
            continue;
        }
        for (direction, dashed) in [(Direction::Forward, false), (Direction::Backward, true)] {
            series.push(Series { label: format!("{device} {}", direction.name()), color, dashed, points: vec![] });
        }
    }
    for spec in sweep_specs(software) {
        let prepared = Prepared::new::<f32>(ctx, &spec, 5)?;
        let g = prepared.geometry;
        let megabytes = g.input_len() as f64 * 4.0 / 1e6;
        let input: Vec<f32> = random_data(g.input_len(), 5);
        let grad_output: Vec<f32> = random_data(g.output_len(), 6);
        let indices = if no_cpu { vec![] } else { cpu::forward(&spec, &input)?.indices };
        for s in series.iter_mut() {
            let direction = if s.label.ends_with("fwd") { Direction::Forward } else { Direction::Backward };
            let ms = if s.label.starts_with("GPU") {
                prepared.time(ctx, direction, Duration::from_millis(20), 20)?.median_ms()
            } else {
                let budget = Duration::from_millis(200);
                match direction {
                    Direction::Forward => time_for(budget, 2, || cpu::forward(&spec, &input).map(|_| ()))?,
                    Direction::Backward => {
                        time_for(budget, 2, || cpu::backward(&spec, &grad_output, &indices).map(|_| ()))?
                    }
                }
                .median_ms()
            };
            s.points.push((megabytes, bytes_moved(&g, 4, direction) as f64 / (ms * 1e6)));
        }
    }
    let info = ctx.adapter_info();
    let title = format!("wgpool max-pool throughput, k2 s2 on N x 64 x 112 x 112 ({:?} {})", info.backend, info.name);
    plot(path, &title, &series).map_err(|e| Failure(format!("{}: could not draw the plot: {e}", path.display())))
}

fn plot(path: &Path, title: &str, series: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x_min, x_max) = xs.fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let y_max = ys.fold(0f64, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((x_min * 0.8..x_max * 1.25).log_scale(), 0f64..y_max.max(1.0))?;
    chart.configure_mesh().x_desc("input size (MB, log scale)").y_desc("throughput (GB/s moved)").draw()?;
    for s in series {
        let style = ShapeStyle { color: s.color.to_rgba(), filled: false, stroke_width: 2 };
        let line: Vec<(f64, f64)> = s.points.clone();
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(line, 6, 4, style))?.label(&s.label).legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    ShapeStyle { color: style.color, filled: false, stroke_width: 2 },
                )
            });
        } else {
            chart
                .draw_series(LineSeries::new(line, style))?
                .label(&s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, style.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
