"""FID, IS and KID of generators against real data, through torch-fidelity.

The features come from an extractor in torch-fidelity's registry
(:mod:`.extractors`); IS and KID are torch-fidelity's own metric functions
of those features (``isc_features_to_metric``, ``kid_features_to_metric``);
FID uses the same statistics as torch-fidelity (mean, unbiased covariance)
with the Rust Fréchet distance (:mod:`.fid`), which agrees with
torch-fidelity's ``eigvals`` formula and is many times faster.

Entry points:

* :func:`real_reference` — features and statistics of real images, cached
  on disk under ``$PSGAN_FAST_CACHE/fid_stats`` keyed by the SHA-256 of the
  image bytes and by the extractor (name and weights' SHA-256).
* :func:`evaluate_images` — metrics of one or more sets of fake images
  (uint8 or [-1, 1] float tensors), each set and their union.
* :func:`evaluate_generators` — samples each generator (callables z → images
  in [-1, 1]), then :func:`evaluate_images`. The union is the set
  ``psgan_fast.sample`` draws: image i from generator i mod N.
* :func:`evaluate_for_training` — a flat dict for ``metrics.jsonl``
  (mnist-lenet, a small sample, FID and IS).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from psgan_fast.metrics import extractors as ex
from psgan_fast.metrics.fid import feature_statistics, frechet_distance_details

Images = Union[torch.Tensor, np.ndarray]
Generator = Callable[[torch.Tensor], torch.Tensor]

CACHE_VERSION = 2  # bump when an extractor's definition changes (not only its weights)
NUM_CLASSES = 10


# --------------------------------------------------------------------------
# Images and features


def to_uint8_images(images: Images) -> torch.Tensor:
    """uint8 [N, C, H, W] from uint8 [N, H, W] / [N, C, H, W] or float in [-1, 1].

    Floats are mapped as the data pipeline maps uint8 to [-1, 1]
    (x = 2 u / 255 - 1), inverted and rounded: u = round((x + 1) * 127.5).
    """
    t = torch.as_tensor(images)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4:
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point in [-1, 1], got {t.dtype}")
    t = t.detach().float()
    if not torch.isfinite(t).all():
        raise ValueError("images contain non-finite values")
    return ((t.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class _Progress:
    """A tqdm bar when asked for, a no-op otherwise."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Extractor:
    """A torch-fidelity extractor with the features one evaluation needs."""

    def __init__(self, name: str, *, inception_weights=None, device="cpu") -> None:
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        cls = FEATURE_EXTRACTORS_REGISTRY[name] if name in FEATURE_EXTRACTORS_REGISTRY else None
        if cls is None:
            raise ValueError(f"unknown feature extractor {name!r}: choose one of {', '.join(ex.EXTRACTORS)}")
        self.name = name
        self.fid_layer = cls.get_default_feature_layer_for_metric("fid")
        self.isc_layer = cls.get_default_feature_layer_for_metric("isc")
        self.device = torch.device(device)
        self.module, self.identity = ex.create_extractor(
            name, [self.fid_layer, self.isc_layer], inception_weights=inception_weights, device=self.device)

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> dict[str, np.ndarray]:
        x = ex.prepare_images(images_u8, self.name).to(self.device)
        feats = self.module.convert_features_tuple_to_dict(self.module(x))
        return {k: v.detach().cpu().numpy() for k, v in feats.items()}

    def extract(self, images: Images, batch_size: int = 500, progress: Optional[_Progress] = None
                ) -> dict[str, np.ndarray]:
        images = to_uint8_images(images)
        parts: dict[str, list[np.ndarray]] = {}
        for s in range(0, len(images), batch_size):
            for k, v in self(images[s:s + batch_size]).items():
                parts.setdefault(k, []).append(v)
            if progress is not None:
                progress.update(min(batch_size, len(images) - s))
        if not parts:
            raise ValueError("no images to extract features from")
        return {k: np.concatenate(v) for k, v in parts.items()}


_EXTRACTORS: dict[tuple, Extractor] = {}


