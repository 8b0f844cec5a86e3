//! Learning rate per epoch (epoch-wise, as wsolevaluation's MultiStepLR), with an
//! optional linear warm-up.

use crate::config::ScheduleConfig;

pub fn lr_at(cfg: &ScheduleConfig, base_lr: f64, epoch: usize, epochs: usize) -> f64 {
    if epoch < cfg.warmup_epochs {
        return base_lr * (epoch + 1) as f64 / (cfg.warmup_epochs + 1) as f64;
    }
    match cfg.name.as_str() {
        "step" => base_lr * cfg.gamma.powi(((epoch + cfg.step_offset) / cfg.step_epochs.max(1)) as i32),
        "multistep" => base_lr * cfg.gamma.powi(cfg.milestones.iter().filter(|&&m| m <= epoch).count() as i32),
        "cosine" => {
            let span = epochs.saturating_sub(cfg.warmup_epochs).max(1) as f64;
            let t = (epoch - cfg.warmup_epochs) as f64 / span;
            0.5 * base_lr * (1.0 + (std::f64::consts::PI * t).cos())
        }
        _ => base_lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_cosine() {
        let step = ScheduleConfig {
            name: crate::config::ScheduleName::Step,
            step_epochs: 2,
            gamma: 0.1,
            warmup_epochs: 0,
            step_offset: 0,
            milestones: Vec::new(),
        };
        let lrs: Vec<f64> = (0..5).map(|e| lr_at(&step, 1.0, e, 5)).collect();
        assert_eq!(lrs[0], 1.0);
        assert_eq!(lrs[1], 1.0);
        assert!((lrs[2] - 0.1).abs() < 1e-12 && (lrs[4] - 0.01).abs() < 1e-12);
        let cos = ScheduleConfig {
            name: crate::config::ScheduleName::Cosine,
            step_epochs: 1,
            gamma: 0.1,
            warmup_epochs: 1,
            step_offset: 0,
            milestones: Vec::new(),
        };
        assert!((lr_at(&cos, 1.0, 0, 5) - 0.5).abs() < 1e-12);
        assert!((lr_at(&cos, 1.0, 1, 5) - 1.0).abs() < 1e-12);
        assert!(lr_at(&cos, 1.0, 4, 5) < 0.2);
    }

    /// wsolevaluation's main.py: `for epoch in range(E): adjust_learning_rate(epoch + 1)`,
    /// which multiplies every group by 0.1 when `epoch != 0 and epoch % freq == 0`.
    #[test]
    fn step_offset_one_is_wsolevaluations_decay() {
        for freq in [1, 3, 15] {
            let cfg = ScheduleConfig {
                name: crate::config::ScheduleName::Step,
                step_epochs: freq,
                gamma: 0.1,
                warmup_epochs: 0,
                step_offset: 1,
                milestones: Vec::new(),
            };
            let mut theirs = 1.0;
            for epoch in 0..50 {
                let e1 = epoch + 1;
                if e1 != 0 && e1 % freq == 0 {
                    theirs *= 0.1;
                }
                let ours = lr_at(&cfg, 1.0, epoch, 50);
                assert!((ours - theirs).abs() <= 1e-12 * theirs, "freq {freq} epoch {epoch}: {ours} vs {theirs}");
            }
        }
    }

    /// TS-CAM's and SCM's code (lib/core/engine.py adjust_learning_rate_normal), called
    /// with the 1-based epoch before each epoch, multiplies by 0.1 when any of LR_STEPS
    /// divides it: ILSVRC's [10, 12] over 20 epochs decays at 10, 12 and 20, which is
    /// `multistep` with milestones [9, 11, 19].
    #[test]
    fn multistep_is_ts_cams_decay() {
        let cfg = ScheduleConfig {
            name: crate::config::ScheduleName::MultiStep,
            step_epochs: 1,
            gamma: 0.1,
            warmup_epochs: 0,
            step_offset: 0,
            milestones: vec![9, 11, 19],
        };
        let mut theirs = 1.0;
        for epoch in 0..20 {
            let e1 = epoch + 1;
            if [12, 10].iter().any(|s| e1 % s == 0) {
                theirs *= 0.1;
            }
            let ours = lr_at(&cfg, 1.0, epoch, 20);
            assert!((ours - theirs).abs() <= 1e-12 * theirs, "epoch {epoch}: {ours} vs {theirs}");
        }
        assert!((lr_at(&cfg, 1.0, 19, 20) - 1e-3).abs() < 1e-15);
    }
}
