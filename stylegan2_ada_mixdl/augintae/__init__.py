"""AugIntAE (Augmentation-Interpolative AutoEncoders, ICLR 2021 submission): train once on a base set, then make
images of a novel class from a few seed images by encoding them, mixing the codes and decoding."""