def get_extractor(name: str, *, inception_weights=None, device="cpu") -> Extractor:
    """A per-process cache of extractors (building Inception takes seconds)."""
    key = (name, os.fspath(inception_weights) if inception_weights else None, str(torch.device(device)))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractor(name, inception_weights=inception_weights, device=device)
    return _EXTRACTORS[key]


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity's IS (mean, std over `splits` splits) of class logits."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    splits = max(1, min(splits, len(logits)))
    out = isc_features_to_metric(torch.from_numpy(np.asarray(logits)), splits=splits, shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity's KID (mean, std over random subsets), polynomial kernel."""
    from torch_fidelity.defaults import DEFAULTS
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(f1), len(f2))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    kwargs = {**DEFAULTS, "kid_subsets": subsets, "kid_subset_size": size, "rng_seed": seed, "verbose": False}
    out = kid_features_to_metric(torch.from_numpy(np.asarray(f1)), torch.from_numpy(np.asarray(f2)), **kwargs)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


# --------------------------------------------------------------------------
# Real data


@dataclass
class RealReference:
    """Features and FID statistics of a real image set under one extractor."""

    source: str
    data_sha256: str
    count: int
    extractor: dict
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray  # for KID
    logits: np.ndarray  # for the real data's own IS and class histogram

    def summary(self) -> dict:
        is_mean, is_std = inception_score(self.logits)
        return {"source": self.source, "count": self.count, "sha256": self.data_sha256,
                "is_mean": is_mean, "is_std": is_std}


_REAL: dict[str, RealReference] = {}


def images_sha256(images: torch.Tensor) -> str:
    a = np.ascontiguousarray(images.numpy())
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def stats_cache_dir() -> Path:
    from psgan_fast.data import cache_dir

    return cache_dir() / "fid_stats"


def default_real_images(dataset: str = "mnist", split: str = "train", data_dir=None) -> tuple[np.ndarray, str]:
    """(uint8 images [N, 28, 28], source name) of a data set split."""
    from psgan_fast.data import find_dataset, read_idx

    images_path, _ = find_dataset(dataset, data_dir, split)
    return read_idx(images_path), f"{dataset}:{split}"


def real_reference(images: Optional[Images] = None, *, source: Optional[str] = None,
                   feature_extractor: str = ex.MNIST_LENET, inception_weights=None, device="cpu",
                   batch_size: int = 500, cache: bool = True, progress: bool = False) -> RealReference:
    """Features and statistics of real images (default: MNIST train), cached.

    The cache key is the SHA-256 of the uint8 image bytes, the extractor's
    name and its weights' SHA-256, so other data, another subset or other
    weights never hit a stale entry.
    """
    if images is None:
        images, default_source = default_real_images()
        source = source or default_source
    u8 = to_uint8_images(images)
    data_sha = images_sha256(u8)
    fe = get_extractor(feature_extractor, inception_weights=inception_weights, device=device)
    wsha = fe.identity["weights_sha256"] or "none"
    key = f"v{CACHE_VERSION}-{feature_extractor}-{wsha[:16]}-{data_sha[:24]}"
    if key in _REAL:
        return _REAL[key]
    path = stats_cache_dir() / f"{key}.npz"
    ref = None
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                ref = RealReference(source=source or str(z["source"]), data_sha256=data_sha, count=int(z["count"]),
                                    extractor=fe.identity, mu=z["mu"], sigma=z["sigma"],
                                    features=z["features"], logits=z["logits"])
        except (OSError, KeyError, ValueError):
            ref = None  # unreadable entry: recompute and overwrite
    if ref is None:
        bar = _Progress(progress, len(u8), f"real features ({feature_extractor})")
        try:
            feats = fe.extract(u8, batch_size, bar)
        finally:
            bar.close()
        mu, sigma = feature_statistics(feats[fe.fid_layer])
        ref = RealReference(source=source or "images", data_sha256=data_sha, count=len(u8),
                            extractor=fe.identity, mu=mu, sigma=sigma,
                            features=feats[fe.fid_layer].astype(np.float32),
                            logits=feats[fe.isc_layer].astype(np.float32))
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, source=np.array(ref.source), count=np.array(ref.count), mu=mu, sigma=sigma,
                     features=ref.features, logits=ref.logits)
            os.replace(tmp, path)
    _REAL[key] = ref
    return ref


# --------------------------------------------------------------------------
# Fake data


