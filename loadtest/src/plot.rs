//! Two plots per run, as plain SVG: the latency histogram, and answers per
//! 100 ms over the run (the seed's "nothing completed for 3 s" stall would
//! show as a gap at the start).

use std::{fmt::Write, path::Path, time::Duration};

use crate::fire::Run;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 36.0;

/// Bars with axes, a title and a few x labels.
fn bars(title: &str, x_label: &str, values: &[usize], x_of: impl Fn(usize) -> String) -> String {
    let (plot_w, plot_h) = (WIDTH - LEFT - 20.0, HEIGHT - BOTTOM - TOP);
    let highest = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar_w = plot_w / values.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>
"##,
        WIDTH / 2.0
    );
    for (i, &v) in values.iter().enumerate() {
        let h = v as f64 / highest * plot_h;
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#3b6fb6"><title>{}: {v}</title></rect>"##,
            LEFT + i as f64 * bar_w,
            TOP + plot_h - h,
            (bar_w - 1.0).max(0.5),
            h,
            x_of(i)
        );
    }
    let base = TOP + plot_h;
    let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#000"/>"##, LEFT + plot_w);
    let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#000"/>"##);
    let _ =
        writeln!(svg, r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##, LEFT - 6.0, TOP + 4.0, highest as usize);
    let _ = writeln!(svg, r##"<text x="{}" y="{base}" text-anchor="end">0</text>"##, LEFT - 6.0);
    let labels = 6.min(values.len());
    for k in 0..labels {
        let i = k * values.len().saturating_sub(1) / labels.saturating_sub(1).max(1);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            LEFT + (i as f64 + 0.5) * bar_w,
            base + 16.0,
            x_of(i)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// Writes `<stem>-latency.svg` and `<stem>-timeline.svg` into `dir`.
pub fn write(dir: &Path, stem: &str, title: &str, run: &Run) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let latencies: Vec<Duration> = run.samples.iter().map(|s| s.answered - s.sent).collect();
    let slowest = latencies.iter().max().copied().unwrap_or_default().as_secs_f64().max(1e-6);
    const BINS: usize = 50;
    let mut histogram = vec![0usize; BINS];
    for l in &latencies {
        histogram[((l.as_secs_f64() / slowest * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    let bin_ms = slowest * 1e3 / BINS as f64;
    let svg = bars(&format!("{title}: latency of every call"), "latency (ms)", &histogram, |i| {
        format!("{:.0}", (i as f64 + 0.5) * bin_ms)
    });
    std::fs::write(dir.join(format!("{stem}-latency.svg")), svg)?;

    let span = run.finished.saturating_duration_since(run.started);
    let buckets = ((span.as_millis() / 100) as usize + 1).max(1);
    let mut timeline = vec![0usize; buckets];
    for s in &run.samples {
        let at = s.answered.saturating_duration_since(run.started).as_millis() as usize / 100;
        timeline[at.min(buckets - 1)] += 1;
    }
    let svg = bars(&format!("{title}: answers per 100 ms"), "time since the first call (s)", &timeline, |i| {
        format!("{:.1}", i as f64 / 10.0)
    });
    std::fs::write(dir.join(format!("{stem}-timeline.svg")), svg)
}
