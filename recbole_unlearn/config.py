"""Configuration: RecBole's ``Config`` with the plugin's property files layered in.

Priority, lowest first: RecBole's internal files, then
``properties/overall.yaml``, ``properties/model/<Model>.yaml``,
``properties/unlearner/<Unlearner>.yaml``, ``dataset_configs/<dataset>.yaml``; then the user's
``config_file_list``, ``config_dict`` and ``--key=value`` on the command line.
"""
from __future__ import annotations

import copy
import functools
import logging
import re
import sys
from pathlib import Path

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import argument_list

from recbole_unlearn._compat import configured_device
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.model import MODELS, get_model_class
from recbole_unlearn.options import KeySpec, convert, read_specs, shown, unknown_key_error, yaml_keys
from recbole_unlearn.registry import registered_keys, unlearner_names

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Folder of shipped YAML files: ``properties`` or ``dataset_configs``.

    Installed copies keep them inside the package; a source checkout keeps them at the
    repository's top level (where users copy them from).
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"recbole_unlearn: cannot find its {name}/ folder")


def plugin_property_files(model: str, unlearner: str, dataset: str) -> list[Path]:
    """The plugin's YAML files for this run, lowest priority first (missing ones skipped)."""
    props = resource_dir("properties")
    files = [
        props / "overall.yaml",
        props / "model" / f"{model}.yaml",
        props / "unlearner" / f"{unlearner}.yaml",
        resource_dir("dataset_configs") / f"{dataset}.yaml",
    ]
    return [f for f in files if f.is_file()]


@functools.lru_cache(maxsize=None)
def plugin_specs() -> dict[str, KeySpec]:
    """Every documented key of the shipped property files (overall, models, unlearners)."""
    props = resource_dir("properties")
    specs: dict[str, KeySpec] = {}
    for path in [props / "overall.yaml", *sorted(props.glob("model/*.yaml")), *sorted(props.glob("unlearner/*.yaml"))]:
        specs.update({k: v for k, v in read_specs(path).items() if k not in specs})
    return specs


@functools.lru_cache(maxsize=None)
def recbole_keys() -> frozenset[str]:
    """Keys RecBole itself reads: its argument lists and every key of its property files."""
    root = Path(argument_list.__file__).resolve().parents[1] / "properties"
    keys = set()
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name))
    for path in root.rglob("*.yaml"):
        keys |= yaml_keys(path)
    return frozenset(keys)


def canonical_unlearner(name) -> str:
    """The registered spelling of an unlearner name (any case): the shipped methods are known
    by their property files, so configuration never imports them; a user's own unlearner is
    known once registered.  Unknown names list the known ones."""
    known = {p.stem.lower(): p.stem for p in resource_dir("properties").glob("unlearner/*.yaml")}
    known.update({n.lower(): n for n in unlearner_names()})
    try:
        return known[str(name).lower()]
    except KeyError:
        raise UnlearnInputError(
            f"unknown unlearner {shown(name, 80)}; registered unlearners: {', '.join(sorted(known.values()))}"
        ) from None


