//! Attention rollout (Abnar & Zuidema, ACL 2020): how much each input token reaches the
//! class token through all blocks. Per block the head-averaged attention plus the identity
//! (the residual path), rows renormalized to sum to one; the blocks' matrices multiplied
//! in order; the class token's row over the patches is the map. Class-agnostic.

use candle_core::Tensor;

use super::{CamExtractor, CamInput};

pub struct AttentionRollout;

/// [B, h*w]: the class-token row of the rolled-out attention over the patches.
pub fn rollout(attention: &[Tensor]) -> candle_core::Result<Tensor> {
    let mut joint: Option<Tensor> = None;
    for a in attention {
        let (b, _, t, _) = a.dims4()?;
        let eye = Tensor::eye(t, a.dtype(), a.device())?.unsqueeze(0)?.broadcast_as((b, t, t))?;
        let a = (a.mean(1)? + eye)?;
        let a = a.broadcast_div(&a.sum_keepdim(2)?)?;
        joint = Some(match joint {
            None => a,
            Some(j) => a.matmul(&j)?,
        });
    }
    let joint = joint.ok_or_else(|| candle_core::Error::Msg("attention rollout: no blocks".into()))?;
    let t = joint.dim(1)?;
    joint.narrow(1, 0, 1)?.narrow(2, 1, t - 1)?.squeeze(1)
}

impl CamExtractor for AttentionRollout {
    fn name(&self) -> &'static str {
        "attention_rollout"
    }

    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        let deit = input.model.backbone().transformer().expect("checked in cam::by_name");
        let tokens = deit.forward_tokens(input.images)?;
        let (b, _, h, w) = input.out.features.dims4()?;
        rollout(&tokens.attention)?.reshape((b, h, w))
    }
}
