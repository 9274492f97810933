"""Feature extractors, plugged into torch-fidelity's registry.

* ``inception-v3-compat`` — torch-fidelity's own port of the TF Inception
  network used by the paper (and by every published FID/IS). Its weights
  (~100 MB) are downloaded by torch-fidelity into the torch hub cache when
  online. Offline, give a local file: ``inception_weights=PATH`` (CLI
  ``--inception-weights PATH``) or ``$PSGAN_FAST_INCEPTION_WEIGHTS``; a file
  already in the torch hub cache is used without a download. When none of
  that works, :class:`InceptionWeightsUnavailable` says what to do. The
  weights are read here, never by torch-fidelity's ``torch.load(...,
  weights_only=False)``: a tensor archive (``torch.load(weights_only=True)``,
  which runs no pickled code) or a safetensors file, checked to be a plain
  mapping of names to tensors, then handed to torch-fidelity's constructor.
* ``mnist-lenet`` — this project's MNIST classifier (:mod:`.lenet`, trained
  by ``scripts/train_mnist_lenet.py``, weights shipped in
  ``psgan_fast/weights/mnist_lenet.safetensors``). Features: ``"128"``, the
  penultimate activations (FID, KID); ``"logits"``, 10 classes (IS, class
  histograms). With 10 classes its IS is at most 10, unlike the paper's
  1000-class Inception IS (12.2 for PS-GAN), so the two are not comparable.

Both take what torch-fidelity feeds every extractor: uint8 images
[N, C, H, W]. ``mnist-lenet`` accepts 1 or 3 channels (RGB is averaged) and
resizes to 28x28 when needed; ``inception-v3-compat`` wants 3 channels, so
:func:`prepare_images` repeats a grey channel for it.
"""

from __future__ import annotations

import os
import pickle
import threading
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from psgan_fast.fsutil import sha256_file
from psgan_fast.metrics.lenet import IMAGE_SIZE, MNISTLeNet

MNIST_LENET = "mnist-lenet"
INCEPTION = "inception-v3-compat"
EXTRACTORS = (MNIST_LENET, INCEPTION)

LENET_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "mnist_lenet.safetensors"
INCEPTION_ENV = "PSGAN_FAST_INCEPTION_WEIGHTS"

PathLike = Union[str, os.PathLike]


class InceptionWeightsUnavailable(RuntimeError):
    """Neither a local Inception weights file nor a download worked."""


class FeatureExtractorMNISTLeNet(FeatureExtractorBase):
    """torch-fidelity feature extractor backed by :class:`MNISTLeNet`."""

    def __init__(self, name: str, features_list: Sequence[str],
                 feature_extractor_weights_path: Optional[PathLike] = None, **kwargs) -> None:
        super().__init__(name, list(features_list))
        from safetensors.torch import load_file

        path = Path(feature_extractor_weights_path or LENET_WEIGHTS)
        if not path.is_file():
            raise FileNotFoundError(
                f"mnist-lenet weights not found at {path}; run scripts/train_mnist_lenet.py to create them")
        self.net = MNISTLeNet()
        self.net.load_state_dict(load_file(str(path)))
        self.weights_path = path
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("128", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "128", "kid": "128", "prc": "128"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] in (1, 3)):
            raise ValueError(f"mnist-lenet expects uint8 images [N, 1 or 3, H, W], got "
                             f"{getattr(x, 'dtype', type(x))} of shape {tuple(getattr(x, 'shape', ()))}")
        x = x.float() / 255.0
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        feats, logits = self.net.features_and_logits(x)
        out = {"128": feats, "logits": logits}
        return tuple(out[name] for name in self.features_list)


def register() -> None:
    """Register ``mnist-lenet`` with torch-fidelity (idempotent)."""
    if MNIST_LENET not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(MNIST_LENET, FeatureExtractorMNISTLeNet)


register()


def _inception_file_name() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3.rsplit("/", 1)[-1]


def inception_weights_path(explicit: Optional[PathLike] = None) -> Optional[Path]:
    """A local Inception weights file, or None (then torch-fidelity downloads).

    Looks at `explicit` (which must exist), then ``$PSGAN_FAST_INCEPTION_WEIGHTS``
    (which must exist when set), then torch-fidelity's file in the torch hub
    cache (``$TORCH_HOME/hub/checkpoints``).
    """
    for origin, value in (("--inception-weights", explicit), (INCEPTION_ENV, os.environ.get(INCEPTION_ENV))):
        if value:
            p = Path(value).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"{origin}: Inception weights file {p} does not exist")
            return p
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _inception_file_name()
    return cached if cached.is_file() else None


