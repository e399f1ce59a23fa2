//! Hand-made SVG plots of a run: every operation's latency over time
//! (log scale), and completed operations per second, both with the
//! nemesis's fault periods shaded, so a latency spike or a throughput dip
//! can be lined up with the fault that caused it at a glance. No plotting
//! crate: the shapes are few, and a self-contained file is easy to attach.

use std::fmt::Write as _;

use crate::harness::runner::NemesisPeriod;
use crate::history::Outcome;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Above this many points the ok ones are thinned (failures and
/// indeterminate ops are always drawn): browsers choke on huge SVGs.
pub(crate) const MAX_POINTS: usize = 20_000;

/// One operation on the latency plot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyPoint {
    /// Completion time, s since the start.
    pub t_s: f64,
    /// Latency, ms.
    pub ms: f64,
    pub outcome: Outcome,
    /// Index into the function names (selects the marker shape).
    pub f: usize,
}

/// One line of the rate plot: completions per 1 s bucket.
#[derive(Debug, Clone)]
pub(crate) struct RateSeries {
    pub f: usize,
    pub outcome: Outcome,
    pub per_second: Vec<f64>,
}

fn colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "#1f77b4",
        Outcome::Fail => "#d62728",
        Outcome::Info => "#ff7f0e",
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A marker of shape `f` centred at (x, y).
fn marker(out: &mut String, f: usize, x: f64, y: f64, fill: &str) {
    let r = 2.5;
    let _ = match f % 4 {
        0 => writeln!(
            out,
            "<circle cx='{x:.1}' cy='{y:.1}' r='{r}' fill='{fill}'/>"
        ),
        1 => writeln!(
            out,
            "<rect x='{:.1}' y='{:.1}' width='{:.1}' height='{:.1}' fill='{fill}'/>",
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        2 => writeln!(
            out,
            "<polygon points='{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}' fill='{fill}'/>",
            x,
            y - r - 0.5,
            x - r,
            y + r,
            x + r,
            y + r
        ),
        _ => writeln!(
            out,
            "<polygon points='{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}' fill='{fill}'/>",
            x,
            y - r,
            x + r,
            y,
            x,
            y + r,
            x - r,
            y
        ),
    };
}

/// The frame: title, shaded fault periods, x axis in seconds.
fn frame(out: &mut String, title: &str, y_label: &str, span_s: f64, periods: &[NemesisPeriod]) {
    let _ = writeln!(
        out,
        "<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' font-family='sans-serif' font-size='12'>"
    );
    let _ = writeln!(
        out,
        "<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>"
    );
    let _ = writeln!(
        out,
        "<text x='{}' y='22' text-anchor='middle' font-size='15'>{}</text>",
        WIDTH / 2.0,
        escape(title)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    for p in periods {
        let x0 = LEFT + plot_w * (p.start.as_secs_f64() / span_s).min(1.0);
        let x1 = LEFT + plot_w * (p.end.as_secs_f64() / span_s).min(1.0);
        let _ = writeln!(
            out,
            "<rect x='{x0:.1}' y='{TOP}' width='{:.1}' height='{plot_h}' fill='#888' fill-opacity='0.18'/>",
            (x1 - x0).max(1.0)
        );
        let _ = writeln!(
            out,
            "<text x='{:.1}' y='{:.1}' font-size='10' fill='#555'>{}</text>",
            x0 + 2.0,
            TOP + 11.0,
            escape(&p.fault)
        );
    }
    let _ = writeln!(
        out,
        "<rect x='{LEFT}' y='{TOP}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#444'/>"
    );
    let step = nice_step(span_s / 10.0);
    let mut t = 0.0;
    while t <= span_s + 1e-9 {
        let x = LEFT + plot_w * t / span_s;
        let _ = writeln!(
            out,
            "<line x1='{x:.1}' y1='{}' x2='{x:.1}' y2='{}' stroke='#444'/><text x='{x:.1}' y='{}' text-anchor='middle'>{}</text>",
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0,
            trim(t)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        "<text x='{}' y='{}' text-anchor='middle'>time (s)</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        out,
        "<text x='16' y='{}' text-anchor='middle' transform='rotate(-90 16 {})'>{}</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn legend(out: &mut String, rows: &[(String, usize, Outcome, bool)]) {
    let x = WIDTH - RIGHT + 15.0;
    for (i, (label, f, o, line)) in rows.iter().enumerate() {
        let y = TOP + 10.0 + 16.0 * i as f64;
        if *line {
            let _ = writeln!(
                out,
                "<line x1='{x}' y1='{y}' x2='{}' y2='{y}' stroke='{}' stroke-width='2' stroke-dasharray='{}'/>",
                x + 18.0,
                colour(*o),
                dash(*f)
            );
        } else {
            marker(out, *f, x + 9.0, y, colour(*o));
        }
        let _ = writeln!(
            out,
            "<text x='{}' y='{}'>{}</text>",
            x + 24.0,
            y + 4.0,
            escape(label)
        );
    }
}

fn dash(f: usize) -> &'static str {
    ["none", "6 3", "2 2", "8 3 2 3"][f % 4]
}

/// Latency of every operation over time; log-scale y in ms.
pub(crate) fn latency(
    title: &str,
    points: &[LatencyPoint],
    f_names: &[String],
    span_s: f64,
    periods: &[NemesisPeriod],
) -> String {
    let span_s = span_s.max(1e-3);
    let mut out = String::new();
    let positive: Vec<f64> = points.iter().map(|p| p.ms).filter(|m| *m > 0.0).collect();
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().copied().fold(0.0, f64::max);
    let (lo_exp, hi_exp) = if positive.is_empty() {
        (-1, 3)
    } else {
        let l = lo.log10().floor() as i32;
        (l, (hi.log10().ceil() as i32).max(l + 1))
    };
    let ok = points.iter().filter(|p| p.outcome == Outcome::Ok).count();
    let others = points.len() - ok;
    let keep_every = if points.len() > MAX_POINTS {
        ok.div_ceil(MAX_POINTS.saturating_sub(others).max(1))
    } else {
        1
    };
    let title = if keep_every > 1 {
        format!("{title} (1 in {keep_every} ok ops drawn)")
    } else {
        title.to_string()
    };
    frame(&mut out, &title, "latency (ms, log scale)", span_s, periods);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y_of = |ms: f64| {
        let l = ms.max(10f64.powi(lo_exp)).log10();
        TOP + plot_h * (1.0 - (l - lo_exp as f64) / (hi_exp - lo_exp) as f64)
    };
    for e in lo_exp..=hi_exp {
        let y = y_of(10f64.powi(e));
        let _ = writeln!(
            out,
            "<line x1='{}' y1='{y:.1}' x2='{LEFT}' y2='{y:.1}' stroke='#444'/><line x1='{LEFT}' y1='{y:.1}' x2='{}' y2='{y:.1}' stroke='#ddd'/><text x='{}' y='{:.1}' text-anchor='end'>{}</text>",
            LEFT - 5.0,
            LEFT + plot_w,
            LEFT - 8.0,
            y + 4.0,
            trim(10f64.powi(e))
        );
    }
    let mut seen_ok = 0usize;
    for p in points {
        if p.outcome == Outcome::Ok {
            seen_ok += 1;
            if !(seen_ok - 1).is_multiple_of(keep_every) {
                continue;
            }
        }
        let x = LEFT + plot_w * (p.t_s / span_s).clamp(0.0, 1.0);
        marker(&mut out, p.f, x, y_of(p.ms), colour(p.outcome));
    }
    let mut rows = Vec::new();
    for (f, name) in f_names.iter().enumerate() {
        for o in [Outcome::Ok, Outcome::Fail, Outcome::Info] {
            if points.iter().any(|p| p.f == f && p.outcome == o) {
                rows.push((format!("{name} {}", outcome_name(o)), f, o, false));
            }
        }
    }
    legend(&mut out, &rows);
    out.push_str("</svg>\n");
    out
}

/// Completed operations per second by function and outcome.
pub(crate) fn rate(
    title: &str,
    series: &[RateSeries],
    f_names: &[String],
    periods: &[NemesisPeriod],
) -> String {
    let buckets = series.iter().map(|s| s.per_second.len()).max().unwrap_or(0);
    let span_s = (buckets as f64).max(1.0);
    let top = series
        .iter()
        .flat_map(|s| s.per_second.iter().copied())
        .fold(0.0, f64::max)
        .max(1.0);
    let step = nice_step(top / 5.0);
    let y_max = (top / step).ceil() * step;
    let mut out = String::new();
    frame(&mut out, title, "completed ops/s", span_s, periods);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let y = TOP + plot_h * (1.0 - v / y_max);
        let _ = writeln!(
            out,
            "<line x1='{}' y1='{y:.1}' x2='{LEFT}' y2='{y:.1}' stroke='#444'/><line x1='{LEFT}' y1='{y:.1}' x2='{}' y2='{y:.1}' stroke='#ddd'/><text x='{}' y='{:.1}' text-anchor='end'>{}</text>",
            LEFT - 5.0,
            LEFT + plot_w,
            LEFT - 8.0,
            y + 4.0,
            trim(v)
        );
        v += step;
    }
    let mut rows = Vec::new();
    for s in series {
        let pts: Vec<String> = s
            .per_second
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // Each bucket's count is drawn at the bucket's middle.
                let x = LEFT + plot_w * (i as f64 + 0.5) / span_s;
                let y = TOP + plot_h * (1.0 - c / y_max);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            out,
            "<polyline points='{}' fill='none' stroke='{}' stroke-width='1.5' stroke-dasharray='{}'/>",
            pts.join(" "),
            colour(s.outcome),
            dash(s.f)
        );
        let name = f_names.get(s.f).map_or("?", String::as_str);
        rows.push((
            format!("{name} {}", outcome_name(s.outcome)),
            s.f,
            s.outcome,
            true,
        ));
    }
    legend(&mut out, &rows);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: nice steps are 1/2/5 × 10^k and never below the request.
    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(20.0), 20.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    /// Goal: past MAX_POINTS the ok points are thinned (and the title says
    /// so) while every failure is still drawn.
    #[test]
    fn thins_ok_points_only() {
        let mut pts: Vec<LatencyPoint> = (0..MAX_POINTS * 2)
            .map(|i| LatencyPoint {
                t_s: i as f64 / 1000.0,
                ms: 1.0,
                outcome: Outcome::Ok,
                f: 0,
            })
            .collect();
        pts.push(LatencyPoint {
            t_s: 1.0,
            ms: 5.0,
            outcome: Outcome::Fail,
            f: 1,
        });
        let svg = latency("t", &pts, &["read".into(), "write".into()], 40.0, &[]);
        assert!(svg.contains("(1 in 3 ok ops drawn)"), "title");
        assert_eq!(
            svg.matches(colour(Outcome::Fail)).count(),
            2,
            "point and legend"
        );
        assert!(svg.matches("<circle").count() <= MAX_POINTS);
    }
}
