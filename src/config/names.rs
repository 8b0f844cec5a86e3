//! The names a config chooses from, as enums: each list is written once, here, and a name
//! that is not in it is one error naming the key, the line and the valid names (serde's
//! "unknown variant" message). Code matches on them exhaustively, so adding a name is a
//! compile error everywhere it must be handled.

use serde::{Deserialize, Serialize};

/// An enum of config names with `ALL`, `as_str`, `Display` and `FromStr` (for command-line
/// flags that take the same names).
macro_rules! names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The valid names, comma-separated, for messages.
            pub fn list() -> String {
                Self::ALL.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|n| n.as_str() == s)
                    .ok_or_else(|| format!("unknown name `{s}` (available: {})", Self::list()))
            }
        }
    };
}

names! {
    /// `model.backbone`: the feature extractor (`models/`).
    Backbone {
        Tiny = "tiny",
        ResNet18 = "resnet18",
        ResNet50 = "resnet50",
        Vgg16 = "vgg16",
        InceptionV3 = "inception_v3",
        EfficientNetLite0 = "efficientnet_lite0",
        DeitTiny = "deit_tiny",
        DeitSmall = "deit_small",
        VitSmall = "vit_small",
    }
}

impl Backbone {
    /// A vision transformer (16-pixel patches, a class token), not a CNN.
    pub fn is_transformer(self) -> bool {
        matches!(self, Backbone::DeitTiny | Backbone::DeitSmall | Backbone::VitSmall)
    }
}

names! {
    /// `eval.faithfulness_substrate`: what Deletion / Insertion put in place of removed
    /// pixels (zeros of the normalized input, or the input blurred as RISE does).
    Substrate {
        Zero = "zero",
        Blur = "blur",
    }
}

names! {
    /// `model.method` (or its older spelling `model.head`): the WSOL method (`methods/`).
    Method {
        Cam = "cam",
        Acol = "acol",
        Has = "has",
        CutMix = "cutmix",
        Adl = "adl",
        Spg = "spg",
        Bas = "bas",
        TsCam = "tscam",
        Scm = "scm",
    }
}

names! {
    /// `eval.cam`: how class activation maps are read from a trained model (`cam/`).
    CamMethod {
        Cam = "cam",
        GradCam = "gradcam",
        GradCamPlusPlus = "gradcam++",
        XGradCam = "xgradcam",
        LayerCam = "layercam",
        ScoreCam = "scorecam",
        EigenCam = "eigencam",
        BagCams = "bagcams",
        /// Abnar & Zuidema 2020, transformers only.
        AttentionRollout = "attention_rollout",
    }
}

names! {
    /// `model.acol.map`: which of ACoL's maps `cam` reads (evaluation and pictures).
    AcolMap {
        /// max of the two branches' normalized maps, as wsolevaluation scores ACoL.
        Fused = "fused",
        BranchA = "branch_a",
        /// Branch B on the features with branch A's confident region erased.
        BranchB = "branch_b",
        /// Branch B on the whole features: what B sees without erasing.
        BranchBUnerased = "branch_b_unerased",
    }
}

names! {
    /// `data.format`: how the dataset is laid out on disk (`data/`).
    DataFormat {
        /// wsolevaluation's metadata folders.
        Wsol = "wsol",
        /// The wsol format, generated on first use.
        Synthetic = "synthetic",
        /// CUB-200-2011's own files (`metadata_root` is the dataset root).
        Cub = "cub",
        /// `image_root/<split>/<class>/*.jpg`, classification only.
        Folder = "folder",
    }
}

names! {
    /// `train.optimizer.name`.
    OptimizerName {
        Sgd = "sgd",
        /// Loshchilov & Hutter 2019, PyTorch's `torch.optim.AdamW`.
        AdamW = "adamw",
    }
}

names! {
    /// `train.schedule.name`: the learning-rate schedule.
    ScheduleName {
        Constant = "constant",
        Step = "step",
        Cosine = "cosine",
        MultiStep = "multistep",
    }
}

names! {
    /// `train.select_by`: the validation metric that picks `best.safetensors`.
    SelectBy {
        GtKnownLoc = "gt_known_loc",
        MaxBoxAcc = "maxboxacc",
        MaxBoxAccV2 = "maxboxacc_v2",
        Top1Loc = "top1_loc",
        Top1Cls = "top1_cls",
        Pxap = "pxap",
    }
}

names! {
    /// `eval.checkpoint`: which checkpoint the final evaluation of `wsol train` scores.
    CheckpointChoice {
        Last = "last",
        Best = "best",
    }
}

names! {
    /// `train.precision`: the number formats of training. `fp32` everywhere; `tf32` fp32
    /// with the GPU's matrix products and convolutions in TF32 (the top-level `tf32: true`
    /// is its older spelling); `bf16` / `fp16` mixed precision as PyTorch's CUDA autocast
    /// (`models::autocast`), master weights, optimizer state and batch-norm statistics in
    /// fp32, `fp16` with dynamic loss scaling (`train::loss_scale`).
    Precision {
        Fp32 = "fp32",
        Tf32 = "tf32",
        Bf16 = "bf16",
        Fp16 = "fp16",
    }
}

impl Precision {
    /// Mixed precision: some ops run in a 16-bit format (needs a CUDA device).
    pub fn is_mixed(self) -> bool {
        matches!(self, Precision::Bf16 | Precision::Fp16)
    }

    /// fp16's 5 exponent bits underflow small gradients: its backward runs on a scaled
    /// loss (bf16 has fp32's exponent range and needs none, as in PyTorch).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_yaml_and_from_str() {
        for m in CamMethod::ALL {
            let yaml = serde_yaml::to_string(m).unwrap();
            assert_eq!(serde_yaml::from_str::<CamMethod>(&yaml).unwrap(), *m);
            assert_eq!(m.as_str().parse::<CamMethod>().unwrap(), *m);
        }
        let err = "resnet19".parse::<Backbone>().unwrap_err();
        assert!(err.contains("resnet19") && err.contains("resnet18, resnet50"), "{err}");
    }
}
