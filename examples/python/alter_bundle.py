"""Read an alter multi-expert bundle (formats/bundle.md) into diffusers.

Dependencies: torch, diffusers, safetensors (nothing else). Typical use:

    from alter_bundle import load_bundle, load_expert_unet, load_bundle_unet, expert_for_timestep

    bundle = load_bundle("model.alter")
    assert not verify_checksums(bundle)                 # [] when every digest matches
    unet = load_expert_unet(bundle, 2)                  # expert 2 only: its tensors, its units skipped
    unet = load_bundle_unet(bundle)                     # every stored tensor; each call runs the expert
                                                        # its timestep is routed to (for pipelines)

Skipping follows alter (ALTER.md section 2, formats/bundle.md) exactly, as
scripts/make_forward_fixtures.py does: the `forward` of each unit module is wrapped, so a skipped
unit is never evaluated.

* A skipped ResnetBlock2D returns its input hidden state. In an up block diffusers concatenates
  the popped encoder skip before calling the resnet; the wrapper returns the first C_out channels
  of that input, i.e. the hidden state before the concat (the skip is still popped, and discarded).
* A skipped transformer unit is the BasicTransformerBlock only: the enclosing Transformer2DModel's
  GroupNorm, proj_in, proj_out and residual still run.

The tensors of units that every expert skips are not stored in a bundle; those modules keep
diffusers' random initialisation and are never run (a call that would run one raises).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from safetensors import safe_open

__all__ = [
    "Bundle",
    "BundleError",
    "load_bundle",
    "verify_checksums",
    "expert_for_timestep",
    "routed_timestep",
    "load_expert_unet",
    "load_bundle_unet",
    "set_expert",
    "bundle_scheduler",
    "call_macs",
    "load_components",
]

BUNDLE_FORMAT, EXPERT_FORMAT = "alter.bundle", "alter.bundle.expert"
# bundle.json: version 3 added the optional "components" (tokenizer, text encoder, VAE); expert
# manifests are still version 2.
FORMAT_VERSION, EXPERT_FORMAT_VERSION, COMPONENTS_VERSION = 3, 2, 3
# Keys that format version 1 spelled differently (version 1 -> current); version 1 is still read.
VERSION1_KEYS = {"kept_fraction": "kept_mac_fraction"}
BUNDLE_KEYS = {"format", "format_version", "architecture", "prediction_type", "scheduler", "source", "train_timesteps",
               "routing", "units", "experts", "files", "macs"}
OPTIONAL_BUNDLE_KEYS = {"components"}
EXPERT_KEYS = {"format", "format_version", "expert", "kept_units", "skipped_units", "macs", "macs_conv_linear",
               "kept_mac_fraction", "timesteps", "timestep_count", "tensors"}


class BundleError(Exception):
    """A bundle that cannot be read; names the file."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


@dataclass
class Bundle:
    path: str
    manifest: dict
    experts: List[dict]
    _absent: Optional[frozenset] = field(default=None, repr=False)

    @property
    def units(self) -> List[str]:
        return self.manifest["units"]

    @property
    def routing(self) -> List[int]:
        return self.manifest["routing"]

    @property
    def architecture(self) -> dict:
        return self.manifest["architecture"]

    @property
    def prediction_type(self) -> str:
        return self.manifest["prediction_type"]

    def skipped_units(self, expert: int) -> frozenset:
        return frozenset(self.experts[expert]["skipped_units"])

    @property
    def absent_units(self) -> frozenset:
        """Units no expert keeps (not stored)."""
        if self._absent is None:
            self._absent = frozenset.intersection(*(self.skipped_units(e) for e in range(len(self.experts))))
        return self._absent

    def file(self, relative: str) -> str:
        return _inside(self.path, relative)


def _inside(bundle: str, relative: str) -> str:
    parts = relative.split("/")
    if relative.startswith("/") or not relative or ".." in parts or "." in parts:
        raise BundleError(os.path.join(bundle, "bundle.json"), f'"{relative}" is not a path inside the bundle')
    return os.path.join(bundle, relative)


