//! Bar charts drawn as SVG by the server: one bar per minute of the last hour.

use maud::{Markup, html};

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 90.0;

/// A chart of `values` (oldest first), titled, its largest value written beside it.
pub fn bars(title: &str, unit: &str, values: &[f64]) -> Markup {
    let most = values.iter().cloned().fold(0.0_f64, f64::max);
    let width = WIDTH / values.len().max(1) as f64;
    html! {
        figure.chart {
            figcaption { (title) " — max " (format!("{most:.0}")) " " (unit) }
            svg width=(WIDTH) height=(HEIGHT) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                @for (i, value) in values.iter().enumerate() {
                    @let h = if most > 0.0 { value / most * (HEIGHT - 2.0) } else { 0.0 };
                    rect x=(format!("{:.1}", i as f64 * width)) y=(format!("{:.1}", HEIGHT - h))
                        width=(format!("{:.1}", (width - 1.0).max(0.5))) height=(format!("{h:.1}")) fill="#6ea8fe" {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_value_the_largest_full_height() {
        let svg = bars("Deliveries", "a minute", &[0.0, 5.0, 10.0]).into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", HEIGHT - 2.0)),
            "{svg}"
        );
        assert!(svg.contains("height=\"0.0\""), "{svg}");
        assert!(svg.contains("max 10 a minute"));
    }

    #[test]
    fn a_title_from_the_database_is_escaped() {
        let svg = bars("<script>alert(1)</script>\" onload=\"x", "ms", &[1.0]).into_string();
        assert!(
            !svg.contains("<script>") && !svg.contains("\" onload=\""),
            "{svg}"
        );
        assert!(svg.contains("&lt;script&gt;"));
    }
}
