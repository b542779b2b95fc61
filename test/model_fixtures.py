"""Small model configs for fast tests: still 12 blocks per backbone, tiny widths and inputs."""

import torch

from admn_core.config import AudioFrontend, ControllerSpec, FusionSpec, ModalitySpec, ModelConfig

VIEWS = ("node_1", "node_2")


def micro_config(with_mic: bool = True, task: str = "localization", views=VIEWS, readout: str = "cls",
                 fusion_pooling: str = "mean") -> ModelConfig:
    small = dict(views=views, patch_size=8, embed_dim=32, num_heads=2, controller_input_size=(16, 16),
                 readout=readout, readout_grid=2)
    modalities = [
        ModalitySpec(name="rgb", kind="rgb", channels=3, input_size=(16, 16), **small),
        ModalitySpec(name="depth", kind="depth", channels=1, input_size=(16, 24), norm_mean=(0.0,), norm_std=(1.0,),
                     trainable_last_blocks=2, **small),
    ]
    if with_mic:
        modalities.append(ModalitySpec(
            name="mic", kind="audio", channels=1, input_size=(16, 16), norm_mean=(-4.0,), norm_std=(4.0,),
            audio=AudioFrontend(n_fft=128, hop_length=64, n_mels=16), **small))
    from admn_core.config import HeadSpec

    head = HeadSpec(task=task, num_classes=5 if task == "classification" else 0)
    return ModelConfig(
        name="micro", modalities=tuple(modalities), head=head,
        fusion=FusionSpec(adapter_hidden=32, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64, pooling=fusion_pooling),
        controller=ControllerSpec(stem_channels=4, stem_kernels=(3, 3, 3), stem_pool=2, embed_dim=32, depth=1,
                                  heads=2, dim_head=16, mlp_dim=64, logit_hidden=32),
    )


def assert_outputs_close(reference, output, atol=1e-5, rtol=1e-5):
    """A head output (logits tensor or GaussianPrediction) equal to the reference within tolerance."""
    if isinstance(reference, torch.Tensor):
        torch.testing.assert_close(output, reference, atol=atol, rtol=rtol)
    else:
        torch.testing.assert_close(output.mean, reference.mean, atol=atol, rtol=rtol)
        torch.testing.assert_close(output.covariance, reference.covariance, atol=atol, rtol=rtol)