def _read_manifest(path: str, fmt: str, keys: set, latest: int, optional: frozenset = frozenset()) -> dict:
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except FileNotFoundError:
        raise BundleError(path, "not found") from None
    except ValueError as e:
        raise BundleError(path, f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BundleError(path, "not a JSON object")
    if obj.get("format") != fmt:
        raise BundleError(path, f'format is {obj.get("format")!r}, expected "{fmt}"')
    version = obj.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= latest:
        raise BundleError(path, f"format_version {version!r} is not supported (this reader reads 1 to {latest})")
    if version == 1:
        obj = {VERSION1_KEYS.get(k, k): v for k, v in obj.items()}
        if isinstance(obj.get("macs"), dict):
            obj["macs"] = {VERSION1_KEYS.get(k, k): v for k, v in obj["macs"].items()}
    extra = sorted(set(obj) - keys - (optional if version >= COMPONENTS_VERSION else frozenset()))
    if extra:
        raise BundleError(path, f'unknown key "{extra[0]}"')
    missing = sorted(keys - set(obj))
    if missing:
        raise BundleError(path, f'missing key "{missing[0]}"')
    return obj


def load_bundle(path: str) -> Bundle:
    """Reads bundle.json and every expert manifest (schema and format version checked, as alter does).
    Weights are read when a UNet is built."""
    if not os.path.isfile(os.path.join(path, "bundle.json")):
        raise BundleError(path, "not a bundle: bundle.json not found")
    m = _read_manifest(os.path.join(path, "bundle.json"), BUNDLE_FORMAT, BUNDLE_KEYS, FORMAT_VERSION, OPTIONAL_BUNDLE_KEYS)
    experts = []
    for i, entry in enumerate(m["experts"]):
        if entry["index"] != i:
            raise BundleError(os.path.join(path, "bundle.json"), f"experts[{i}] has index {entry['index']}")
        e = _read_manifest(_inside(path, entry["manifest"]), EXPERT_FORMAT, EXPERT_KEYS, EXPERT_FORMAT_VERSION)
        if e["expert"] != i:
            raise BundleError(_inside(path, entry["manifest"]), f"expert is {e['expert']}, expected {i}")
        experts.append(e)
    if not experts:
        raise BundleError(path, "no experts")
    bad = [t for t, e in enumerate(m["routing"]) if not 0 <= e < len(experts)]
    if bad or not m["routing"]:
        raise BundleError(os.path.join(path, "bundle.json"), "the routing table is empty" if not bad else
                          f"routing[{bad[0]}] = {m['routing'][bad[0]]} is not an expert")
    return Bundle(path=path, manifest=m, experts=experts)


# --------------------------------------------------------------------------------------------
# checksums


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _safetensors_header(path: str):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def verify_checksums(bundle: Bundle, tensors: bool = False) -> List[str]:
    """Checks the sizes and SHA-256 of the weight files, expert manifests and component files (and,
    with tensors=True, the SHA-256 of every listed tensor's stored bytes, the components' too).
    Returns the failures, each naming the file or tensor; [] when everything matches."""
    failures = []
    components = bundle.manifest.get("components") or {}
    for f in bundle.manifest["files"] + [f for c in components.values() for f in c["files"]]:
        p = bundle.file(f["path"])
        if not os.path.isfile(p):
            failures.append(f"{f['path']} is missing")
            continue
        size = os.path.getsize(p)
        if size != f["bytes"]:
            failures.append(f"{f['path']} has {size} bytes, the manifest says {f['bytes']}")
        digest = _sha256_file(p)
        if digest != f["sha256"]:
            failures.append(f"{f['path']} has SHA-256 {digest}, the manifest says {f['sha256']}")
    for e in bundle.manifest["experts"]:
        p = bundle.file(e["manifest"])
        digest = _sha256_file(p) if os.path.isfile(p) else "(missing)"
        if digest != e["sha256"]:
            failures.append(f"{e['manifest']} has SHA-256 {digest}, bundle.json says {e['sha256']}")
    if tensors:
        headers, seen = {}, set()
        for m in bundle.experts + list(components.values()):
            for t in m["tensors"]:
                key = (t["file"], t["name"])
                if key in seen:
                    continue
                seen.add(key)
                p = bundle.file(t["file"])
                if p not in headers:
                    try:
                        headers[p] = _safetensors_header(p)
                    except (OSError, ValueError, struct.error) as e:
                        headers[p] = None
                        failures.append(f"{t['file']}: cannot read the safetensors header ({e})")
                if headers[p] is None:
                    continue
                start, header = headers[p]
                info = header.get(t["name"])
                if info is None:
                    failures.append(f"{t['file']}: tensor '{t['name']}' is missing")
                    continue
                if info["dtype"] != t["dtype"] or list(info["shape"]) != list(t["shape"]):
                    failures.append(f"{t['file']}: '{t['name']}' is {info['dtype']} {info['shape']}, "
                                    f"the manifest says {t['dtype']} {t['shape']}")
                    continue
                a, b = info["data_offsets"]
                with open(p, "rb") as f:
                    f.seek(start + a)
                    digest = hashlib.sha256(f.read(b - a)).hexdigest()
                if digest != t["sha256"]:
                    failures.append(f"{t['file']}: tensor '{t['name']}' has SHA-256 {digest}, the manifest says {t['sha256']}")
    return failures


# --------------------------------------------------------------------------------------------
# routing


def _scalar_timestep(t) -> float:
    if isinstance(t, torch.Tensor):
        flat = t.detach().reshape(-1).double().cpu()
        if flat.numel() == 0:
            raise ValueError("empty timestep tensor")
        if not bool((flat == flat[0]).all()):
            raise ValueError(f"timesteps differ within the batch ({flat.tolist()}): one call runs one expert")
        return float(flat[0])
    return float(t)


def routed_timestep(bundle: Bundle, t) -> int:
    """The training timestep a sampler timestep is routed by: the nearest integer (halves away from
    zero, as alter), clamped to 0 .. T-1."""
    x = _scalar_timestep(t)
    r = math.copysign(math.floor(abs(x) + 0.5), x)
    return int(min(max(r, 0), len(bundle.routing) - 1))


def expert_for_timestep(bundle: Bundle, t) -> int:
    """The expert that serves timestep t (an int, float, or a tensor holding one value per batch row,
    all equal), exactly as alter routes a sampler timestep."""
    return bundle.routing[routed_timestep(bundle, t)]


# --------------------------------------------------------------------------------------------
# UNets


class _Skipper:
    """Wraps the forward of every unit module of a UNet; `skip` is the set of units not computed."""

    def __init__(self, unet, bundle: Bundle, absent: Iterable[str]):
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.resnet import ResnetBlock2D

        self.bundle, self.absent = bundle, frozenset(absent)
        self.skip: frozenset = frozenset()
        self.expert: Optional[int] = None
        self.routed = False
        # (timestep, expert) of every routed call, for MAC accounting; clear it between images.
        self.history: List[tuple] = []
        modules = dict(unet.named_modules())
        for name in bundle.units:
            mod = modules.get(name)
            if isinstance(mod, ResnetBlock2D):
                mod.forward = self._resnet(name, mod)
            elif isinstance(mod, BasicTransformerBlock):
                mod.forward = self._transformer(name, mod)
            else:
                raise BundleError(bundle.path, f"unit {name} is not a ResnetBlock2D or BasicTransformerBlock of this UNet")

    def _check(self, name):
        if name in self.absent:
            raise RuntimeError(f"unit {name} is not stored in the bundle (every expert skips it) but the current "
                               f"skip set (expert {self.expert}) would run it")

    def _resnet(self, name, mod):
        orig, c = mod.forward, mod.out_channels

        def forward(input_tensor, *args, **kwargs):
            if name in self.skip:
                # In an up block the input is cat([hidden, skip]): keep the hidden state.
                return input_tensor[:, :c] if input_tensor.shape[1] != c else input_tensor
            self._check(name)
            return orig(input_tensor, *args, **kwargs)

        return forward

    def _transformer(self, name, mod):
        orig = mod.forward

        def forward(hidden_states, *args, **kwargs):
            if name in self.skip:
                return hidden_states
            self._check(name)
            return orig(hidden_states, *args, **kwargs)

        return forward

    def set_expert(self, expert: int):
        if not 0 <= expert < len(self.bundle.experts):
            raise ValueError(f"expert {expert} does not exist (0..{len(self.bundle.experts) - 1})")
        self.expert, self.skip = expert, self.bundle.skipped_units(expert)


def _build(bundle: Bundle, entries: Sequence[dict], absent: frozenset, dtype, device):
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in bundle.architecture.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(config)
    expected = unet.state_dict()
    state: Dict[str, torch.Tensor] = {}
    by_file: Dict[str, List[dict]] = {}
    for e in entries:
        by_file.setdefault(e["file"], []).append(e)
    for rel, es in by_file.items():
        with safe_open(bundle.file(rel), framework="pt") as f:
            names = set(f.keys())
            for e in es:
                if e["name"] not in names:
                    raise BundleError(bundle.file(rel), f"tensor '{e['name']}' is missing")
                t = f.get_tensor(e["name"])
                if list(t.shape) != list(e["shape"]):
                    raise BundleError(bundle.file(rel), f"tensor '{e['name']}' has shape {list(t.shape)}, the manifest says {e['shape']}")
                if e["name"] not in expected:
                    raise BundleError(bundle.file(rel), f"tensor '{e['name']}' is not a parameter of the architecture")
                if tuple(expected[e["name"]].shape) != tuple(t.shape):
                    raise BundleError(bundle.file(rel), f"tensor '{e['name']}' has shape {list(t.shape)}, "
                                                        f"the architecture needs {list(expected[e['name']].shape)}")
                state[e["name"]] = t.to(torch.float32)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    stray = [k for k in missing if not any(k.startswith(u + ".") for u in absent)]
    if stray:
        raise BundleError(bundle.path, f"the manifests do not list {len(stray)} tensors outside the skipped units, e.g. '{stray[0]}'")
    if dtype != torch.float32:
        unet = unet.to(dtype=dtype)
    if device is not None:
        unet = unet.to(device=device)
    unet.eval()
    unet.requires_grad_(False)
    return unet


def load_expert_unet(bundle: Bundle, expert: int, dtype=torch.float32, device=None):
    """diffusers UNet2DConditionModel of one expert: reads only the tensors its manifest lists; the
    units it skips are never run (their parameters keep diffusers' random initialisation)."""
    m = bundle.experts[expert]
    skipped = bundle.skipped_units(expert)
    unet = _build(bundle, m["tensors"], skipped, dtype, device)
    unet._alter = _Skipper(unet, bundle, absent=skipped)
    unet._alter.set_expert(expert)
    return unet


def load_bundle_unet(bundle: Bundle, dtype=torch.float32, device=None, routed: bool = True):
    """diffusers UNet2DConditionModel holding every stored tensor (all experts share them). With
    routed=True, each call runs the expert its timestep is routed to (expert_for_timestep), so the
    model can replace a pipeline's UNet as is; set_expert(unet, k) fixes an expert instead.
    unet._alter.history lists (timestep, expert) of every routed call."""
    seen, entries = set(), []
    for m in bundle.experts:
        for t in m["tensors"]:
            if t["name"] not in seen:
                seen.add(t["name"])
                entries.append(t)
    unet = _build(bundle, entries, bundle.absent_units, dtype, device)
    skipper = _Skipper(unet, bundle, absent=bundle.absent_units)
    unet._alter = skipper
    skipper.set_expert(bundle.routing[0])
    skipper.routed = routed

    def route(module, args, kwargs):
        if skipper.routed:
            t = kwargs["timestep"] if "timestep" in kwargs else args[1]
            skipper.set_expert(expert_for_timestep(bundle, t))
            skipper.history.append((_scalar_timestep(t), skipper.expert))

    unet.register_forward_pre_hook(route, with_kwargs=True)
    return unet


def set_expert(unet, expert: Optional[int]):
    """Runs expert `expert` on every following call of a UNet from load_bundle_unet (routing off), or,
    with None, routes each call by its timestep again."""
    s = unet._alter
    if expert is None:
        s.routed = True
    else:
        s.routed = False
        s.set_expert(expert)


def bundle_scheduler(bundle: Bundle, class_name: Optional[str] = None):
    """A diffusers scheduler from the bundle's scheduler config (bundle.json `scheduler`), of its
    `_class_name` or of `class_name` (e.g. "PNDMScheduler", "EulerDiscreteScheduler"). Missing keys
    take alter's defaults (SD's: steps_offset 1, set_alpha_to_one false, skip_prk_steps true, ...;
    the bundle's prediction type), so that the timesteps are those `alter sample` uses."""
    import diffusers

    config = dict(bundle.manifest["scheduler"])
    defaults = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    steps_offset=1, set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False,
                    prediction_type=bundle.prediction_type)
    for k, v in defaults.items():
        if config.get(k) is None:
            config[k] = v
    cls = getattr(diffusers, class_name or config.get("_class_name", "DDIMScheduler"))
    return cls.from_config(config)


def call_macs(bundle: Bundle, experts: Iterable[int]) -> int:
    """MACs of UNet calls running `experts` (one per call, batch 1) at the bundle's MAC latent size
    (bundle.json macs: latent_height x latent_width, context_length tokens). A classifier-free-guided
    call runs batch 2: twice this."""
    return sum(bundle.manifest["macs"]["experts"][e] for e in experts)


# --------------------------------------------------------------------------------------------
# pipeline components (format version 3)


def load_components(bundle: Bundle, dtype=torch.float32, device=None):
    """The tokenizer, text encoder and VAE the bundle carries (`alter export --pipeline`), as
    transformers' CLIPTokenizer and CLIPTextModel and diffusers' AutoencoderKL read them from the
    bundle's tokenizer/, text_encoder/ and vae/ folders; None when it carries none. Needs
    transformers. Checksums are verify_checksums's."""
    if not bundle.manifest.get("components"):
        return None
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(bundle.file("tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(bundle.file("text_encoder"), torch_dtype=dtype).to(device).eval()
    vae = AutoencoderKL.from_pretrained(bundle.file("vae"), torch_dtype=dtype).to(device).eval()
    return tokenizer, text_encoder, vae
