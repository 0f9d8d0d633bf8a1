//! Usage charts as inline SVG, drawn on the server: a pure function from series to markup
//! (no script, no external library; presentation attributes only, so the page's content
//! security policy needs no inline style).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::pages::esc;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend (the cluster, or a node).
    pub name: String,
    /// Its points, oldest first.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Line colours: the first for the cluster's total, the rest for nodes.
const PALETTE: [&str; 8] = [
    "#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777",
];

/// A line chart of `series` over `[from, to]`, the y axis from 0 to `y_max` labelled by
/// `label`. The root carries `data-points` (how many points are drawn) for scripts and
/// tests; with no point at all it says so in words.
#[must_use]
pub fn line_chart(
    title: &str,
    series: &[Series],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    y_max: f64,
    label: fn(f64) -> String,
) -> String {
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" aria-label="{t}" data-points="{points}" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y_max = if y_max.is_finite() && y_max > 0.0 {
        y_max
    } else {
        1.0
    };
    // Horizontal grid lines with their values.
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#e5e7eb" stroke-width="1"/><text x="{lx:.1}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#6b7280">{l}</text>"##,
            x2 = WIDTH - RIGHT,
            lx = LEFT - 4.0,
            ty = y + 3.0,
            l = esc(&label(v))
        );
    }
    // Time axis: the range's ends.
    let span = (to - from).num_milliseconds().max(1) as f64;
    for (x, t, anchor) in [(LEFT, from, "start"), (WIDTH - RIGHT, to, "end")] {
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="{anchor}" fill="#6b7280">{}</text>"##,
            t.format("%m-%d %H:%M"),
            y = HEIGHT - 8.0
        );
    }
    if points == 0 {
        let _ = write!(
            svg,
            r##"<text class="empty" x="{x:.1}" y="{y:.1}" font-size="13" text-anchor="middle" fill="#6b7280">no usage reported yet</text></svg>"##,
            x = LEFT + plot_w / 2.0,
            y = TOP + plot_h / 2.0
        );
        return svg;
    }
    let x_of = |t: DateTime<Utc>| {
        let f = ((t - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0);
        LEFT + plot_w * f
    };
    let y_of = |v: f64| {
        let f = if v.is_finite() {
            (v / y_max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        TOP + plot_h - plot_h * f
    };
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let width = if i == 0 { 2.0 } else { 1.2 };
        let line: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t), y_of(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<g class="series" data-series="{n}"><polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{p}"/>"#,
            n = esc(&s.name),
            p = line.join(" ")
        );
        for (t, v) in &s.points {
            let _ = write!(
                svg,
                r#"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="2.2" fill="{colour}"><title>{n} {at}: {l}</title></circle>"#,
                x = x_of(*t),
                y = y_of(*v),
                n = esc(&s.name),
                at = t.format("%Y-%m-%d %H:%M:%S"),
                l = esc(&label(*v))
            );
        }
        svg.push_str("</g>");
        let _ = write!(
            svg,
            r#"<text class="legend" x="{x:.1}" y="{y:.1}" font-size="10" fill="{colour}">{n}</text>"#,
            x = LEFT + 6.0 + (i % 4) as f64 * 148.0,
            y = TOP + 10.0 + (i / 4) as f64 * 12.0,
            n = esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A fraction as a percentage.
#[must_use]
pub fn percent(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    #[test]
    fn points_are_placed_by_time_and_value_and_counted() {
        let s = vec![
            Series {
                name: "cluster".into(),
                points: vec![(t(0), 0.0), (t(30), 0.5), (t(60), 1.0)],
            },
            Series {
                name: "node-<1>".into(),
                points: vec![(t(30), 0.25)],
            },
        ];
        let svg = line_chart("CPU", &s, t(0), t(60), 1.0, percent);
        assert!(svg.contains(r#"data-points="4""#), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 4);
        // 0 at the bottom left, 1.0 at the top right, the middle in the middle.
        assert!(svg.contains(r#"cx="44.0" cy="192.0""#), "{svg}");
        assert!(svg.contains(r#"cx="628.0" cy="12.0""#), "{svg}");
        assert!(svg.contains(r#"cx="336.0" cy="102.0""#), "{svg}");
        // Names are escaped, values labelled.
        assert!(svg.contains("node-&lt;1&gt;") && !svg.contains("node-<1>"));
        assert!(svg.contains("50 %"));
    }

    #[test]
    fn an_empty_chart_says_so_and_odd_values_stay_inside() {
        let svg = line_chart("Memory", &[], t(0), t(60), 0.0, percent);
        assert!(svg.contains(r#"data-points="0""#) && svg.contains("no usage reported yet"));
        let s = vec![Series {
            name: "x".into(),
            points: vec![(t(-10), f64::NAN), (t(90), 7.0)],
        }];
        let svg = line_chart("CPU", &s, t(0), t(60), 1.0, percent);
        assert!(svg.contains(r#"cx="44.0" cy="192.0""#), "{svg}");
        assert!(svg.contains(r#"cx="628.0" cy="12.0""#), "{svg}");
    }
}
