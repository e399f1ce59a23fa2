//! Benchmark pictures: one SVG with the latency distribution by percentile (top) and
//! throughput over time (bottom), drawn with `plotters`.
//!
//! Tables give exact numbers, but comparing runs (quorumkv against etcd, reads against
//! updates, before against after a change) is quicker by eye: a tail that lifts at
//! p99.9, or throughput that sags halfway through a phase, shows at a glance.
//!
//! The percentile panel follows HdrHistogram's plotter: the x axis is `1/(1-q)` on a
//! log scale so the tail gets as much room as the median. Both log axes are drawn as
//! linear axes over `log10` values with hand-picked ticks, because plotters' own log
//! scale picks ticks that read poorly ("316 µs") and its range checks are ours to
//! guarantee anyway.
//!
//! SVG text is laid out by the viewer; plotters only estimates text widths (no font
//! features, so no system font libraries are needed), hence the generous margins.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// One latency line: a label and a histogram of latencies in microseconds.
pub struct LatencySeries {
    /// Legend text, e.g. "quorumkv update".
    pub label: String,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
}

/// One throughput line: a label and (seconds since start, ops/s) points.
pub struct ThroughputSeries {
    /// Legend text, e.g. "etcd read".
    pub label: String,
    /// (seconds since the phase started, operations per second).
    pub points: Vec<(f64, f64)>,
}

/// Errors drawing a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw (no non-empty histogram and no throughput point).
    #[error("nothing to plot: no latencies were recorded")]
    Empty,
    /// plotters failed (e.g. the file cannot be written): say which file and why.
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 900;
/// Share of the height (below the title) given to the latency panel: the tail is the
/// part readers study, so it gets the bigger panel.
const LATENCY_SHARE: f64 = 0.58;
const FONT: &str = "sans-serif";

/// Colour-blind-friendly and distinct on white (Tableau 10); series beyond ten reuse them.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Quantile steps per halving of the distance to 100%: enough for a smooth tail
/// without thousands of SVG points.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Write the SVG to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    latency: &[LatencySeries],
    throughput: &[ThroughputSeries],
) -> Result<(), PlotError> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = latency
        .iter()
        .filter(|s| !s.hist.is_empty())
        .map(|s| (s.label.as_str(), percentile_curve(&s.hist)))
        .collect();
    let timelines: Vec<(&str, Vec<(f64, f64)>)> = throughput
        .iter()
        .map(|s| {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (s.label.as_str(), pts)
        })
        .collect();
    let styles = Styles::of(&curves, &timelines);
    let any_throughput = timelines.iter().any(|(_, p)| !p.is_empty());
    if curves.is_empty() && !any_throughput {
        return Err(PlotError::Empty);
    }

    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let body = root
        .titled(title, (FONT, 26).into_font().style(FontStyle::Bold))
        .map_err(|e| draw_err(&e))?;
    let (_, body_height) = body.dim_in_pixel();
    let split = (f64::from(body_height) * LATENCY_SHARE) as u32;
    let (top, bottom) = body.split_vertically(split);

    draw_latency(&top, &curves, &styles.latency).map_err(|e| draw_err(&e))?;
    draw_throughput(&bottom, &timelines, &styles.throughput).map_err(|e| draw_err(&e))?;

    // The backend also writes on drop, but silently; presenting here is what surfaces
    // an unwritable path as an error.
    root.present().map_err(|e| draw_err(&e))
}

/// `(log10(1/(1-q)), latency µs)` points, stopping where the data stops: beyond
/// `1/(1-q) = count` a percentile would be an extrapolation, so the last point is the
/// maximum placed at that bound.
fn percentile_curve(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    let count = hist.len() as f64;
    let x_end = count.log10();
    let mut points = Vec::new();
    for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        let x = (1.0 / (1.0 - q)).log10();
        if !x.is_finite() || x > x_end {
            break;
        }
        points.push((x, latency_y(v.value_iterated_to())));
    }
    points.push((x_end, latency_y(hist.max())));
    points
}

/// log10 of a latency; 0 µs (a sub-microsecond operation) is shown as 1 µs because a
/// log axis has no zero.
fn latency_y(us: u64) -> f64 {
    (us.max(1) as f64).log10()
}

type AreaResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

