"""dlib's ``.dat`` network serialisation: read it, write it, and convert the face ResNet to PyTorch.

Source: dlib's serialisation code (``dlib/serialize.h``: ``pack_int``, ``float_details``, bool and
string; ``dlib/cuda/tensor.h``: ``resizable_tensor`` version 2 as raw little-endian float32,
``alias_tensor`` version 1; ``dlib/dnn/core.h``: ``add_loss_layer``, ``add_layer``, ``add_tag_layer``,
``add_skip_layer``; ``dlib/dnn/layers.h``, ``input.h``, ``loss.h``: the per-layer fields) and
``../shared/models/dlib_resnet/README.md`` (the architecture in PyTorch terms and the key names of
the converted ``state_dict``). The model file itself is ``dlib_face_recognition_resnet_model_v1.dat``
by Davis King (CC0 1.0), shipped in the PyPI source distribution face-recognition-models 0.3.0.

Layout of a serialised network (what :func:`read_dlib_dat` parses; no dlib needed):

* ``add_loss_layer``: int version 1, the loss layer's fields, then the network below it;
* each ``add_layer`` / tag / skip node writes its version and then *its sub-network first*, so the
  file holds all node versions from the output down to the input (2 = computational layer,
  1 = tag or skip layer with nothing else, 3 (or 2) = the computational layer right above the input
  layer), then the input layer's fields, then — unwinding from the input up — each computational
  layer's fields followed by its state (three bools, three tensors; the layer above the input adds
  ``_sample_expansion_factor`` in version 3);
* integers: one control byte (low nibble = byte count, 0x80 = negative) then little-endian bytes;
  floats: ``float_details`` = integer mantissa and exponent (value = m·2^e); bools: ASCII '0'/'1';
  strings: length then bytes; tensors: version 2, four integer sizes, raw float32 LE values.

:func:`write_dlib_dat` inverts :func:`read_dlib_dat` byte for byte, and
:func:`dlib_resnet_network` builds the face ResNet's dlib network from a PyTorch ``state_dict``
(the architecture of dlib's ``dnn_face_recognition_ex.cpp``), so the conversion can be checked
without the ``.dat``: the network built from the converted weights serialises to the published
file's SHA-256 (``tests/test_fetch.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DlibLayer",
    "DlibNetwork",
    "read_dlib_dat",
    "write_dlib_dat",
    "dlib_resnet_state_dict",
    "dlib_resnet_network",
    "convert_dlib_resnet",
]

# Field lists per serialised layer name, in file order: (name, kind); kinds: "int", "f32"/"f64"
# (float_details of a float or a double), "bool", "tensor" (resizable_tensor), "alias" (alias_tensor).
_POOL = [("nr", "int"), ("nc", "int"), ("stride_y", "int"), ("stride_x", "int"),
         ("padding_y", "int"), ("padding_x", "int")]
_MULTIPLIERS = [("learning_rate_multiplier", "f64"), ("weight_decay_multiplier", "f64"),
                ("bias_learning_rate_multiplier", "f64"), ("bias_weight_decay_multiplier", "f64")]
_CON = ([("params", "tensor"), ("num_filters", "int")] + _POOL
        + [("filters", "alias"), ("biases", "alias")] + _MULTIPLIERS)
_FC = ([("num_outputs", "int"), ("num_inputs", "int"), ("params", "tensor"), ("weights", "alias"),
        ("biases", "alias"), ("bias_mode", "int")] + _MULTIPLIERS)
_AFFINE = [("params", "tensor"), ("gamma", "alias"), ("beta", "alias"), ("mode", "int")]
_SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "con_4": _CON, "con_5": _CON + [("use_bias", "bool")],
    "con_6": _CON + [("use_bias", "bool"), ("use_relu", "bool")],
    "affine_": _AFFINE, "affine_2": _AFFINE + [("disabled", "bool")],
    "relu_": [], "relu_2": [("disabled", "bool")],
    "max_pool_2": _POOL, "avg_pool_2": _POOL, "add_prev_": [],
    "fc_2": _FC, "fc_3": _FC + [("use_bias", "bool")],
    "input_rgb_image_sized": [("avg_red", "f32"), ("avg_green", "f32"), ("avg_blue", "f32"),
                              ("nr", "int"), ("nc", "int")],
    "loss_metric_": [], "loss_metric_2": [("margin", "f32"), ("dist_thresh", "f32")],
}
_FLOAT_DIGITS = {"f32": 24, "f64": 53}  # std::numeric_limits<T>::digits
_EMPTY = np.zeros((0, 0, 0, 0), dtype=np.float32)


@dataclass
class DlibLayer:
    """One serialised dlib layer: its version string and its fields in file order.

    Source: the ``serialize``/``deserialize`` functions of each layer in dlib (module docstring).
    Convention: ``name`` is the version string dlib writes (``"con_4"``, ``"affine_"``, ...);
    ``fields`` maps field names to ints, floats, bools, numpy float32 tensors (4-d) or alias shapes
    (4-tuples); ``state`` holds what ``add_layer`` writes after the layer (``setup_called``,
    ``gradient_input_is_stale``, ``output_disabled``, ``x_grad``, ``cached_output``,
    ``params_grad`` or ``grad_final``, and ``sample_expansion_factor`` for the layer above the
    input); it is empty for the input and loss layers.
    Shapes: tensors (num_samples, k, nr, nc) float32.
    """

    name: str
    fields: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """A parsed dlib network: loss layer, input layer and the nodes between, from input to output.

    Source: ``add_loss_layer``/``add_layer``/``add_tag_layer``/``add_skip_layer`` serialisation.
    Convention: ``nodes[0]`` is the computational layer right above the input (written with
    ``first_version``); every other node is a :class:`DlibLayer` (version 2) or the string
    ``"tag"`` for a tag or skip layer (version 1: they carry no data).
    Shapes: none.
    """

    loss: DlibLayer
    input: DlibLayer
    nodes: list
    first_version: int = 3


class _Reader:
    """Sequential reader of dlib's binary primitives over a bytes buffer."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated dlib file: needed {n} bytes at offset {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def peek_int(self) -> int:
        pos = self.pos
        try:
            return self.int()
        finally:
            self.pos = pos

    def int(self) -> int:
        control = self._take(1)[0]
        if control & 0x70:
            raise ValueError(f"not a dlib integer at offset {self.pos - 1} (control byte {control:#x})")
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # float_details::is_inf, is_ninf, is_nan
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            raise ValueError(f"not a dlib bool at offset {self.pos - 1}: {char!r}")
        return char == b"1"

    def str(self) -> str:
        return bytes(self._take(self.int())).decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unsupported dlib tensor version {version} at offset {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple:
        version = self.int()
        if version != 1:
            raise ValueError(f"unsupported dlib alias_tensor version {version} at offset {self.pos}")
        return tuple(self.int() for _ in range(4))

    def layer(self) -> DlibLayer:
        name = self.str()
        if name not in _SCHEMAS:
            raise ValueError(f"unsupported dlib layer {name!r} (supported: {', '.join(sorted(_SCHEMAS))})")
        values = {}
        for key, kind in _SCHEMAS[name]:
            values[key] = self.float() if kind in _FLOAT_DIGITS else getattr(self, kind)()
        return DlibLayer(name, values)


class _Writer:
    """Sequential writer of dlib's binary primitives (inverse of :class:`_Reader`)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def int(self, value: int) -> None:
        value = int(value)
        magnitude = abs(value)
        body = bytearray()
        while True:  # dlib writes at least one byte, also for 0
            body.append(magnitude & 0xFF)
            magnitude >>= 8
            if magnitude == 0:
                break
        self.parts.append(bytes([len(body) | (0x80 if value < 0 else 0)]) + bytes(body))

    def float(self, value: float, kind: str) -> None:
        """``float_details`` of ``value`` as dlib computes it for a float (24 digits) or double (53)."""
        if math.isnan(value):
            mantissa, exponent = 0, 32002
        elif math.isinf(value):
            mantissa, exponent = 0, 32000 if value > 0 else 32001
        else:
            digits = _FLOAT_DIGITS[kind]
            fraction, exp = math.frexp(value)
            mantissa, exponent = int(fraction * (1 << digits)), exp - digits
            for _ in range(8):  # drop low-order zero bytes, as float_details does
                if mantissa & 0xFF:
                    break
                mantissa >>= 8
                exponent += 8
        self.int(mantissa)
        self.int(exponent)

    def bool(self, value: bool) -> None:
        self.parts.append(b"1" if value else b"0")

    def str(self, value: str) -> None:
        raw = value.encode("latin-1")
        self.int(len(raw))
        self.parts.append(raw)

    def tensor(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype="<f4")
        if value.ndim != 4:
            raise ValueError(f"dlib tensors are 4-d, got shape {value.shape}")
        self.int(2)
        for size in value.shape:
            self.int(size)
        self.parts.append(value.tobytes())

    def alias(self, shape) -> None:
        self.int(1)
        for size in shape:
            self.int(size)

    def layer(self, layer: DlibLayer) -> None:
        if layer.name not in _SCHEMAS:
            raise ValueError(f"unsupported dlib layer {layer.name!r}")
        self.str(layer.name)
        for key, kind in _SCHEMAS[layer.name]:
            if kind in _FLOAT_DIGITS:
                self.float(layer.fields[key], kind)
            else:
                getattr(self, kind)(layer.fields[key])


def read_dlib_dat(source: str | Path | bytes) -> DlibNetwork:
    """Parse a dlib network file (``deserialize(file) >> net``) without dlib.

    Source: dlib's serialisation code (module docstring); checked on
    ``dlib_face_recognition_resnet_model_v1.dat`` (every byte consumed, weights equal to
    ``../shared/models/dlib_resnet``'s converted file).
    Convention: supports a loss layer at the top, the layers listed in the module's schemas, tag
    and skip layers, and an ``input_rgb_image_sized`` input; nothing is interpreted beyond
    reading (see :func:`dlib_resnet_state_dict` for the face ResNet).
    Shapes: tensors come back as float32 arrays of their 4-d dlib shape.
    Raises:
        ValueError: the bytes are not such a network (unknown layer or version, truncated, or
            bytes left over at the end).
    """
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    r = _Reader(bytes(data))
    if r.int() != 1:
        raise ValueError("not a dlib network file: the add_loss_layer version is not 1")
    loss = r.layer()
    versions = []
    while r.peek_int() in (1, 2, 3) and len(versions) < 100_000:
        versions.append(r.int())
    if not versions or versions[-1] not in (2, 3):
        raise ValueError("dlib network: expected a computational layer right above the input layer")
    input_layer = r.layer()
    if input_layer.name != "input_rgb_image_sized":
        raise ValueError(f"dlib network: unsupported input layer {input_layer.name!r}")
    first = r.layer()
    first.state = {"setup_called": r.bool(), "gradient_input_is_stale": r.bool(), "output_disabled": r.bool(),
                   "x_grad": r.tensor(), "cached_output": r.tensor(), "grad_final": r.tensor()}
    if versions[-1] >= 3:
        first.state["sample_expansion_factor"] = r.int()
    nodes: list = [first]
    for version in reversed(versions[:-1]):
        if version == 1:
            nodes.append("tag")
            continue
        if version != 2:
            raise ValueError(f"dlib network: unexpected add_layer version {version}")
        layer = r.layer()
        layer.state = {"setup_called": r.bool(), "gradient_input_is_stale": r.bool(), "output_disabled": r.bool(),
                       "x_grad": r.tensor(), "cached_output": r.tensor(), "params_grad": r.tensor()}
        nodes.append(layer)
    if r.pos != len(r.data):
        raise ValueError(f"dlib network: {len(r.data) - r.pos} bytes left after the last layer")
    return DlibNetwork(loss=loss, input=input_layer, nodes=nodes, first_version=versions[-1])


def write_dlib_dat(net: DlibNetwork) -> bytes:
    """Serialise a :class:`DlibNetwork` exactly as dlib does (inverse of :func:`read_dlib_dat`).

    Source: dlib's serialisation code (module docstring).
    Convention: ``write_dlib_dat(read_dlib_dat(b)) == b`` for the files this module reads.
    Shapes: none (returns bytes).
    Raises:
        ValueError: a layer name without a schema, or a tensor that is not 4-d.
    """
    w = _Writer()
    w.int(1)
    w.layer(net.loss)
    versions = [1 if node == "tag" else 2 for node in reversed(net.nodes[1:])] + [net.first_version]
    for version in versions:
        w.int(version)
    w.layer(net.input)
    for i, node in enumerate(net.nodes):
        if node == "tag":
            continue
        w.layer(node)
        s = node.state
        w.bool(s.get("setup_called", True))
        w.bool(s.get("gradient_input_is_stale", True))
        w.bool(s.get("output_disabled", False))
        w.tensor(s.get("x_grad", _EMPTY))
        w.tensor(s.get("cached_output", _EMPTY))
        w.tensor(s.get("grad_final" if i == 0 else "params_grad", _EMPTY))
        if i == 0 and net.first_version >= 3:
            w.int(s.get("sample_expansion_factor", 1))
    return b"".join(w.parts)


def _layers(net: DlibNetwork, prefix: str) -> list[DlibLayer]:
    return [n for n in net.nodes if n != "tag" and n.name.startswith(prefix)]


def dlib_resnet_state_dict(net: DlibNetwork) -> dict:
    """The PyTorch ``state_dict`` of :class:`~adjointlib.faces.dlib_resnet.DlibResNet` from the dlib network.

    Source: ``../shared/models/dlib_resnet/README.md``, "Loading" (keys ``convs.i.weight/bias``,
    ``g_i``, ``b_i``, ``fc``, ``mean``) and dlib's parameter layouts: a ``con_`` layer's ``params``
    holds the filters (num_filters, k, nr, nc) then the biases; an ``affine_`` layer's holds gamma
    then beta; ``fc_`` (no bias) holds the (num_inputs, num_outputs) weights applied as ``x @ W``.
    Convention: convolutions, affine layers and the fc layer are taken in forward order; the
    input mean comes from ``input_rgb_image_sized`` (RGB). Values are copied bit for bit.
    Shapes: returns {name: float32 torch tensor} with 118 entries for the face ResNet.
    Raises:
        ValueError: the network does not have the face ResNet's 29 convolutions, 29 affine layers
            and one bias-free fc layer.
    """
    import torch

    convs, affines, fcs = _layers(net, "con_"), _layers(net, "affine_"), _layers(net, "fc_")
    if len(convs) != 29 or len(affines) != 29 or len(fcs) != 1:
        raise ValueError(f"not the dlib face ResNet: {len(convs)} convolutions, {len(affines)} affine "
                         f"and {len(fcs)} fc layers (expected 29, 29, 1)")
    out: dict[str, torch.Tensor] = {}
    for i, (conv, affine) in enumerate(zip(convs, affines)):
        params = conv.fields["params"].reshape(-1)
        shape = conv.fields["filters"]
        n = int(np.prod(shape))
        out[f"convs.{i}.weight"] = torch.from_numpy(params[:n].reshape(shape).copy())
        out[f"convs.{i}.bias"] = torch.from_numpy(params[n:n + shape[0]].copy())
        c = affine.fields["gamma"][1]
        gb = affine.fields["params"].reshape(-1)
        out[f"g{i}"], out[f"b{i}"] = torch.from_numpy(gb[:c].copy()), torch.from_numpy(gb[c:2 * c].copy())
    fc = fcs[0]
    if fc.fields["bias_mode"] != 1:  # FC_NO_BIAS
        raise ValueError("not the dlib face ResNet: its fc layer has a bias")
    n_in, n_out = fc.fields["num_inputs"], fc.fields["num_outputs"]
    out["fc"] = torch.from_numpy(fc.fields["params"].reshape(-1)[:n_in * n_out].reshape(n_in, n_out).copy())
    f = net.input.fields
    out["mean"] = torch.tensor([f["avg_red"], f["avg_green"], f["avg_blue"]], dtype=torch.float32).view(1, 3, 1, 1)
    return out


def _t(x) -> np.ndarray:
    """A torch tensor or array as a flat float32 numpy vector."""
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32).reshape(-1)


def dlib_resnet_network(state_dict: dict, margin: float = 0.04, dist_thresh: float = 0.6) -> DlibNetwork:
    """dlib's network object for the face ResNet, filled with the weights of a PyTorch ``state_dict``.

    Source: the network type ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``
    (``loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<...alevel4<max_pool<3,3,2,2,
    relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>``, residual blocks
    ``relu<add_prev1<affine<con<relu<affine<con<tag1<...>>>>>>>>`` and downsampling blocks
    ``relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<affine<con<relu<affine<con<2,2,tag1<...>>>>>>>>>>>``)
    and the README's key names; the state flags are those a trained dlib network carries after
    ``clean()`` (an affine or add_prev layer below a ReLU runs with its output disabled, since the
    ReLU works in place).
    Convention: the inverse of :func:`dlib_resnet_state_dict`; ``write_dlib_dat`` of the result for
    the converted weights of ``../shared`` reproduces the published ``.dat`` byte for byte.
    Shapes: state_dict as :class:`~adjointlib.faces.dlib_resnet.DlibResNet` (118 tensors).
    """
    ones, zero = 1.0, 0.0
    mult = {"learning_rate_multiplier": ones, "weight_decay_multiplier": ones,
            "bias_learning_rate_multiplier": ones, "bias_weight_decay_multiplier": zero}

    def con(i: int, stride: int) -> DlibLayer:
        w, b = state_dict[f"convs.{i}.weight"], state_dict[f"convs.{i}.bias"]
        nf, k, nr, nc = tuple(w.shape)
        pad = nr // 2 if stride == 1 else 0
        params = np.concatenate([_t(w), _t(b)]).reshape(-1, 1, 1, 1)
        return DlibLayer("con_4", {"params": params, "num_filters": nf, "nr": nr, "nc": nc, "stride_y": stride,
                                   "stride_x": stride, "padding_y": pad, "padding_x": pad,
                                   "filters": (nf, k, nr, nc), "biases": (1, nf, 1, 1), **mult})

    def affine(i: int) -> DlibLayer:
        g, b = _t(state_dict[f"g{i}"]), _t(state_dict[f"b{i}"])
        return DlibLayer("affine_", {"params": np.concatenate([g, b]).reshape(-1, 1, 1, 1),
                                     "gamma": (1, g.size, 1, 1), "beta": (1, g.size, 1, 1), "mode": 0})

    def simple(name: str, **fields) -> DlibLayer:
        return DlibLayer(name, fields)

    def pool(name: str, size: int, stride: int) -> DlibLayer:
        return simple(name, nr=size, nc=size, stride_y=stride, stride_x=stride, padding_y=0, padding_x=0)

    nodes: list = [con(0, 2), affine(0), simple("relu_"), pool("max_pool_2", 3, 2)]
    i = 1
    for n_blocks, _, first_stride in ((3, 32, 1), (4, 64, 2), (3, 128, 2), (3, 256, 2), (1, 256, 2)):
        for block in range(n_blocks):
            stride = first_stride if block == 0 else 1
            nodes += ["tag", con(i, stride), affine(i), simple("relu_"), con(i + 1, 1), affine(i + 1)]
            if stride == 2:
                nodes += ["tag", "tag", pool("avg_pool_2", 2, 2)]
            nodes += [simple("add_prev_"), simple("relu_")]
            i += 2
    fc = _t(state_dict["fc"])
    n_in, n_out = tuple(state_dict["fc"].shape)
    nodes += [pool("avg_pool_2", 0, 1),
              DlibLayer("fc_2", {"num_outputs": n_out, "num_inputs": n_in, "params": fc.reshape(n_in, n_out, 1, 1),
                                 "weights": (n_in, n_out, 1, 1), "biases": (0, 0, 0, 0), "bias_mode": 1, **mult})]
    for j, node in enumerate(nodes):
        if node == "tag":
            continue
        below_relu = j + 1 < len(nodes) and nodes[j + 1] != "tag" and nodes[j + 1].name == "relu_"
        node.state = {"output_disabled": node.name in ("affine_", "add_prev_") and below_relu}
    mean = _t(state_dict["mean"])
    input_layer = DlibLayer("input_rgb_image_sized", {"avg_red": float(mean[0]), "avg_green": float(mean[1]),
                                                      "avg_blue": float(mean[2]), "nr": 150, "nc": 150})
    loss = DlibLayer("loss_metric_2", {"margin": float(np.float32(margin)), "dist_thresh": float(np.float32(dist_thresh))})
    return DlibNetwork(loss=loss, input=input_layer, nodes=nodes, first_version=3)


def convert_dlib_resnet(dat: str | Path, out: str | Path) -> Path:
    """Convert ``dlib_face_recognition_resnet_model_v1.dat`` to the PyTorch file the loaders read.

    Source: this module (parse, map to :class:`~adjointlib.faces.dlib_resnet.DlibResNet`'s keys);
    ``../shared/models/dlib_resnet/README.md`` ("Loading": a zip ``state_dict`` of 118 float32 tensors).
    Convention: the ``state_dict`` is loaded strictly into ``DlibResNet`` and saved with
    ``torch.save`` under the archive name ``dlib_resnet_v1`` (as the shared copy was), written
    atomically to ``out``. Returns ``out``.
    Shapes: none.
    Raises:
        ValueError: ``dat`` is not the dlib face ResNet (see :func:`read_dlib_dat`).
    """
    import tempfile

    import torch

    from .dlib_resnet import DlibResNet

    net = DlibResNet()
    net.load_state_dict(dlib_resnet_state_dict(read_dlib_dat(dat)), strict=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / "dlib_resnet_v1.pth"  # torch.save names the archive after the file
        torch.save(net.state_dict(), staged)
        staged.replace(out)
    return out
