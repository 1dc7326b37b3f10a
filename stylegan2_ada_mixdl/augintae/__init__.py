"""AugIntAE (Augmentation-Interpolative AutoEncoders, ICLR 2021 submission): train once on a base set, then make
images of a novel class from a few seed images by encoding them, mixing the codes and decoding.

    transform.py  T(x; rho): augmentation with explicit, interpolable parameters
    ops.py        SLERP, per-image gradient balancing (gamma), the dynamic factor k
    encoder.py    the encoder (D's architecture with a w_dim output) and decoding through G.synthesis
    loss.py       the training objective as a loss plug-in (AugIntAELoss, `--augintae=1`)
    fewshot.py    few-shot generation from seed images (API of augintae_generate.py)
    evaluate.py   reconstruction error and few-shot metrics on a novel class
"""


def __getattr__(name):
    # The loss (and with it the training machinery) loads only when asked for, so generation and
    # evaluation import nothing they do not use.
    if name == 'AugIntAELoss':
        from .loss import AugIntAELoss
        return AugIntAELoss
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