def default_feature_extractor(inception_weights: Optional[PathLike] = None) -> str:
    """``inception-v3-compat`` when its weights are on this machine, else ``mnist-lenet``."""
    return INCEPTION if inception_weights_path(inception_weights) is not None else MNIST_LENET


@lru_cache(maxsize=None)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(Path(path))


def file_sha256(path: PathLike) -> str:
    st = os.stat(path)
    return _sha256(os.fspath(path), st.st_mtime_ns, st.st_size)


def create_extractor(name: str, features: Sequence[str], *, inception_weights: Optional[PathLike] = None,
                     device: Union[str, torch.device] = "cpu") -> tuple[FeatureExtractorBase, dict]:
    """Build a registered extractor through torch-fidelity, on `device`.

    Returns (extractor, identity) where identity records what produced the
    features: {"name", "weights", "weights_sha256"}.
    """
    from torch_fidelity.utils import create_feature_extractor

    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}: choose one of {', '.join(EXTRACTORS)}")
    weights: Optional[Path]
    if name == MNIST_LENET:
        weights = LENET_WEIGHTS
        fe = create_feature_extractor(name, list(features), cuda=False, verbose=False,
                                      feature_extractor_weights_path=str(weights))
    else:
        weights = inception_weights_path(inception_weights)
        if weights is None:
            state = _download_inception()
            weights = inception_weights_path()  # downloaded just now into the hub cache
        else:
            state = load_tensor_archive(weights)
        try:
            fe = _inception_from_state(features, state)
        except RuntimeError as e:  # load_state_dict: missing/unexpected keys, shapes
            raise ValueError(f"{weights} is not an inception-v3-compat weights file: "
                             f"{_first_line(e)}") from None
    fe = fe.to(device)
    identity = {
        "name": name,
        "weights": None if weights is None else os.fspath(weights),
        "weights_sha256": None if weights is None else file_sha256(weights),
    }
    return fe, identity


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _refusal(e: BaseException) -> str:
    """The one useful line of torch's weights_only refusal (what it met in
    the pickle), without its advice to load with weights_only=False."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(boiler)]
    return " ".join(lines) or _first_line(e)


def load_tensor_archive(path: PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a torch tensor archive, read
    without running pickled code; anything that is not a non-empty mapping
    of names to tensors is refused with a one-line ValueError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the Inception weights ({e.strerror or e})") from None
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} is not an inception-v3-compat weights file: not a plain tensor archive, "
                         f"refused without running it ({_refusal(e)})") from None
    except Exception as e:  # noqa: BLE001 - EOFError, RuntimeError (zip), SafetensorError...
        what = "an empty file" if not head else _first_line(e)
        raise ValueError(f"{path} is not an inception-v3-compat weights file ({what})") from None
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and torch.is_tensor(v)
                                                      for k, v in state.items())):
        raise ValueError(f"{path} is not an inception-v3-compat weights file (not a mapping of names to tensors)")
    return dict(state)


def _download_inception() -> dict[str, torch.Tensor]:
    """torch-fidelity's weights from its release URL into the torch hub
    cache, read with weights_only=True."""
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    try:
        return inc.load_state_dict_from_url(inc.URL_INCEPTION_V3, map_location="cpu", progress=False,
                                            weights_only=True)
    except OSError as e:  # URLError, timeouts, refused connections
        raise InceptionWeightsUnavailable(
            f"the Inception weights are not on this machine and downloading them failed ({e}). "
            f"Pass --inception-weights PATH (or set ${INCEPTION_ENV}) to a local copy of "
            f"{_inception_file_name()}, or use --feature-extractor mnist-lenet") from None
    except Exception as e:  # noqa: BLE001 - a damaged download
        raise ValueError(f"the downloaded Inception weights are not usable ({_first_line(e)}); delete "
                         f"{Path(torch.hub.get_dir()) / 'checkpoints' / _inception_file_name()} and retry") from None


_BUILD_LOCK = threading.Lock()


def _inception_from_state(features: Sequence[str], state: dict[str, torch.Tensor]) -> FeatureExtractorBase:
    """torch-fidelity's inception-v3-compat built from an already-loaded
    state dict: its constructor fetches the weights through
    `load_state_dict_from_url` when given no path, so that one name is
    pointed at `state` while it runs."""
    from torch_fidelity.utils import create_feature_extractor
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    with _BUILD_LOCK:
        fetch = inc.load_state_dict_from_url
        inc.load_state_dict_from_url = lambda *a, **k: state
        try:
            return create_feature_extractor(INCEPTION, list(features), cuda=False, verbose=False)
        finally:
            inc.load_state_dict_from_url = fetch


def prepare_images(images: torch.Tensor, extractor_name: str) -> torch.Tensor:
    """uint8 [N, C, H, W] as the extractor wants them (3 channels for Inception)."""
    if extractor_name == INCEPTION and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    return images
