//! PNG plots of training runs (plotters, with an embedded font so they render anywhere).
use std::path::Path;
use std::sync::Once;

use dino_runtime::{Error, Result};
use plotters::prelude::*;

use crate::train::log::{Record, StepRecord};

const FONT: &str = "dino-sans";

/// The embedded font's family name (registered on first use).
pub fn font() -> &'static str {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("assets/DejaVuSans-subset.ttf"))
            .unwrap_or_else(|_| panic!("the embedded font is valid"));
    });
    FONT
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Format { path: path.to_path_buf(), why: format!("cannot draw the plot: {e}") }
}

/// One named line of a plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
}

/// A line chart of `series` written to `path` as PNG.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    charts_png(path, &[Panel { title, x_label, y_label, series, markers: &[] }], 600)
}

/// Panels stacked top to bottom, each `panel_h` pixels high, written to `path` as PNG.
fn charts_png(path: &Path, panels: &[Panel], panel_h: u32) -> Result<()> {
    let (w, h) = (960u32, panel_h * panels.len() as u32);
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
            let all: Vec<(f64, f64)> =
                panel.series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.1.is_finite()).collect();
            if all.is_empty() {
                return Err(plot_err(path, format!("{}: no finite points", panel.title)));
            }
            let (x0, x1) = all.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
            let (y0, y1) = all.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
            let pad = ((y1 - y0) * 0.05).max(1e-3);
            let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
            draw(area, path, panel, (x0, x1), (y0 - pad, y1 + pad))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    // drawn in memory, written atomically: a crash never leaves half a picture
    dino_runtime::data::Image::new(w as usize, h as usize, 3, pixels).save_png(path)
}

