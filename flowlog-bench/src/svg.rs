//! Grouped bar charts as standalone SVG. Hand-written (about a hundred lines) rather than
//! pulling a plotting crate: the report needs one chart type, and `plotters` with its
//! dependencies would cost more compile time on CI than the whole benchmark crate.

use std::fmt::Write as _;

pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A tick value with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil() as usize
    };
    format!("{v:.decimals$}")
}

/// Bars of every series side by side per group; an optional dashed horizontal reference line
/// (value, label), e.g. a target. NaN values are left out.
pub fn grouped_bars(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    reference: Option<(f64, &str)>,
) -> String {
    let min_bar = 14.0;
    let (left, right, top, bottom) = (70.0, 20.0, 60.0, 110.0);
    let legend_w: f64 = series
        .iter()
        .map(|s| 24.0 + 6.5 * s.name.len() as f64)
        .sum();
    let title_w = 8.0 * title.len() as f64;
    let natural = groups.len().max(1) as f64 * (series.len().max(1) as f64 * min_bar + 18.0);
    let plot_w = natural.max(420.0).max(legend_w).max(title_w);
    // Groups spread over the plot; bars widen with them, up to 36 px.
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar = ((group_w - 18.0) / series.len().max(1) as f64).clamp(min_bar, 36.0);
    let gap = group_w - series.len() as f64 * bar;
    let plot_h = 260.0;
    let width = left + plot_w + right;
    let height = top + plot_h + bottom;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .chain(reference.map(|(v, _)| v))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let step = tick_step(max);
    let y_max = (max / step).ceil().max(1.0) * step;
    let y = |v: f64| top + plot_h - (v / y_max) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        left,
        escape(title)
    );
    // Axes, ticks and grid.
    let mut t = 0.0;
    while t <= y_max + step / 2.0 {
        let yy = y(t);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            yy + 4.0,
            tick_label(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{:.0}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(y_label)
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    // Bars.
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + gi as f64 * group_w + gap / 2.0;
        for (si, ser) in series.iter().enumerate() {
            let Some(&v) = ser.values.get(gi) else {
                continue;
            };
            if !v.is_finite() {
                continue;
            }
            let x = gx + si as f64 * bar;
            let h = (v / y_max) * plot_h;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                y(v),
                bar - 2.0,
                COLORS[si % COLORS.len()],
                escape(&format!("{g} / {}", ser.name)),
                fmt_value(v)
            );
        }
        let cx = gx + series.len() as f64 * bar / 2.0;
        let _ = writeln!(
            s,
            r#"<text transform="translate({cx:.1},{:.1}) rotate(-35)" text-anchor="end">{}</text>"#,
            top + plot_h + 14.0,
            escape(g)
        );
    }
    if let Some((v, label)) = reference {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#c00" stroke-dasharray="6,4"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c00">{}</text>"##,
            left + plot_w,
            yy - 4.0,
            escape(label)
        );
    }
    // Legend.
    let mut lx = left;
    for (si, ser) in series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="34" width="10" height="10" fill="{}"/>"#,
            COLORS[si % COLORS.len()]
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="43">{}</text>"#,
            lx + 14.0,
            escape(&ser.name)
        );
        lx += 24.0 + 6.5 * ser.name.len() as f64;
    }
    s.push_str("</svg>\n");
    s
}

/// One line of a [`line_chart`]: (x, y) points in x order.
// Line charts are drawn by the soak harness (tests/src/bin/flowlog-soak includes this file).
#[allow(dead_code)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a shared x axis starting at 0 (e.g. minutes of a soak), each series in its own
/// colour; the y axis starts at 0.
#[allow(dead_code)]
pub fn line_chart(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> String {
    let (left, right, top, bottom) = (70.0, 20.0, 60.0, 50.0);
    let (plot_w, plot_h) = (640.0, 260.0);
    let (width, height) = (left + plot_w + right, top + plot_h + bottom);
    let finite = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let x_max_raw = finite().map(|p| p.0).fold(0.0f64, f64::max);
    let y_max_raw = finite().map(|p| p.1).fold(0.0f64, f64::max);
    let (x_step, y_step) = (tick_step(x_max_raw), tick_step(y_max_raw));
    let x_max = (x_max_raw / x_step).ceil().max(1.0) * x_step;
    let y_max = (y_max_raw / y_step).ceil().max(1.0) * y_step;
    let x = |v: f64| left + v / x_max * plot_w;
    let y = |v: f64| top + plot_h - v / y_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left:.0}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let mut t = 0.0;
    while t <= y_max + y_step / 2.0 {
        let yy = y(t);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            yy + 4.0,
            tick_label(t, y_step)
        );
        t += y_step;
    }
    let mut t = 0.0;
    while t <= x_max + x_step / 2.0 {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            top + plot_h + 16.0,
            tick_label(t, x_step)
        );
        t += x_step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 36.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{:.0}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(y_label)
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let mut lx = left;
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|(px, py)| px.is_finite() && py.is_finite())
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="34" width="10" height="10" fill="{color}"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="43">{}</text>"#,
            lx + 14.0,
            escape(&line.name)
        );
        lx += 24.0 + 6.5 * line.name.len() as f64;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(0.0), 1.0);
        assert_eq!(tick_label(40.0, 20.0), "40");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
    }

    #[test]
    fn chart_has_one_bar_per_finite_value_and_escapes_text() {
        let svg = grouped_bars(
            "a <b>",
            "ns",
            &["g1".into(), "g2".into()],
            &[
                Series {
                    name: "x&y".into(),
                    values: vec![1.0, f64::NAN],
                },
                Series {
                    name: "z".into(),
                    values: vec![2.0, 3.0],
                },
            ],
            Some((2.5, "target")),
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "3 bars + 2 legend swatches"
        );
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("x&amp;y"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn line_chart_draws_one_polyline_per_line() {
        let svg = line_chart(
            "rss",
            "minutes",
            "MiB",
            &[
                Line {
                    name: "a".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)],
                },
                Line {
                    name: "b<".into(),
                    points: vec![(0.0, 3.0)],
                },
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"points="70.0,233.3 710.0,146.7""#), "{svg}");
        assert!(svg.contains("b&lt;"));
    }
}
