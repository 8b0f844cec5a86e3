//! What could change a run's numbers, recorded in `train.log` and `metrics.json`: the wsol
//! version and git commit, the kernels and instruction set that actually ran, the thread
//! count, the device and the number formats. (Results differ in the last bits between AVX-512 and AVX2 CPUs,
//! and with `WSOL_CONV_KERNEL`.)

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub wsol_version: &'static str,
    /// The commit the binary was built from (`unknown` outside a git checkout).
    pub git_commit: &'static str,
    pub device: String,
    /// The number formats that ran (`fp32`, `tf32`, `bf16`, `fp16`).
    pub precision: String,
    /// Threads of the CPU kernels (rayon's pool).
    pub threads: usize,
    pub kernels: wsol_ops::Kernels,
}

impl Provenance {
    pub fn detect(device: &str, precision: &str) -> Provenance {
        Provenance {
            wsol_version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("WSOL_GIT_COMMIT"),
            device: device.to_string(),
            precision: precision.to_string(),
            threads: rayon::current_num_threads(),
            kernels: wsol_ops::Kernels::detect(),
        }
    }

    /// The `provenance` object of `metrics.json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("provenance serializes")
    }

    /// One line for `train.log`.
    pub fn summary(&self) -> String {
        format!(
            "wsol {} ({}), device {}, {}, {} threads, {}",
            self.wsol_version,
            self.git_commit,
            self.device,
            self.precision,
            self.threads,
            self.kernels.summary()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_version_threads_and_kernels() {
        let p = Provenance::detect("cpu", "fp32");
        let j = p.to_json();
        assert_eq!(j["wsol_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(j["threads"], rayon::current_num_threads());
        assert_eq!(j["precision"], "fp32");
        assert!(j["kernels"]["conv"].is_string() && j["kernels"]["cpu_features"].is_array(), "{j}");
        assert!(p.summary().contains("threads"), "{}", p.summary());
    }
}