/// One chart of a picture: its lines and the iterations marked on it (vertical lines).
struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series<'a>],
    markers: &'a [(f64, String)],
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw(root: &Area, path: &Path, p: &Panel, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Result<()> {
    let f = font();
    let mut chart = ChartBuilder::on(root)
        .caption(p.title, (f, 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(p.x_label)
        .y_desc(p.y_label)
        .label_style((f, 15))
        .axis_desc_style((f, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for s in p.series {
        let style = ShapeStyle::from(&s.color).stroke_width(2);
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite()).collect();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(pts, 8, 6, style))
        } else if pts.len() < 20 {
            chart.draw_series(LineSeries::new(pts.clone(), style).point_size(4))
        } else {
            chart.draw_series(LineSeries::new(pts, style))
        };
        let (color, gap) = (s.color, if s.dashed { (8, 14) } else { (11, 11) });
        // the legend's sample dashed like its line: two strokes with a gap, or none
        drawn.map_err(|e| plot_err(path, e))?.label(s.name).legend(move |(x, y)| {
            let stroke = ShapeStyle::from(&color).stroke_width(3);
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (gap.0, 0)], stroke)
                + PathElement::new(vec![(gap.1, 0), (22, 0)], stroke)
        });
    }
    let red = RGBColor(214, 39, 40);
    for (x, label) in p.markers {
        let style = ShapeStyle::from(&red).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(vec![(*x, y0), (*x, y1)], 6, 4, style))
            .map_err(|e| plot_err(path, e))?;
        let at = (*x + (x1 - x0) * 0.005, y0 + (y1 - y0) * 0.06);
        chart
            .draw_series(std::iter::once(Text::new(label.clone(), at, (f, 15).into_font().color(&red))))
            .map_err(|e| plot_err(path, e))?;
    }
    chart
        .configure_series_labels()
        .label_font((f, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend_position(p.series, (y0, y1)))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Where the legend hides no line's end: the lower right corner when the lines end in the
/// upper half (accuracies rising), else the upper right (losses falling).
fn legend_position(series: &[Series], (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let ends: Vec<f64> = series
        .iter()
        .filter(|s| !s.dashed)
        .filter_map(|s| s.points.iter().rev().find(|p| p.1.is_finite()))
        .map(|p| (p.1 - y0) / (y1 - y0).max(f64::MIN_POSITIVE))
        .collect();
    if !ends.is_empty() && ends.iter().sum::<f64>() / ends.len() as f64 > 0.5 {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

fn step_records(records: &[Record]) -> Vec<&StepRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The loss curve of a training log, with the teacher's entropy and ln K for reference, and
/// DINOv2's terms (iBOT's loss, KoLeo) apart where the objective has them.
pub fn loss_plot(path: &Path, records: &[Record], title: &str) -> Result<()> {
    let steps = step_records(records);
    let Some(first) = steps.first() else { return Err(plot_err(path, "the log has no steps yet")) };
    let ln_k = first.ln_k;
    let last = steps.last().map(|s| s.iteration as f64).unwrap_or(0.0);
    let mut series = vec![
        Series {
            name: "loss",
            points: steps.iter().map(|s| (s.iteration as f64, s.loss)).collect(),
            color: RGBColor(31, 119, 180),
            dashed: false,
        },
        Series {
            name: "teacher entropy",
            points: steps.iter().map(|s| (s.iteration as f64, s.teacher_entropy)).collect(),
            color: RGBColor(255, 127, 14),
            dashed: false,
        },
        Series {
            name: "entropy of the mean teacher output",
            points: steps.iter().map(|s| (s.iteration as f64, s.teacher_mean_entropy)).collect(),
            color: RGBColor(44, 160, 44),
            dashed: false,
        },
        Series {
            name: "ln K",
            points: vec![(0.0, ln_k), (last.max(1.0), ln_k)],
            color: RGBColor(120, 120, 120),
            dashed: true,
        },
    ];
    let terms: [(&str, fn(&StepRecord) -> Option<f64>, RGBColor); 2] = [
        ("iBOT loss", |s| s.ibot, RGBColor(148, 103, 189)),
        ("KoLeo (unweighted)", |s| s.koleo, RGBColor(140, 86, 75)),
    ];
    for (name, term, color) in terms {
        let points: Vec<(f64, f64)> = steps.iter().filter_map(|s| term(s).map(|v| (s.iteration as f64, v))).collect();
        if !points.is_empty() {
            series.push(Series { name, points, color, dashed: false });
        }
    }
    line_chart(path, title, "iteration", "nats", &series)
}

/// The collapse diagnostics of a training log, two panels over the iterations: the loss
/// against ln K (a loss stuck at ln K is the uniform collapse), then the teacher's entropy, the
/// entropy of its batch mean and KL(teacher || uniform), with the monitor's thresholds dashed.
/// The symptoms the monitor raised are marked where they were raised.
pub fn diagnostics_plot(path: &Path, records: &[Record], title: &str) -> Result<()> {
    let steps = step_records(records);
    let Some(first) = steps.first() else { return Err(plot_err(path, "the log has no steps yet")) };
    let ln_k = first.ln_k;
    let last = steps.last().map_or(1.0, |s| s.iteration as f64).max(1.0);
    let markers: Vec<(f64, String)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Health(a) => Some((a.iteration as f64, a.symptom.name().to_string())),
            _ => None,
        })
        .collect();
    let th = crate::train::health::Thresholds::default();
    let line = |name, v: f64, color| Series { name, points: vec![(0.0, v), (last, v)], color, dashed: true };
    let of = |f: fn(&StepRecord) -> f64| steps.iter().map(|s| (s.iteration as f64, f(s))).collect::<Vec<_>>();
    let grey = RGBColor(120, 120, 120);
    let loss = [
        Series { name: "loss", points: of(|s| s.loss), color: RGBColor(31, 119, 180), dashed: false },
        line("ln K (uniform student and teacher)", ln_k, grey),
    ];
    let teacher = [
        Series {
            name: "teacher entropy",
            points: of(|s| s.teacher_entropy),
            color: RGBColor(255, 127, 14),
            dashed: false,
        },
        Series {
            name: "entropy of the batch-mean teacher output",
            points: of(|s| s.teacher_mean_entropy),
            color: RGBColor(44, 160, 44),
            dashed: false,
        },
        Series {
            name: "KL(teacher || uniform)",
            points: of(|s| s.kl_uniform),
            color: RGBColor(148, 103, 189),
            dashed: false,
        },
        line("ln K", ln_k, grey),
        line("uniform-collapse threshold", th.uniform * ln_k, RGBColor(255, 187, 120)),
        line("one-dimension threshold", th.one_dim * ln_k, RGBColor(152, 223, 138)),
    ];
    let top = format!("{title}: loss against ln K");
    let bottom = "teacher: entropy (ln K = uniform, 0 = one-hot), entropy of its mean, KL to uniform";
    let panels = [
        Panel { title: &top, x_label: "iteration", y_label: "nats", series: &loss, markers: &markers },
        Panel { title: bottom, x_label: "iteration", y_label: "nats", series: &teacher, markers: &markers },
    ];
    charts_png(path, &panels, 460)
}

/// Teacher k-NN accuracy over the epochs of a training log (random init at epoch 0), with
/// the raw-pixel baseline when the log has it.
pub fn knn_plot(path: &Path, records: &[Record], title: &str) -> Result<()> {
    let mut per_k: Vec<(usize, Vec<(f64, f64)>)> = vec![(20, vec![]), (200, vec![])];
    let mut raw = (None, None);
    for r in records {
        match r {
            Record::Epoch(e) => {
                for (k, pts) in &mut per_k {
                    if let Some(x) = e.knn.as_ref().and_then(|v| v.iter().find(|x| x.k == *k)) {
                        pts.push((e.epoch as f64, x.top1));
                    }
                }
            }
            Record::Baseline(b) => {
                let at = |k: usize| b.knn.iter().find(|x| x.k == k).map(|x| x.top1);
                raw = (at(20), at(200));
            }
            _ => {}
        }
    }
    if per_k[0].1.is_empty() {
        return Err(plot_err(path, "the log has no k-NN results (train with --knn)"));
    }
    let last = per_k[0].1.last().map(|p| p.0).unwrap_or(1.0).max(1.0);
    let mut series = vec![
        Series {
            name: "teacher k-NN top-1, k = 20",
            points: per_k[0].1.clone(),
            color: RGBColor(31, 119, 180),
            dashed: false,
        },
        Series {
            name: "teacher k-NN top-1, k = 200",
            points: per_k[1].1.clone(),
            color: RGBColor(148, 103, 189),
            dashed: false,
        },
    ];
    // the baselines dashed, each in its k's colour
    for (r, name, color) in
        [(raw.0, "raw pixels, k = 20", series[0].color), (raw.1, "raw pixels, k = 200", series[1].color)]
    {
        if let Some(r) = r {
            series.push(Series { name, points: vec![(0.0, r), (last, r)], color, dashed: true });
        }
    }
    line_chart(path, title, "epoch (0 = random initialization)", "top-1 accuracy (%)", &series)
}

/// A horizontal bar chart on a logarithmic axis (values spanning orders of magnitude, as
/// step times of an ablation do), one labelled bar per `(name, value)`, written to `path`.
pub fn bar_chart(path: &Path, title: &str, x_label: &str, bars: &[(String, f64)]) -> Result<()> {
    let bars: Vec<&(String, f64)> = bars.iter().filter(|b| b.1.is_finite() && b.1 > 0.0).collect();
    if bars.is_empty() {
        return Err(plot_err(path, "no positive finite values"));
    }
    let max = bars.iter().fold(0f64, |m, b| m.max(b.1));
    let min = bars.iter().fold(f64::MAX, |m, b| m.min(b.1));
    // decades around the values, room on the right for the longest label
    let lo = 10f64.powf((min / 2.0).log10().floor());
    let hi = 10f64.powf((max * 4.0).log10().ceil());
    let (w, h) = (960u32, 120 + 44 * bars.len() as u32);
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let f = font();
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let n = bars.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (f, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(8)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..n)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .disable_y_mesh()
            .y_labels(0)
            .label_style((f, 15))
            .axis_desc_style((f, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, (name, v)) in bars.iter().enumerate() {
            // first row at the top
            let y = n - 1.0 - i as f64;
            let color = Palette99::pick(i).mix(0.55);
            chart
                .draw_series(std::iter::once(Rectangle::new([(lo, y + 0.12), (*v, y + 0.88)], color.filled())))
                .map_err(|e| plot_err(path, e))?;
            let label = format!("{name}  {v:.1}");
            chart
                .draw_series(std::iter::once(Text::new(label, (lo * 1.08, y + 0.68), (f, 16).into_font())))
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    dino_runtime::data::Image::new(w as usize, h as usize, 3, pixels).save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(points: Vec<(f64, f64)>, dashed: bool) -> Series<'static> {
        Series { name: "s", points, color: RGBColor(0, 0, 0), dashed }
    }

    #[test]
    fn the_legend_goes_where_the_lines_do_not_end() {
        let rising = [line(vec![(0.0, 60.0), (5.0, 84.0)], false), line(vec![(0.0, 85.0), (5.0, 85.0)], true)];
        assert!(matches!(legend_position(&rising, (60.0, 85.0)), SeriesLabelPosition::LowerRight));
        let falling = [line(vec![(0.0, 7.0), (100.0, 2.0), (101.0, f64::NAN)], false)];
        assert!(matches!(legend_position(&falling, (2.0, 7.0)), SeriesLabelPosition::UpperRight));
        // only baselines, or nothing finite: the usual corner
        assert!(matches!(legend_position(&rising[1..], (60.0, 85.0)), SeriesLabelPosition::UpperRight));
        assert!(matches!(legend_position(&[], (0.0, 0.0)), SeriesLabelPosition::UpperRight));
    }
}
