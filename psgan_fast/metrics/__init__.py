"""The paper's metrics: FID and IS (and KID), through torch-fidelity.

    from psgan_fast.metrics import evaluate_generators, frechet_distance
    res = evaluate_generators(gens, 10000)            # mnist-lenet features
    res["union"]["fid"], res["generators"][0]["is_mean"]

* :mod:`.fid` — the Fréchet distance (Rust core, GIL released) and the
  streaming ``FeatureStats`` accumulator, with numpy/scipy references.
* :mod:`.extractors` — ``mnist-lenet`` registered in torch-fidelity's
  feature-extractor registry; Inception weights for offline use.
* :mod:`.evaluation` — real-data statistics (cached), FID / IS / KID per
  generator and for their union, class histograms, the training-time hook.

Importing ``psgan_fast.metrics.extractors`` (which every evaluation function
does) registers ``mnist-lenet`` with torch-fidelity, so
``torch_fidelity.calculate_metrics(..., feature_extractor="mnist-lenet")``
works too.
"""

from __future__ import annotations

# Imported lazily: `psgan_fast.metrics.fid` (numpy + Rust) must not pay for
# torch / torchvision / torch-fidelity, which take seconds to import.
_LAZY = {
    "evaluation": (
        "RealReference", "evaluate_for_training", "evaluate_generators", "evaluate_images",
        "inception_score", "kernel_inception_distance", "real_reference", "to_uint8_images",
    ),
    "extractors": (
        "INCEPTION", "MNIST_LENET", "InceptionWeightsUnavailable", "default_feature_extractor",
        "inception_weights_path",
    ),
    "fid": (
        "FeatureStats", "feature_statistics", "frechet_distance", "frechet_distance_details",
        "frechet_distance_ref",
    ),
}
_WHERE = {name: mod for mod, names in _LAZY.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
