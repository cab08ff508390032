"""Quantization is a config in, a model out.

A scheme is a frozen, versioned config dataclass bound to its transform by `register(ConfigCls)`;
`quantize` dispatches on the config's type. Every module of this package is imported once, the
first time a scheme is needed, so a new scheme adds a file that registers itself and edits no list
(a module that registers nothing is a helper). Each precision of `targets.precisions.PRECISIONS`
has exactly one default scheme. The config is recorded in the manifest by `to_dict()` and read
back, from there or from a TOML file, by `QuantConfig.from_dict` / `from_toml`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import pkgutil
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx

from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.models.spec import ExportSpec
from geofractal_edge.targets.precisions import PRECISIONS


@dataclass(frozen=True)
class QuantContext:
    """What a transform may read besides the float model: the spec, calibration inputs, and the
    target's weight dialect (`TargetProfile.weight_dialect`: "ort" or "qdq", see export/lowbit.py)."""

    spec: ExportSpec
    calibration: tuple[Mapping[str, np.ndarray], ...] = ()
    dialect: str = "qdq"


@dataclass(frozen=True)
class QuantConfig:
    """Base of every scheme's config. A subclass sets `precision` (and bumps `version` when the
    meaning of its fields changes); its fields are the scheme's settings, all with defaults."""

    precision: ClassVar[str]
    version: ClassVar[int] = 1

    def to_dict(self) -> dict:
        return {"scheme": type(self).__name__, "precision": self.precision, "version": self.version, **dataclasses.asdict(self)}

    @property
    def tile_level(self) -> int:
        """MatMulNBits accuracy_level of a model's ternary tile products (export/ternary.py): the int8 and int4 schemes'
        `tile_accuracy_level`; 0 (float arithmetic) in a scheme without one."""
        return 0

    def for_target(self, profile) -> QuantConfig:
        """This config as it applies on `profile` (a `TargetProfile`): a scheme whose settings may
        defer to the target (int8's `activations = "target"`) resolves them here, before export, so
        that the manifest records what was done. Default: unchanged."""
        return self

    @classmethod
    def from_dict(cls, data: Mapping) -> QuantConfig:
        """Build a registered scheme's config from {"scheme": ClassName, field: value, ...}.

        `precision` and `version` may be present (as `to_dict` writes them) and must match the scheme.
        Called on a scheme class, `scheme` may be left out.
        """
        data = dict(data)
        scheme = _scheme_class(data.pop("scheme", None if cls is QuantConfig else cls.__name__))
        if cls is not QuantConfig and scheme is not cls:
            raise GfedgeError(f"quantization config names scheme {scheme.__name__}, expected {cls.__name__}", f"set scheme = \"{cls.__name__}\"")
        _check_fixed(scheme, data)
        return scheme(**_checked_fields(scheme, data))

    @classmethod
    def from_toml(cls, path: str | Path) -> QuantConfig:
        """`from_dict` of a TOML file, e.g. `scheme = "Int8Config"` and `per_channel = false`."""
        path = Path(path)
        if not path.is_file():
            raise GfedgeError(f"quantization config {path} does not exist", 'pass a TOML file such as: scheme = "Int8Config"')
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GfedgeError(f"quantization config {path} is not valid TOML ({exc})", "fix the file") from exc
        return cls.from_dict(data)

    def for_spec(self, spec: ExportSpec) -> QuantConfig:
        """This config as it applies to a family: a setting a scheme leaves to the family's `ExportSpec`
        (int4's `int8_upstream_of = None`) resolves here, before export, so that the manifest records
        what was done. Default: unchanged."""
        return self


# MatMulNBits accuracy_level for ternary tiles' 2-bit products on "ort" targets (`tile_accuracy_level` of the int8 and
# int4 configs; export/ternary.py): 0 float arithmetic, the tiles 2-bit in the session; 4 int8 activations.
TILE_ACCURACY_LEVELS = (0, 4)
TILE_LEVEL_FIX = "use 0 (float arithmetic, tiles 2-bit in memory) or 4 (int8 activations: faster, ~2.7x the tiles' memory)"


def checked_tile_level(scheme: str, level) -> None:
    if type(level) is not int or level not in TILE_ACCURACY_LEVELS:  # 4.0 would reach the graph as a float attribute
        raise GfedgeError(f"{scheme} tile_accuracy_level {level!r} is not 0 or 4", TILE_LEVEL_FIX)


def tile_level_for_target(scheme: str, level: int, profile) -> None:
    """A tile accuracy level other than 0 asked of a target whose weight dialect has no MatMulNBits is refused."""
    if level and profile.weight_dialect != "ort":
        raise GfedgeError(f"{scheme} tile_accuracy_level {level} is an onnxruntime MatMulNBits setting; target {profile.name} builds "
                          f"TensorRT engines (weight_dialect {profile.weight_dialect!r})", "drop tile_accuracy_level for this target")


