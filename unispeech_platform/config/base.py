"""Loading typed job configs: YAML file + ``--set dotted.key=value`` overrides (+ typed values by dotted key)
-> a validated pydantic model; ``with_overrides`` sets typed values on a loaded one.

Everything here runs on the driver before Ray starts, so a typo fails in milliseconds with the bad key and the
valid ones named, not after a cluster has been scheduled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from unispeech_platform.config.presets import preset_name, preset_names, resolve_config_path
from unispeech_platform.config.redact import redact_config

T = TypeVar("T", bound=BaseModel)


STRICT_NUMBERS = ConfigDict(allow_inf_nan=False)
"""No float field takes nan or inf: torch and numpy reject them later, far from the key that set them."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated, floats are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              **STRICT_NUMBERS)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content (safe: no tags executed; duplicate keys refused); ``path`` may name a shipped preset
    (config/presets.py). ConfigError naming the file for a missing, unreadable, binary or malformed one."""
    given, path = path, resolve_config_path(path)
    try:
        if not (path.is_file() or path.is_dir() or not path.exists()):  # a FIFO or device would block or never end
            raise ConfigError(f"{path}: not a regular file: give a YAML config file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        names = preset_name(given) and ", ".join(preset_names())
        raise ConfigError(f"config file not found: {given}" + (f" (shipped presets: {names})" if names else "")) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8): give a YAML config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key and the valid ones."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.max_steps=20"`` -> (["train", "max_steps"], 20); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def _set_key(raw: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    """Set one dotted key in a nested dict (creating intermediate dicts)."""
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` text (the command line's --set) in a nested dict."""
    for item in overrides:
        path, value = parse_override(item)
        _set_key(raw, path, value, item)
    return raw


def apply_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set typed values by dotted key in a nested dict, never through text. Nested dicts are flattened first so
    that they set keys inside a section: ``{"model": {"replace_prob": 0.3}}`` passed whole would replace the
    preset's model section and silently fall back to defaults."""
    for key, value in flatten(values).items():
        plain = value.item() if hasattr(value, "item") else value  # numpy scalars, e.g. from Tune's samplers
        _set_key(raw, key.split("."), plain, f"{key}={plain!r}")
    return raw


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (for listing valid keys)."""
    model: Any = cls
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return model
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return model
    return model


def format_errors(cls: type[BaseModel], err: ValidationError) -> str:
    """Every problem pydantic found, on one line (the house rule for a refusal: one line naming the key; several
    problems are joined with "; " so the line stays one)."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            owner = _model_at(cls, loc[:-1])
            valid = ", ".join(sorted(owner.model_fields)) if owner is not None else "?"
            lines.append(f"{key}: unknown key (valid keys here: {valid})")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid {cls.__name__}: " + "; ".join(lines)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> T:
    """Read YAML (optional), apply the ``--set`` text overrides, then the typed ``values`` by dotted key (a sweep's
    or an experiment's settings, see apply_values), validate. Raises ConfigError with a readable message."""
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        raw = loaded or {}
    raw = apply_values(apply_overrides(raw, list(overrides or [])), dict(values or {}))
    return _validated(cls, raw)


def with_overrides(cfg: T, values: dict[str, Any]) -> T:
    """``cfg`` with typed values set by dotted key (``{"model.replace_prob": 0.3}``), validated again: a bad key
    or value raises ConfigError naming it, as in a config file."""
    return _validated(type(cfg), apply_values(cfg.model_dump(mode="json"), values))


def _validated(cls: type[T], raw: dict[str, Any]) -> T:
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(cls, e)) from None


def to_yaml(cfg: BaseModel) -> str:
    """The fully resolved config (defaults included) as YAML, secrets redacted (config/redact.py): logged as an
    artifact, reloadable."""
    return yaml.safe_dump(redact_config(cfg.model_dump(mode="json")), sort_keys=False, allow_unicode=True)


def loggable_params(cfg: BaseModel) -> dict[str, Any]:
    """The resolved config as flat MLflow params, secrets redacted."""
    return flatten(redact_config(cfg.model_dump(mode="json")))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values), e.g. for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def yaml_value(v: Any) -> str:
    """One-line YAML of a value that reads back with its type (``1e-09`` would read back as a string)."""
    v = v.item() if hasattr(v, "item") else v  # numpy scalars, e.g. from Tune's samplers
    text = yaml.safe_dump(v, default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("...").strip()


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{"model": {"replace_prob": 0.3}, "train.max_steps": 9}`` -> ``["model.replace_prob=0.3",
    "train.max_steps=9"]``: the ``--set`` lines of a command that reproduces typed values (code applies them with
    ``load_config(values=...)`` / ``with_overrides``, never through text). Nested dicts are flattened as there."""
    return [f"{k}={yaml_value(v)}" for k, v in flatten(values).items()]
