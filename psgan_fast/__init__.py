"""psgan_fast: a fast, faithful PS-GAN engine with SNGAN and ProGAN baselines."""

__version__ = "0.1.0"