Transform = Callable[[onnx.ModelProto, QuantConfig, QuantContext], onnx.ModelProto]
_TRANSFORMS: dict[type[QuantConfig], Transform] = {}
_DEFAULTS: dict[str, type[QuantConfig]] = {}  # precision -> its default scheme


def register(config_cls: type[QuantConfig], *, default: bool = True) -> Callable[[Transform], Transform]:
    """Bind a transform to `config_cls`; `default`: it is the scheme `default_config(precision)` gives."""

    def bind(transform: Transform) -> Transform:
        precision = getattr(config_cls, "precision", None)
        if not (dataclasses.is_dataclass(config_cls) and config_cls.__dataclass_params__.frozen):
            raise Bug(f"quantization scheme {config_cls.__name__} must be a frozen dataclass")
        if precision not in PRECISIONS:
            raise Bug(f"quantization scheme {config_cls.__name__} has precision {precision!r}, not one of {PRECISIONS}")
        if any(c.__name__ == config_cls.__name__ for c in _TRANSFORMS):
            raise Bug(f"two quantization schemes are named {config_cls.__name__}")
        if default and precision in _DEFAULTS:
            raise Bug(f"{_DEFAULTS[precision].__name__} and {config_cls.__name__} are both the default {precision} scheme")
        _TRANSFORMS[config_cls] = transform
        if default:
            _DEFAULTS[precision] = config_cls
        return transform

    return bind


def schemes() -> dict[str, type[QuantConfig]]:
    """Every registered config class by name."""
    _load_schemes()
    return {c.__name__: c for c in _TRANSFORMS}


def precisions() -> tuple[str, ...]:
    """The precisions that have a default scheme, in PRECISIONS order."""
    _load_schemes()
    return tuple(p for p in PRECISIONS if p in _DEFAULTS)


def default_config(precision: str) -> QuantConfig:
    _load_schemes()
    if precision not in PRECISIONS:
        raise GfedgeError(f"precision '{precision}' cannot be exported", f"use one of {', '.join(PRECISIONS)}")
    if precision not in _DEFAULTS:
        raise Bug(f"precision {precision} has no default quantization scheme")
    return _DEFAULTS[precision]()


def quantize(model: onnx.ModelProto, config: QuantConfig, context: QuantContext) -> onnx.ModelProto:
    """The model in `config`'s scheme.

    Not run through onnx's full checker: the export checks once, the graph the bundle holds (after
    `export.ternary.lower_ternary` on a spec with ternary tensors); a caller that keeps this graph
    runs `export.passes.check_full` itself.
    """
    _load_schemes()
    from geofractal_edge.export.quiet import quiet

    transform = _TRANSFORMS.get(type(config))
    if transform is None:
        raise Bug(f"{type(config).__name__} is not a registered quantization scheme")
    with quiet():
        return transform(model, config, context)


@functools.cache
def _load_schemes() -> None:
    """Import every module of this package once; each scheme module registers itself on import."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__package__}.{module.name}")


def _scheme_class(name) -> type[QuantConfig]:
    known = schemes()
    if isinstance(name, str) and name in known:
        return known[name]
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    problem = "quantization config has no scheme" if name is None else f"unknown quantization scheme {name!r}"
    raise GfedgeError(problem, f"{hint}set scheme to one of {', '.join(sorted(known))}")


def _check_fixed(scheme: type[QuantConfig], data: dict) -> None:
    """`precision` and `version` belong to the scheme; a mapping may repeat them, not change them."""
    fixes = {"precision": "drop precision, or name a scheme of that precision", "version": f"drop version, or write the fields of version {scheme.version}"}
    for key, fix in fixes.items():
        if key in data and (value := data.pop(key)) != getattr(scheme, key):
            raise GfedgeError(f"quantization config says {key} = {value!r}, scheme {scheme.__name__} has {getattr(scheme, key)!r}", fix)


def _checked_fields(scheme: type[QuantConfig], data: dict) -> dict:
    hints = typing.get_type_hints(scheme)
    fields = {f.name: _unless_none(hints[f.name]) for f in dataclasses.fields(scheme)}
    optional = {f.name for f in dataclasses.fields(scheme) if type(None) in typing.get_args(hints[f.name])}
    allowed = ", ".join(f"{n} ({getattr(t, '__name__', t)})" for n, t in fields.items()) or "none"
    for name, value in data.items():
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise GfedgeError(f"quantization scheme {scheme.__name__} has no field {name!r}", f"{hint}allowed fields: {allowed}")
        if not (value is None and name in optional) and not _is_a(value, fields[name]):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise GfedgeError(f"quantization field {name!r} of {scheme.__name__} must be {fields[name].__name__}, got {type(value).__name__} {shown}",
                              f"allowed fields: {allowed}")
    return data


def _unless_none(hint):
    """`int | None` -> int: a field left None resolves later (`for_spec`); a value given must be the type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(hint) else hint


def _is_a(value, hint) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True
