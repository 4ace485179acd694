//! What the agent's benches share: interleaved trials, best and median.

use std::future::Future;
use std::pin::Pin;

/// Best and median of one variant's trials.
#[derive(Clone, Copy)]
pub struct Stat {
    pub min: f64,
    pub median: f64,
}

/// One variant: a fresh future per trial, returning ns per unit.
pub type Variant<'a> = &'a dyn Fn() -> Pin<Box<dyn Future<Output = f64>>>;

/// Runs the variants interleaved (so drift of a shared machine hits all alike).
pub fn measure(rt: &tokio::runtime::Runtime, trials: usize, variants: &[Variant]) -> Vec<Stat> {
    let mut samples = vec![Vec::new(); variants.len()];
    for _ in 0..trials {
        for (i, v) in variants.iter().enumerate() {
            samples[i].push(rt.block_on(v()));
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            Stat {
                min: v[0],
                median: v[v.len() / 2],
            }
        })
        .collect()
}