/// Line styles: one colour per run, so a store's latency lines and its throughput line
/// match across the two panels. A run is the label up to its last word ("etcd" of "etcd
/// update"); its first latency line is solid, the others dashed.
struct Styles {
    /// (colour, dashed) per latency curve.
    latency: Vec<(RGBColor, bool)>,
    /// Colour per throughput line.
    throughput: Vec<RGBColor>,
}

impl Styles {
    fn of(curves: &[(&str, Vec<(f64, f64)>)], timelines: &[(&str, Vec<(f64, f64)>)]) -> Self {
        fn index(run: &str, runs: &mut Vec<String>) -> usize {
            match runs.iter().position(|r| r == run) {
                Some(i) => i,
                None => {
                    runs.push(run.to_string());
                    runs.len() - 1
                }
            }
        }
        let mut runs: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut latency = Vec::new();
        for (label, _) in curves {
            let run = label.rsplit_once(' ').map_or(*label, |(run, _)| run);
            let i = index(run, &mut runs);
            latency.push((PALETTE[i % PALETTE.len()], seen.contains(&i)));
            seen.push(i);
        }
        let throughput = timelines
            .iter()
            .map(|(label, _)| PALETTE[index(label, &mut runs) % PALETTE.len()])
            .collect();
        Styles {
            latency,
            throughput,
        }
    }
}

fn draw_latency(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    curves: &[(&str, Vec<(f64, f64)>)],
    styles: &[(RGBColor, bool)],
) -> AreaResult {
    if curves.is_empty() {
        return no_data(area, "Latency by percentile: no latencies recorded");
    }
    let x_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(0.0_f64, f64::max)
        .ceil()
        .max(1.0);
    let (y_lo, y_hi) = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
    let (y_lo, y_hi, y_bold, y_light) = log_ticks(y_lo, y_hi);

    let x_bold: Vec<f64> = (0..=x_max as u32).map(f64::from).collect();
    let x_light: Vec<f64> = (0..x_max as u32)
        .flat_map(|d| (2..10).map(move |m| f64::from(d) + f64::from(m).log10()))
        .collect();

    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile", (FONT, 20))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(
            TickedAxis::new(0.0, x_max, x_bold, x_light),
            TickedAxis::new(y_lo, y_hi, y_bold, y_light),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| latency_label(*y))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()?;

    for ((label, points), &(color, dashed)) in curves.iter().zip(styles) {
        draw_line(&mut chart, label, points, color, dashed)?;
    }
    // Lower right: at high percentiles every line climbs, so that corner stays empty.
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_throughput(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    timelines: &[(&str, Vec<(f64, f64)>)],
    colors: &[RGBColor],
) -> AreaResult {
    if timelines.iter().all(|(_, p)| p.is_empty()) {
        return no_data(area, "Throughput over time: no samples");
    }
    let all = || timelines.iter().flat_map(|(_, p)| p.iter().copied());
    let x_min = all().map(|(x, _)| x).fold(0.0_f64, f64::min);
    let x_max = all().map(|(x, _)| x).fold(f64::NEG_INFINITY, f64::max);
    let x_max = if x_max > x_min { x_max } else { x_min + 1.0 };
    let y_min = all().map(|(_, y)| y).fold(0.0_f64, f64::min);
    let y_max = all().map(|(_, y)| y).fold(0.0_f64, f64::max);
    let positive_min = all()
        .map(|(_, y)| y)
        .filter(|y| *y > 0.0)
        .fold(f64::INFINITY, f64::min);
    // Stores an order of magnitude apart (an echo server at 70 000 ops/s, a replicated
    // store at 4 000) would leave the slower ones as flat lines on the floor of a
    // linear axis: switch to a log scale then. Seconds with no completed operation have
    // no place on it and are left out of those lines.
    let x = x_min..x_max;
    if y_min >= 0.0 && positive_min.is_finite() && y_max / positive_min > 10.0 {
        let lines: Vec<Line<'_>> = timelines
            .iter()
            .zip(colors)
            .map(|((label, p), &color)| {
                let p = p
                    .iter()
                    .filter(|(_, y)| *y > 0.0)
                    .map(|&(x, y)| (x, y.log10()))
                    .collect::<Vec<_>>();
                (*label, p, color)
            })
            .filter(|(_, p, _)| !p.is_empty())
            .collect();
        // A decade of headroom keeps the legend (upper right) off the data.
        let (lo, hi, bold, light) = log_ticks(positive_min.log10(), y_max.log10() + 1.0);
        return throughput_panel(
            area,
            x,
            TickedAxis::new(lo, hi, bold, light),
            "ops/s (log scale)",
            &|y| format_number(10f64.powf(*y)),
            &lines,
        );
    }
    // Headroom above the highest line keeps the legend (upper right) off the data.
    let y_max = if y_max > y_min {
        y_max + (y_max - y_min) * 0.3
    } else {
        y_min + 1.0
    };
    let lines: Vec<Line<'_>> = timelines
        .iter()
        .zip(colors)
        .map(|((label, p), &color)| (*label, p.clone(), color))
        .collect();
    throughput_panel(
        area,
        x,
        RangedCoordf64::from(y_min..y_max),
        "ops/s",
        &|y| format_number(*y),
        &lines,
    )
}

