//! Learning-rate and L1-coefficient schedules: linear warm-up, constant, linear decay to zero.

/// A piecewise-linear schedule of a coefficient over training steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Value on the plateau.
    pub peak: f32,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// Steps of linear decay to 0 at the end.
    pub decay_steps: u64,
    /// Length of the run.
    pub total_steps: u64,
}

impl Schedule {
    /// The value at `step` (0-based).
    pub fn at(&self, step: u64) -> f32 {
        let mut f = 1.0f64;
        if self.warmup_steps > 0 && step < self.warmup_steps {
            f = (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_start = self.total_steps.saturating_sub(self.decay_steps);
        if self.decay_steps > 0 && step >= decay_start {
            f = f.min((self.total_steps - step) as f64 / self.decay_steps as f64);
        }
        (self.peak as f64 * f) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_plateau_decay() {
        let s = Schedule {
            peak: 1.0,
            warmup_steps: 4,
            decay_steps: 5,
            total_steps: 20,
        };
        assert_eq!(s.at(0), 0.25);
        assert_eq!(s.at(3), 1.0);
        assert_eq!(s.at(10), 1.0);
        assert_eq!(s.at(15), 1.0);
        assert_eq!(s.at(16), 0.8);
        assert_eq!(s.at(19), 0.2);
        let flat = Schedule {
            peak: 2.0,
            warmup_steps: 0,
            decay_steps: 0,
            total_steps: 3,
        };
        assert_eq!((0..3).map(|i| flat.at(i)).collect::<Vec<_>>(), vec![2.0; 3]);
    }
}
