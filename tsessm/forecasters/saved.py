"""SavedModel: what every tsessm model shares, the panel included -- its class registered by name
for model files, changes that happen whole or not at all, and `save` / `load` (`tsessm.persist`)."""
from __future__ import annotations

import os
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from tsessm import persist

# The classes a model file may name, registered as they are defined: tsessm's own forecasters (and
# the panel) by name, a user's subclasses by "module.QualName" so they never shadow tsessm's. Loading
# only looks a name up here: it never imports a module or builds a class that a file names.
MODEL_CLASSES: dict[str, type] = {}


def model_class_key(cls: type) -> str:
    """The name a model file records for `cls`."""
    return cls.__name__ if cls.__module__.startswith("tsessm.") else f"{cls.__module__}.{cls.__qualname__}"


class SavedModel(BaseEstimator):
    """What every tsessm model shares, the panel included: its class registered for model files,
    changes that happen whole or not at all, and `save` / `load` through `tsessm.persist`.

    Subclasses provide `_document()` (the fitted model as a model-file document) and
    `_from_document(document, **overrides)`.
    """

    _READS_ANY_MODEL = True  # SavedModel.load reads any model file (so does BaseForecaster.load)
    _TAKES_OVERRIDES = False  # whether `load(path, **overrides)` may replace saved parameters

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MODEL_CLASSES[model_class_key(cls)] = cls

    def _snapshot(self) -> dict:
        """The attributes to restore if a change fails (a shallow copy: subclasses that change
        attributes in place copy those too)."""
        return dict(self.__dict__)

    def _transaction(self, work, *args) -> Any:
        """Run `work` and return what it returns; if it raises, restore every attribute so the
        model is unchanged."""
        saved = self._snapshot()
        try:
            return work(*args)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _document(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _from_document(cls, document: dict, **overrides: Any) -> "SavedModel":
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to one file, atomically: JSON and numpy arrays, no code
        (`tsessm.persist`), so loading it can run nothing."""
        check_is_fitted(self)
        persist.write(path, self._document())

    @classmethod
    def load(cls, path: str | os.PathLike, *, allow_pickle: bool = False, **overrides: Any) -> "SavedModel":
        """Read a model written by `save`. `overrides` replace saved parameters (e.g. device).

        `BaseForecaster.load` reads any tsessm model file (a panel included); a model class's
        `load` only its own class. A damaged or foreign file raises `persist.ModelFileError` (a
        ValueError) naming it. allow_pickle=True also reads the pickles of tsessm 0.2 and older:
        a pickle runs whatever code it holds while it loads, so pass it only for files you trust.
        """
        any_class = cls.__dict__.get("_READS_ANY_MODEL", False)
        unknown = [] if any_class else sorted(set(overrides) - set(cls._get_param_names()))
        if unknown:
            raise TypeError(f"load() got parameters {cls.__name__} does not have: {unknown}")
        document = persist.read(path, allow_pickle=allow_pickle)
        name = document.get("class")
        target = MODEL_CLASSES.get(name) if isinstance(name, str) else None
        if target is None:
            raise persist.ModelFileError(f"{path}: not a tsessm model file (unknown model class {name!r})")
        if not any_class and target is not cls:
            raise TypeError(f"{path} holds a {name}, not a {cls.__name__}")
        if overrides and not target._TAKES_OVERRIDES:
            raise TypeError(f"{path} holds a {name}, which takes no parameter overrides ({sorted(overrides)})")
        try:
            return target._from_document(document, **overrides)
        except (KeyError, TypeError, AttributeError, IndexError, RuntimeError, MemoryError) as exc:
            # well-formed but wrong content, e.g. a weight of another shape (load_state_dict's RuntimeError)
            raise persist.ModelFileError(f"{path}: not a tsessm model file (damaged {name}: {exc!r})") from None
