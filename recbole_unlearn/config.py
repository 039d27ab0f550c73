"""Configuration: RecBole's ``Config`` with the plugin's property files layered in.

Priority, lowest first (DESIGN.md section 3): RecBole's internal files, then
``properties/overall.yaml``, ``properties/model/<Model>.yaml``,
``properties/unlearner/<Unlearner>.yaml``, ``dataset_configs/<dataset>.yaml``; then the user's
``config_file_list``, ``config_dict`` and ``--key=value`` on the command line.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import get_model as recbole_get_model

from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.model import MODELS, get_model_class
from recbole_unlearn.unlearner import get_unlearner

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


class Config(RecBoleConfig):
    """RecBole ``Config`` that knows the plugin's models, unlearners and property files.

    ``config['unlearner']`` always holds the registered class name (e.g. ``AltEraser``).
    """

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise UnlearnInputError("no model given (use --model=ENMF or --model=LightGCN)")
        if isinstance(model, str):
            model_class = get_model_class(model)
            if model_class is None:
                try:
                    model_class = recbole_get_model(model)
                except (ValueError, ImportError):  # RecBole's lookup imports optional libraries
                    raise UnlearnInputError(
                        f"unknown model {model!r}; the plugin's models: "
                        + ", ".join(c.__name__ for c in MODELS.values())
                    ) from None
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
        with open(resource_dir("properties") / "overall.yaml", encoding="utf-8") as f:
            defaults = yaml.load(f.read(), Loader=self.yaml_loader) or {}
        name = self.external_config_dict.get("unlearner", defaults.get("unlearner"))
        unlearner = get_unlearner(name).__name__
        for path in plugin_property_files(model, unlearner, dataset):
            loaded = self._update_internal_config_dict(str(path))
            if path.parent.name == "dataset_configs" and loaded:
                self.parameters["Dataset"] += [
                    k for k in loaded if k not in self.parameters["Dataset"]
                ]
        self.internal_config_dict["unlearner"] = unlearner
        if "unlearner" in self.external_config_dict:
            self.external_config_dict["unlearner"] = unlearner


def config_with(config: RecBoleConfig, **overrides) -> RecBoleConfig:
    """A copy of ``config`` with some keys changed; ``config`` itself is left as it is."""
    clone = copy.copy(config)
    clone.final_config_dict = dict(config.final_config_dict)
    for key, value in overrides.items():
        clone[key] = value
    return clone
