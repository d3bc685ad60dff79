//! Learning-rate schedule: linear warm-up, then cosine decay to zero, per step.

use crate::TrainConfig;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f32,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl CosineSchedule {
    /// The schedule of a run of `config` with `steps_per_epoch` batches an epoch: its peak
    /// learning rate, its warm-up (rounded to whole steps) and its length.
    pub fn for_run(config: &TrainConfig, steps_per_epoch: usize) -> CosineSchedule {
        CosineSchedule {
            base_lr: config.lr,
            warmup_steps: (config.warmup_epochs as f64 * steps_per_epoch as f64).round() as usize,
            total_steps: config.epochs * steps_per_epoch,
        }
    }

    /// The learning rate of step `step` (counting from 0).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        (self.base_lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_to_zero() {
        let s = CosineSchedule {
            base_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert!((s.lr(0) - 0.01).abs() < 1e-7);
        assert!((s.lr(9) - 0.1).abs() < 1e-7);
        assert!((s.lr(10) - 0.1).abs() < 1e-7);
        assert!((s.lr(60) - 0.05).abs() < 1e-6);
        assert!(s.lr(110).abs() < 1e-7);
        let no_warmup = CosineSchedule {
            base_lr: 0.1,
            warmup_steps: 0,
            total_steps: 100,
        };
        assert!((no_warmup.lr(0) - 0.1).abs() < 1e-7);
    }
}
