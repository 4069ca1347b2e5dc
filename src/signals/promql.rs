//! Internal demand from a PromQL query the platform team names (an internal queue's depth, say).
//!
//! ```text
//!   query ──▶ instant vector ──▶ per series: ceil(value) GPUs, class = the series' `classLabel` value
//! ```
//! Series with a NaN, infinite or negative value say nothing about demand and are skipped.

use std::collections::BTreeMap;

use super::prometheus::Sample;

/// Pending GPUs by class from the query's answer.
pub fn demand(samples: &[Sample], class_label: Option<&str>) -> BTreeMap<Option<String>, u32> {
    let mut out = BTreeMap::new();
    for s in samples {
        if !s.value.is_finite() || s.value <= 0.0 {
            continue;
        }
        let gpus = s.value.ceil().min(f64::from(u32::MAX)) as u32;
        let class = class_label
            .and_then(|l| s.labels.get(l))
            .filter(|v| !v.is_empty())
            .cloned();
        let e: &mut u32 = out.entry(class).or_default();
        *e = e.saturating_add(gpus);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            at: Timestamp::UNIX_EPOCH,
            value,
        }
    }

    #[test]
    fn demand_by_class_label() {
        let samples = [
            sample(&[("model", "A100")], 8.0),
            sample(&[("model", "A100"), ("team", "b")], 1.5),
            sample(&[("model", "H100")], 4.0),
            sample(&[("model", "")], 2.0),
            sample(&[], 1.0),
        ];
        let d = demand(&samples, Some("model"));
        assert_eq!(
            d,
            [(Some("A100".to_string()), 10), (Some("H100".to_string()), 4), (None, 3)].into()
        );
        // Without a class label every series is demand for any GPU.
        assert_eq!(demand(&samples, None), [(None, 17)].into());
    }

    #[test]
    fn nan_negative_and_infinite_values_are_skipped() {
        let samples = [
            sample(&[], f64::NAN),
            sample(&[], -3.0),
            sample(&[], f64::INFINITY),
            sample(&[], 0.0),
        ];
        assert!(demand(&samples, None).is_empty());
    }
}