def _set_metrics(feats: np.ndarray, logits: np.ndarray, ref: RealReference, *, kid: bool,
                 kid_subsets: int, kid_subset_size: int, isc_splits: int, seed: int,
                 class_logits: Optional[np.ndarray]) -> dict:
    mu, sigma = feature_statistics(feats)
    fd = frechet_distance_details(mu, sigma, ref.mu, ref.sigma)
    is_mean, is_std = inception_score(logits, isc_splits, seed)
    out = {"num_samples": int(len(feats)), "fid": fd["distance"], "is_mean": is_mean, "is_std": is_std,
           "fid_method": fd["method"]}
    if kid:
        out["kid_mean"], out["kid_std"] = kernel_inception_distance(feats, ref.features, kid_subsets,
                                                                    kid_subset_size, seed)
    if class_logits is not None:
        counts = np.bincount(class_logits.argmax(1), minlength=NUM_CLASSES)
        out["class_histogram"] = [int(c) for c in counts]
    return out


def union_indices(counts: Sequence[int], n: int) -> list[np.ndarray]:
    """Rows of each set that make up the union of n: item i from set i mod N."""
    k = len(counts)
    take = [len(range(j, n, k)) for j in range(k)]
    for j, (t, c) in enumerate(zip(take, counts)):
        if t > c:
            raise ValueError(f"set {j} has {c} samples, the union of {n} needs {t}")
    return [np.arange(t) for t in take]


def evaluate_images(fake_sets: Sequence[Images], *, real: Optional[Union[RealReference, Images]] = None,
                    feature_extractor: str = ex.MNIST_LENET, inception_weights=None, device="cpu",
                    batch_size: int = 500, kid: bool = True, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, isc_splits: int = 10, seed: int = 0,
                    class_histograms: bool = True, progress: bool = False, union: bool = True) -> dict:
    """FID, IS (mean ± std over splits) and KID of each set of fake images and
    (with `union`) of their union, against `real` (a RealReference, real images, or None for
    MNIST train). Class histograms come from mnist-lenet's argmax whatever
    the extractor. Every result records the extractor that produced it.
    """
    t0 = time.perf_counter()
    if not fake_sets:
        raise ValueError("evaluate_images needs at least one set of images")
    ref = real if isinstance(real, RealReference) else real_reference(
        real, feature_extractor=feature_extractor, inception_weights=inception_weights, device=device,
        batch_size=batch_size, progress=progress)
    if ref.extractor["name"] != feature_extractor:
        raise ValueError(f"the real reference was made with {ref.extractor['name']}, not {feature_extractor}")
    fe = get_extractor(feature_extractor, inception_weights=inception_weights, device=device)
    lenet = None
    if class_histograms:
        lenet = fe if feature_extractor == ex.MNIST_LENET else get_extractor(ex.MNIST_LENET, device=device)
    sets = [to_uint8_images(s) for s in fake_sets]
    total = sum(len(s) for s in sets) * (2 if lenet is not None and lenet is not fe else 1)
    bar = _Progress(progress, total, f"fake features ({feature_extractor})")
    try:
        feats = [fe.extract(s, batch_size, bar) for s in sets]
        if lenet is None:
            cls = [None] * len(sets)
        elif lenet is fe:
            cls = [f[fe.isc_layer] for f in feats]
        else:
            cls = [lenet.extract(s, batch_size, bar)[lenet.isc_layer] for s in sets]
    finally:
        bar.close()
    common = dict(ref=ref, kid=kid, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                  isc_splits=isc_splits, seed=seed)
    per_set = []
    for j, (f, c) in enumerate(zip(feats, cls)):
        per_set.append({"index": j, **_set_metrics(f[fe.fid_layer], f[fe.isc_layer], class_logits=c, **common)})
    if not union:
        union_res = None
    elif len(sets) == 1:
        union_res = {k: v for k, v in per_set[0].items() if k != "index"}
    else:
        n = min(len(s) for s in sets)
        idx = union_indices([len(s) for s in sets], n)
        cat = lambda arrs: np.concatenate([a[i] for a, i in zip(arrs, idx)])  # noqa: E731
        union_res = _set_metrics(cat([f[fe.fid_layer] for f in feats]), cat([f[fe.isc_layer] for f in feats]),
                                 class_logits=None if lenet is None else cat(cls), **common)
    return {
        "feature_extractor": fe.identity,
        "real": ref.summary(),
        "seed": seed,
        "generators": per_set,
        "union": union_res,
        "seconds": time.perf_counter() - t0,
    }


def _latent_dim(gens: Sequence[Generator], latent_dim: Optional[int]) -> int:
    if latent_dim is not None:
        return int(latent_dim)
    dims = {getattr(g, "latent_dim", None) for g in gens}
    if len(dims) != 1 or None in dims:
        raise ValueError("pass latent_dim=: the generators do not all have the same .latent_dim attribute")
    return int(dims.pop())