/// A labelled line of points in one colour.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// The throughput chart over the y axis `y` (linear, or log10 values with their own
/// ticks): one frame, grid and legend for both scales.
fn throughput_panel<Y>(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    x: std::ops::Range<f64>,
    y: Y,
    y_desc: &str,
    y_label: &dyn Fn(&f64) -> String,
    lines: &[Line<'_>],
) -> AreaResult
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput over time", (FONT, 20))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_desc)
        .x_labels(12)
        // A hint for the linear axis; the log axis has its own ticks.
        .y_labels(6)
        .x_label_formatter(&|x| format_number(*x))
        .y_label_formatter(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(245, 245, 245))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()?;
    for (label, points, color) in lines {
        draw_line(&mut chart, label, points, *color, false)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// One labelled line (dashed if asked) with its legend entry.
fn draw_line<'a, X, Y>(
    chart: &mut Chart<'a, X, Y>,
    label: &str,
    points: &[(f64, f64)],
    color: RGBColor,
    dashed: bool,
) -> AreaResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    // Samples all at one x (one sample, or one instant) make a line with no length,
    // which would draw nothing; dots show the values.
    let series = if points.iter().all(|&(x, _)| x == points[0].0) {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?
    } else if dashed {
        chart.draw_series(DashedLineSeries::new(
            points.iter().copied(),
            6,
            4,
            color.stroke_width(2),
        ))?
    } else {
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?
    };
    // One element type for both legends: a "dash" as long as the sample with no gap is
    // a solid line.
    let (dash, gap) = if dashed { (5, 3) } else { (20, 0) };
    series.label(label).legend(move |(x, y)| {
        DashedPathElement::new(vec![(x, y), (x + 20, y)], dash, gap, color.stroke_width(3))
    });
    Ok(())
}

/// The legend box at `position`.
fn legend<'a, X, Y>(chart: &mut Chart<'a, X, Y>, position: SeriesLabelPosition) -> AreaResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

/// A linear f64 axis with chosen ticks. plotters' `with_key_points` would do, but its
/// f64 form lacks the formatter bound `configure_mesh` needs.
struct TickedAxis {
    inner: RangedCoordf64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl TickedAxis {
    fn new(lo: f64, hi: f64, bold: Vec<f64>, light: Vec<f64>) -> Self {
        Self {
            inner: (lo..hi).into(),
            bold,
            light,
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// A panel with nothing to show still says so, so a missing half reads as "no data"
/// rather than as a broken picture.
fn no_data(area: &DrawingArea<SVGBackend, plotters::coord::Shift>, text: &str) -> AreaResult {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 18).into_font())
        .color(&RGBColor(120, 120, 120))
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        ));
    area.draw_text(text, &style, ((w / 2) as i32, (h / 2) as i32))
}

