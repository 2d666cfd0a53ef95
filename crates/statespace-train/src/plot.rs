//! Line plots to PNG (plotters' bitmap backend, encoded by the `png` crate; the DejaVu Sans font is
//! embedded so plots look the same on every machine): a run's `curves.png` and the CLI's figures.

use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded font is valid; should registration ever fail, text is simply not drawn.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One curve: a label and its points.
pub struct Series<'a> {
    /// The legend entry (empty: none).
    pub label: &'a str,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure: axis labels, its curves, and whether each point gets a marker (for
/// series with few points, e.g. one validation per epoch).
pub struct Panel<'a> {
    /// The x axis label.
    pub x_label: &'a str,
    /// The y axis label.
    pub y_label: &'a str,
    /// The curves.
    pub series: Vec<Series<'a>>,
    /// A marker at every point.
    pub markers: bool,
}

/// Draws `series` as lines on one chart and writes a PNG to `path` (atomically).
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<(), String> {
    let series = series
        .iter()
        .map(|s| Series {
            label: s.label,
            points: s.points.clone(),
        })
        .collect();
    panels_plot(
        path,
        title,
        &[Panel {
            x_label,
            y_label,
            series,
            markers: false,
        }],
    )
}

/// Draws the panels one above the other under one title and writes a PNG to `path`: encoded in
/// memory, then written to a temporary file and renamed, so a failed write (a full disk) leaves
/// the previous file or none, never a truncated one.
pub fn panels_plot(path: &Path, title: &str, panels: &[Panel<'_>]) -> Result<(), String> {
    figure(path, title, panels, true)
}

/// [`panels_plot`], with the x range shared by the panels (`share_x`, steps line up) or each
/// panel's own (panels over different quantities).
pub fn figure(path: &Path, title: &str, panels: &[Panel<'_>], share_x: bool) -> Result<(), String> {
    register_font();
    let (w, h) = (1000u32, 200 + 400 * panels.len().max(1) as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| format!("drawing failed: {e}"))?;
        let body = root
            .titled(title, ("sans-serif", 24))
            .map_err(|e| format!("drawing failed: {e}"))?;
        let areas = body.split_evenly((panels.len().max(1), 1));
        // the panels share the x range (steps line up)
        let xs = panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.points.iter())
            .map(|p| p.0)
            .filter(|x| x.is_finite());
        let x_range = xs.fold(None, |r: Option<(f64, f64)>, x| {
            Some(r.map_or((x, x), |(a, b)| (a.min(x), b.max(x))))
        });
        let x_range = x_range.filter(|_| share_x);
        for (area, panel) in areas.iter().zip(panels) {
            draw(area, panel, x_range).map_err(|e| format!("drawing failed: {e}"))?;
        }
        root.present().map_err(|e| format!("drawing failed: {e}"))?;
    }
    write_png(path, &buf, w, h)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
    x_range: Option<(f64, f64)>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let series = &panel.series;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((a, b)) = x_range {
        (x0, x1) = (a, b);
    }
    if x1 <= x0 {
        // a single point (one validation) sits in the middle of a unit-wide axis
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3 * y1.abs().max(1e-9));
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(root)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label)
        .y_desc(panel.y_label)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 && x.abs() < 1e9 {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let finite: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        // short series (a few validations) get a marker per point, so even one point shows
        if panel.markers || finite.len() <= 64 {
            chart.draw_series(finite.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    if series.len() > 1 || series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    Ok(())
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<(), String> {
    let name = path.display();
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| format!("{name}: cannot encode the PNG: {e}"))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| format!("{name}: cannot encode the PNG: {e}"))?;
        writer
            .finish()
            .map_err(|e| format!("{name}: cannot encode the PNG: {e}"))?;
    }
    statespace_core::engine::checkpoint::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

/// Draws `curves.png` from `metrics.jsonl`: training and validation loss against the step in one
/// panel, validation accuracy (one marker per validation) in a second one for classification.
pub fn plot_curves(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let (mut loss, mut val_loss, mut val_acc) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(l) = v["loss"].as_f64() {
            loss.push((step, l));
        }
        if let Some(l) = v["val_loss"].as_f64() {
            val_loss.push((step, l));
        }
        if let Some(a) = v["val_acc"].as_f64() {
            val_acc.push((step, 100.0 * a));
        }
    }
    let mut panels = vec![Panel {
        x_label: "step",
        y_label: "loss",
        series: vec![
            Series {
                label: "training loss",
                points: loss,
            },
            Series {
                label: "validation loss",
                points: val_loss,
            },
        ],
        markers: false,
    }];
    if !val_acc.is_empty() {
        panels.push(Panel {
            x_label: "step",
            y_label: "validation accuracy (%)",
            series: vec![Series {
                label: "validation accuracy",
                points: val_acc,
            }],
            markers: true,
        });
    }
    panels_plot(
        &dir.join("curves.png"),
        &format!("training curves — {}", dir.display()),
        &panels,
    )
}