class _SafeLoader(yaml.SafeLoader):
    """YAML without object construction, with RecBole's float resolver (``1e-4`` is a float)."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)

#: keys the pipeline reads that are neither RecBole's nor documented in a YAML file
EXTRA_KEYS = frozenset({"model", "dataset", "config_files"})


class Config(RecBoleConfig):
    """RecBole ``Config`` that knows the plugin's models, unlearners and property files.

    ``config['unlearner']`` always holds the registered class name (e.g. ``AltEraser``).

    Input is data: strings from the command line or ``config_dict`` are read as YAML scalars,
    lists or mappings (never evaluated), YAML files with a safe loader; every key given must be
    known (RecBole's, the plugin's, a model's or an unlearner's), and documented keys are
    converted to their type once, here.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        from recbole_unlearn.evaluator import register_recbole_metrics

        register_recbole_metrics()  # idempotent: metrics: [RBO] is valid in every plugin Config
        super().__init__(model, dataset, config_file_list, config_dict)
        self.final_config_dict["device"] = configured_device(self.final_config_dict)

    def _build_yaml_loader(self):
        return _SafeLoader

    def _convert_config_dict(self, config_dict):
        raw = self.__dict__.setdefault("_raw_values", {})
        for key, param in list(config_dict.items()):
            if not isinstance(param, str):
                continue
            raw[key] = param
            try:
                value = yaml.load(param.strip(), Loader=_SafeLoader) if param.strip() else param
            except (yaml.YAMLError, ValueError):  # ValueError: an integer of more than 4300 digits
                value = param
            if value is not None and not isinstance(value, (str, int, float, list, dict, bool)):
                value = param  # dates and the like stay the string that was typed
            config_dict[key] = value
        return config_dict

    def _load_config_files(self, file_list):
        merged = {}
        for file in file_list or []:
            try:
                with open(file, encoding="utf-8") as f:
                    loaded = yaml.load(f.read(), Loader=_SafeLoader)
            except FileNotFoundError:
                raise UnlearnInputError(f"config file not found: {shown(str(file))}") from None
            except (OSError, UnicodeDecodeError) as e:
                raise UnlearnInputError(f"cannot read config file {shown(str(file))}: {type(e).__name__}") from None
            except yaml.YAMLError as e:
                raise UnlearnInputError(f"config file {shown(str(file))} is not valid YAML ({str(e).splitlines()[0]})") from None
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise UnlearnInputError(f"config file {shown(str(file))} must hold key: value lines")
            merged.update(loaded)
        return merged

    def _load_cmd_line(self):
        """``--key=value`` arguments of ``sys.argv`` (RecBole's convention), read as data; other
        arguments, and unknown keys (the host program's own flags), are ignored with a warning.
        The plugin's CLI passes its options as ``config_dict`` instead, where unknown keys are
        errors."""
        cmd = {}
        for arg in sys.argv[1:]:
            key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
            if key and sep:
                if cmd.get(key, value) != value:
                    raise UnlearnInputError(f"--{shown(key, 80)} given twice with different values")
                cmd[key] = value
        self._argv_keys = set(cmd)
        return self._convert_config_dict(cmd)

    def _check_external_keys(self) -> None:
        """Unknown keys are errors; documented keys are converted to their type."""
        specs = plugin_specs()
        known = set(specs) | recbole_keys() | set(self.internal_config_dict) | EXTRA_KEYS | registered_keys()
        raw = self.__dict__.get("_raw_values", {})
        from_argv_only = self.__dict__.get("_argv_keys", set()) - set(self.variable_config_dict) - set(self.file_config_dict)
        for key in list(self.external_config_dict):
            if key not in known and key in from_argv_only:
                logging.getLogger().warning("command line argument --%s is not a config key: ignored", shown(key, 80))
                del self.external_config_dict[key]
                continue
            if key not in known:
                raise unknown_key_error(key, known)
            spec = specs.get(key) or _recbole_spec(key, self.internal_config_dict.get(key))
            if spec is not None:
                self.external_config_dict[key] = convert(spec, self.external_config_dict[key], raw.get(key))
        ext = self.external_config_dict
        if "unlearner" in ext:
            ext["unlearner"] = self.internal_config_dict["unlearner"]
        if ext.get("forget_file") and str(ext.get("forget", "")).lower() != "file":
            raise UnlearnInputError("forget_file is only read with forget=file; add --forget=file")
        mode = str(ext.get("forget", self.internal_config_dict.get("forget", ""))).lower()
        for key, modes, instead in (("forget_users", ("users", "random"), "forget_fraction"),
                                    ("forget_fraction", ("private", "noise"), "forget_users")):
            if key in ext and mode in modes:
                logging.getLogger().warning("%s is not read with forget=%s, which takes %s: ignored", key, mode, instead)

    def _get_final_config_dict(self):
        self._check_external_keys()
        final = super()._get_final_config_dict()
        if "show_progress" not in self.external_config_dict:  # progress bars only on a terminal
            final["show_progress"] = sys.stderr.isatty()
        return final

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise UnlearnInputError("no model given (use --model=NAME; the plugin's models: "
                                        + ", ".join(c.__name__ for c in MODELS.values()) + ")")
        if isinstance(model, str):
            model_class = get_model_class(model)
            if model_class is None:
                raise UnlearnInputError(
                    f"unknown model {shown(model, 80)}; the plugin's models: "
                    + ", ".join(c.__name__ for c in MODELS.values())
                )
            model = model_class.__name__
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise UnlearnInputError("no dataset given (use --dataset=NAME)")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = resource_dir("properties")
        defaults = {}
        for path in (props / "overall.yaml", props / "model" / f"{model}.yaml"):  # a model's file names its default
            if path.is_file():
                with open(path, encoding="utf-8") as f:
                    defaults.update(yaml.load(f.read(), Loader=self.yaml_loader) or {})
        unlearner = canonical_unlearner(self.external_config_dict.get("unlearner", defaults.get("unlearner")))
        for path in plugin_property_files(model, unlearner, dataset):
            loaded = self._update_internal_config_dict(str(path))
            if path.parent.name == "dataset_configs" and loaded:
                self.parameters["Dataset"] += [
                    k for k in loaded if k not in self.parameters["Dataset"]
                ]
        self.internal_config_dict["unlearner"] = unlearner
        if "unlearner" in self.external_config_dict:
            self.external_config_dict["unlearner"] = unlearner


def _recbole_spec(key: str, default) -> KeySpec | None:
    """A type check for a RecBole key from the type of RecBole's default (bool, int, float)."""
    for kind, types in (("bool", bool), ("int", int), ("float", float)):
        if isinstance(default, types):
            return KeySpec(key, kind, str(default), "", "recbole")
    return None


def config_with(config: RecBoleConfig, **overrides) -> RecBoleConfig:
    """A copy of ``config`` with some keys changed; ``config`` itself is left as it is."""
    clone = copy.copy(config)
    clone.final_config_dict = dict(config.final_config_dict)
    for key, value in overrides.items():
        clone[key] = value
    return clone
