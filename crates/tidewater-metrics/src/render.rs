//! The Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use crate::{Counter, Family, FloatGauge, Gauge, Histogram, Watchdog};

#[derive(Default)]
pub(crate) struct Writer {
    out: String,
}

fn labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let body: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            format!(
                "{n}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

impl Writer {
    /// One gauge per component of the watchdog: 1 when unhealthy, 0 otherwise.
    pub(crate) fn watchdog(&mut self, name: &str, help: &str, watchdog: &Watchdog) {
        self.header(name, help, "gauge");
        for status in watchdog.statuses() {
            let _ = writeln!(
                self.out,
                "{name}{} {}",
                labels(&["component"], std::slice::from_ref(&status.component)),
                u8::from(status.is_unhealthy())
            );
        }
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(crate) fn counter(&mut self, name: &str, help: &str, c: &Counter) {
        self.header(name, help, "counter");
        let _ = writeln!(self.out, "{name} {}", c.get());
    }

    pub(crate) fn gauge(&mut self, name: &str, help: &str, g: &Gauge) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {}", g.get());
    }

    pub(crate) fn counter_family(&mut self, name: &str, help: &str, f: &Family<Counter>) {
        self.header(name, help, "counter");
        for (values, c) in f.members() {
            let _ = writeln!(
                self.out,
                "{name}{} {}",
                labels(f.labels(), &values),
                c.get()
            );
        }
    }

    pub(crate) fn gauge_family(&mut self, name: &str, help: &str, f: &Family<Gauge>) {
        self.header(name, help, "gauge");
        for (values, g) in f.members() {
            let _ = writeln!(
                self.out,
                "{name}{} {}",
                labels(f.labels(), &values),
                g.get()
            );
        }
    }

    pub(crate) fn float_gauge_family(&mut self, name: &str, help: &str, f: &Family<FloatGauge>) {
        self.header(name, help, "gauge");
        for (values, g) in f.members() {
            let v = g.get();
            if v.is_nan() {
                continue;
            }
            let _ = writeln!(self.out, "{name}{} {v}", labels(f.labels(), &values));
        }
    }

    pub(crate) fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        let s = h.snapshot();
        let mut cumulative = 0;
        for (bound, count) in s.bounds.iter().zip(&s.counts) {
            cumulative += count;
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(self.out, "{name}_sum {}", s.sum);
        let _ = writeln!(self.out, "{name}_count {}", s.count);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use crate::Metrics;

    #[test]
    fn renders_families_and_histograms() {
        let m = Metrics::default();
        m.pipeline_lag.with(&["knowledge", "documents", "0"]).set(7);
        m.embedded_chunks.add(3);
        m.freshness_seconds.observe(0.2);
        let text = m.render();
        assert!(text.contains("tidewater_pipeline_lag_records{pipeline=\"knowledge\",topic=\"documents\",partition=\"0\"} 7"));
        assert!(text.contains("tidewater_embedded_chunks_total 3"));
        assert!(text.contains("tidewater_freshness_seconds_bucket{le=\"0.2\"} 1"));
        assert!(text.contains("tidewater_freshness_seconds_count 1"));
    }
}