/// Log-axis range and ticks for latencies given as log10 µs: the range snaps outward
/// to the nearest 1-2-5 step (tight, yet ending on a round number), a single value is
/// padded so the range is never empty, and wide ranges label only decades so labels
/// do not crowd. Returns (lo, hi, bold ticks, light ticks), all in log10 space.
fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi >= lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let steps = |first: i32, last: i32, mults: &'static [f64]| {
        (first..=last).flat_map(move |d| mults.iter().map(move |m| f64::from(d) + m.log10()))
    };
    let first_decade = lo.floor() as i32;
    let last_decade = hi.ceil() as i32;
    // Keep lines off the frame, where the axis would hide them: a value on or just
    // inside a step snaps to the next step out.
    let margin = 0.04;
    let (first_decade, last_decade) = (first_decade - 1, last_decade + 1);
    let mut snap_lo = steps(first_decade, last_decade, &[1.0, 2.0, 5.0])
        .filter(|t| *t <= lo - margin)
        .fold(f64::from(first_decade), f64::max);
    let mut snap_hi = steps(first_decade, last_decade, &[1.0, 2.0, 5.0])
        .filter(|t| *t >= hi + margin)
        .fold(f64::from(last_decade), f64::min);
    let eps = 1e-9;
    if snap_hi - snap_lo < 0.3 {
        // The margin already prevents this; kept because a log range must never be empty.
        snap_lo -= 0.3;
        snap_hi += 0.3;
    }
    let mults: &'static [f64] = if snap_hi - snap_lo > 4.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let bold: Vec<f64> = steps(first_decade - 1, last_decade + 1, mults)
        .filter(|t| *t >= snap_lo - eps && *t <= snap_hi + eps)
        .collect();
    let light: Vec<f64> = (first_decade - 1..=last_decade)
        .flat_map(|d| (1..10).map(move |m| f64::from(d) + f64::from(m).log10()))
        .filter(|t| *t >= snap_lo && *t <= snap_hi)
        .collect();
    (snap_lo, snap_hi, bold, light)
}

/// "0%", "90%", "99%", "99.9%", ... for x = log10(1/(1-q)).
fn percentile_label(x: f64) -> String {
    let k = x.round().max(0.0) as usize;
    if k == 0 {
        return "0%".to_string();
    }
    let pct = 100.0 * (1.0 - 10f64.powi(-(k as i32)));
    format!("{:.*}%", k.saturating_sub(2), pct)
}

/// A log10-µs tick as "200 µs", "5 ms", "1 s".
fn latency_label(y: f64) -> String {
    let us = 10f64.powf(y);
    let (value, unit) = if us < 1_000.0 {
        (us, "µs")
    } else if us < 1_000_000.0 {
        (us / 1_000.0, "ms")
    } else {
        (us / 1_000_000.0, "s")
    };
    format!("{} {unit}", format_number(value))
}