def _device_of(g: Generator) -> torch.device:
    if isinstance(g, torch.nn.Module):
        p = next(iter(g.parameters()), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def sample_generator(g: Generator, n: int, latent_dim: int, seed: int, batch_size: int = 500,
                     progress: Optional[_Progress] = None) -> torch.Tensor:
    """n uint8 images from one generator, noise N(0, I) from a torch.Generator(seed)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_dim, generator=rng)
    dev = _device_of(g)
    out = []
    for s in range(0, n, batch_size):
        out.append(to_uint8_images(g(z[s:s + batch_size].to(dev)).float().cpu()))
        if progress is not None:
            progress.update(min(batch_size, n - s))
    return torch.cat(out)


def evaluate_generators(generators: Sequence[Generator], num_samples: int = 10000, *,
                        real: Optional[Union[RealReference, Images]] = None,
                        feature_extractor: str = ex.MNIST_LENET, latent_dim: Optional[int] = None,
                        seed: int = 0, inception_weights=None, device="cpu", batch_size: int = 500,
                        kid: bool = True, class_histograms: bool = True, progress: bool = False,
                        **metric_kwargs) -> dict:
    """Metrics of each generator (num_samples images each, noise seeded with
    seed + k for generator k) and of their union (num_samples images, image i
    from generator i mod N). Generators are callables z [B, latent_dim] ->
    images [B, C, H, W] in [-1, 1]; `latent_dim` defaults to their
    `.latent_dim`. See :func:`evaluate_images` for the result.
    """
    gens = list(generators)
    if not gens:
        raise ValueError("evaluate_generators needs at least one generator")
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    zdim = _latent_dim(gens, latent_dim)
    bar = _Progress(progress, num_samples * len(gens), "sampling")
    # Sample in eval mode, then give every submodule its own mode back
    # (during training the generators' networks are in train mode).
    modes = [(m, m.training) for g in gens if isinstance(g, torch.nn.Module) for m in g.modules()]
    try:
        for g in gens:
            if isinstance(g, torch.nn.Module):
                g.eval()
        sets = [sample_generator(g, num_samples, zdim, seed + k, batch_size, bar) for k, g in enumerate(gens)]
    finally:
        bar.close()
        for m, mode in modes:
            m.training = mode
    out = evaluate_images(sets, real=real, feature_extractor=feature_extractor, inception_weights=inception_weights,
                          device=device, batch_size=batch_size, kid=kid, seed=seed,
                          class_histograms=class_histograms, progress=progress, **metric_kwargs)
    out["num_samples"] = num_samples
    return out


def evaluate_for_training(generators: Sequence[Generator], num_samples: int = 2000, *,
                          real: Optional[Union[RealReference, Images]] = None, latent_dim: Optional[int] = None,
                          seed: int = 0, device="cpu") -> dict:
    """A quick mnist-lenet evaluation for the training log (``--eval-every``).

    Returns a flat dict for one metrics.jsonl record: ``fid`` and ``is`` /
    ``is_std`` of the union of the generators, ``fid_g{k}`` / ``is_g{k}``
    per generator, ``classes_g{k}`` (generator k's class histogram by
    mnist-lenet's argmax: when a generator collapsed onto a class, and whether
    it came back), the extractor, the sample size and the seconds it took.
    The real statistics (MNIST train unless `real` is given) are computed
    once and cached on disk.
    """
    t0 = time.perf_counter()
    res = evaluate_generators(generators, num_samples, real=real, feature_extractor=ex.MNIST_LENET,
                              latent_dim=latent_dim, seed=seed, device=device, kid=False,
                              class_histograms=True)  # free: mnist-lenet's logits are its IS layer
    rec = {"fid": res["union"]["fid"], "is": res["union"]["is_mean"], "is_std": res["union"]["is_std"]}
    for g in res["generators"]:
        rec[f"fid_g{g['index']}"] = g["fid"]
        rec[f"is_g{g['index']}"] = g["is_mean"]
        rec[f"classes_g{g['index']}"] = g["class_histogram"]
    rec.update({"eval_extractor": ex.MNIST_LENET, "eval_num_samples": num_samples,
                "eval_seconds": time.perf_counter() - t0})
    return rec
