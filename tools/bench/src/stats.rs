//! Medians and percentiles of repeated measurements.

use serde::Serialize;

/// The `q`-quantile (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The middle value, or the mean of the two middle ones: with two runs
/// (the migration's) a nearest-rank median would always pick the faster
/// of a time and the slower of a rate.
pub fn median(samples: &[f64]) -> f64 {
    let n = samples.len();
    if n == 0 || n % 2 == 1 {
        return quantile(samples, 0.5);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
}

/// One side of a row over its repetitions: the headline value of each
/// repetition, and latency percentiles where the side has them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figure {
    /// What was measured, e.g. "spin-host + api-content" or "pgbench -M prepared".
    pub name: String,
    /// The headline value of each repetition, in the row's unit.
    pub runs: Vec<f64>,
    /// Median over the repetitions of each repetition's p50 latency (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// Median over the repetitions of each repetition's p99 latency (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

impl Figure {
    pub fn named(name: impl Into<String>) -> Self {
        Figure {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn median(&self) -> f64 {
        median(&self.runs)
    }
}

/// Per-repetition latency percentiles, collected and then reduced to the
/// median of each.
#[derive(Debug, Default)]
pub struct Latencies {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Latencies {
    /// Adds one repetition's latency samples, in milliseconds.
    pub fn add(&mut self, samples_ms: &[f64]) {
        self.p50.push(quantile(samples_ms, 0.5));
        self.p99.push(quantile(samples_ms, 0.99));
    }

    pub fn fill(&self, figure: &mut Figure) {
        if !self.p50.is_empty() {
            figure.p50_ms = Some(median(&self.p50));
            figure.p99_ms = Some(median(&self.p99));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&xs, 1.0), 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }
}