/// Numbers without float noise: "3000", "2.5", "1e+20".
fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    if a >= 1e7 {
        format!("{v:.0e}")
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        let s = format!("{v:.1}");
        s.trim_end_matches(".0").to_string()
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_from(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    fn series(label: &str, values: impl IntoIterator<Item = u64>) -> LatencySeries {
        LatencySeries {
            label: label.to_string(),
            hist: hist_from(values),
        }
    }

    // Goal: the normal case writes a real SVG carrying the title and every legend label.
    #[test]
    fn writes_svg_with_title_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.svg");
        let latency = [
            series("quorumkv update", (1..=10_000).map(|i| 200 + i % 700)),
            series("etcd read", (1..=10_000).map(|i| 1_500 + i % 3_000)),
        ];
        let throughput = [ThroughputSeries {
            label: "quorumkv ops".to_string(),
            points: (0..30)
                .map(|s| (f64::from(s), 3_000.0 + f64::from(s % 7)))
                .collect(),
        }];
        write_svg(&path, "workload A", &latency, &throughput).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("workload A"));
        assert!(svg.contains("quorumkv update"));
        assert!(svg.contains("etcd read"));
        assert!(svg.contains("quorumkv ops"));
        assert!(svg.contains("99.9%"));
    }

    // Goal: with nothing recorded the caller gets Empty, not a blank picture.
    #[test]
    fn empty_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.svg");
        let err = write_svg(&path, "t", &[], &[]).unwrap_err();
        assert!(matches!(err, PlotError::Empty), "{err:?}");

        // Empty histograms and timelines of only NaN count as nothing too.
        let latency = [series("none", [])];
        let throughput = [ThroughputSeries {
            label: "nan".to_string(),
            points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)],
        }];
        let err = write_svg(&path, "t", &latency, &throughput).unwrap_err();
        assert!(matches!(err, PlotError::Empty), "{err:?}");
        assert!(!path.exists());
    }

    // Goal: degenerate data (one sample, all-equal values, zero and huge latencies,
    // single-point and NaN-laden timelines, one panel empty) never panics and still
    // yields a file.
    #[test]
    fn degenerate_inputs_draw() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(Vec<LatencySeries>, Vec<ThroughputSeries>)> = vec![
            (vec![series("one sample", [420])], vec![]),
            (
                vec![series("all equal", std::iter::repeat_n(1_000, 5_000))],
                vec![],
            ),
            (vec![series("zero", [0, 0, 0])], vec![]),
            (
                vec![series("huge", [1, u64::MAX / 4])],
                vec![ThroughputSeries {
                    label: "huge".to_string(),
                    points: vec![(0.0, 1e300), (1e300, 0.0)],
                }],
            ),
            (
                vec![series("empty", [])],
                vec![ThroughputSeries {
                    label: "single point".to_string(),
                    points: vec![(3.0, 1_200.0)],
                }],
            ),
            (
                vec![series("some", [100, 200, 300])],
                vec![
                    ThroughputSeries {
                        label: "nan".to_string(),
                        points: vec![(0.0, 10.0), (f64::NAN, 5.0), (2.0, f64::NAN), (3.0, 12.0)],
                    },
                    ThroughputSeries {
                        label: "zero ops".to_string(),
                        points: vec![(0.0, 0.0), (1.0, 0.0)],
                    },
                    ThroughputSeries {
                        label: "no points".to_string(),
                        points: vec![],
                    },
                ],
            ),
            (
                vec![],
                vec![ThroughputSeries {
                    label: "same time".to_string(),
                    points: vec![(5.0, 0.0), (5.0, 0.0)],
                }],
            ),
        ];
        for (i, (latency, throughput)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("case{i}.svg"));
            write_svg(&path, "degenerate", latency, throughput)
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.contains("<svg"), "case {i}");
        }
    }

    // Goal: a path that cannot be written is reported as Draw and names the file, so
    // the user knows which output failed.
    #[test]
    fn unwritable_path_is_a_draw_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("bench.svg");
        let err = write_svg(&path, "t", &[series("a", [100, 200])], &[]).unwrap_err();
        match &err {
            PlotError::Draw { path: p, .. } => assert_eq!(p, &path.display().to_string()),
            other => panic!("expected Draw, got {other:?}"),
        }
        assert!(err.to_string().contains("no-such-dir"));
    }

    // Goal: the percentile axis is labelled the way HdrHistogram plots are read.
    #[test]
    fn percentile_and_latency_labels() {
        let labels: Vec<String> = (0..=5).map(|k| percentile_label(f64::from(k))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert_eq!(latency_label(2.0), "100 µs");
        assert_eq!(latency_label(3.0), "1 ms");
        assert_eq!(latency_label(4.0 + 2f64.log10()), "20 ms");
        assert_eq!(latency_label(6.0), "1 s");
    }

    // Goal: the curve never reaches past the data (1/(1-q) <= count) and ends at the max.
    #[test]
    fn curve_stops_at_the_data() {
        let h = hist_from(1..=1_000);
        let curve = percentile_curve(&h);
        let x_end = 1_000f64.log10();
        assert!(curve.iter().all(|&(x, _)| x <= x_end + 1e-12));
        let &(x, y) = curve.last().unwrap();
        assert!((x - x_end).abs() < 1e-12);
        assert!((y - (h.max() as f64).log10()).abs() < 1e-12);
        assert!(curve.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    // Goal: timelines an order of magnitude apart switch the throughput panel to a log
    // scale (so the slower store is not a flat line on the floor); close ones stay linear.
    #[test]
    fn far_apart_throughputs_use_a_log_scale() {
        let dir = tempfile::tempdir().unwrap();
        let line = |label: &str, ops: f64| ThroughputSeries {
            label: label.into(),
            points: (1..=10).map(|t| (f64::from(t), ops)).collect(),
        };
        let far = dir.path().join("far.svg");
        write_svg(
            &far,
            "t",
            &[],
            &[line("echo", 70_000.0), line("kv", 4_000.0)],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&far).unwrap().contains("log scale"));
        let near = dir.path().join("near.svg");
        write_svg(&near, "t", &[], &[line("a", 5_000.0), line("b", 4_000.0)]).unwrap();
        assert!(!std::fs::read_to_string(&near)
            .unwrap()
            .contains("log scale"));
    }
}
