"""The heads trained on cached transfer values, behind one small interface.

Every classifier is created by name (``make_classifier("knn", {"n_neighbors": 3})``), fitted with
``fit(X, y, X_val=None, y_val=None, n_classes=None)``, and answers ``predict_proba(X)`` with one column per
class index ``0 .. n_classes-1`` (classes absent from the training rows get probability 0), ``predict(X)``,
``save(folder)`` and ``Classifier.load(folder)`` (or ``load_classifier(folder)``). ``params`` holds the
effective hyper-parameters. They are scikit-learn estimators too (``get_params``/``set_params``), so
``GridSearchCV`` can search them.

Hyper-parameters arrive as ``key=value`` strings from the command line: ``parse_params`` converts them to the
types each classifier declares, checks them against the declared ranges (``Interval``) and choices, and rejects
names it does not accept; the error messages are made from those declarations. ``get_params()`` reports every
declared parameter (the defaults, overridden by the values given).

Storage: Keras heads are saved as ``head.keras``. scikit-learn heads are saved with joblib as ``head.joblib``,
which is a **pickle**: loading one can run arbitrary code, so only load files you trust. This module keeps a
list of the sha256 digests of every joblib head written on this machine and prints a one-line warning when
loading one that is not on it. The linear heads (``logreg``, ``linear_svm``) also write ``head.npz``
(``coef_``, ``intercept_``, ``classes_``, the scaler and the folded weights) and are loaded from it alone, so
they never need unpickling.

Modules: ``base`` (the interface), ``registry`` (names, ``--param`` parsing), ``sklearn_heads`` and
``keras_heads`` (the heads), ``_params`` (hyper-parameter kinds and ranges), ``_pickles`` (the joblib trust list).
"""

from .._plugins import import_submodules  # noqa: E402
from ._params import Param  # noqa: F401
from ._pickles import dump_pickle, is_trusted_pickle, load_pickle, register_trusted_pickle  # noqa: F401
from .base import Classifier  # noqa: F401
from .registry import (  # noqa: F401
    CLASSIFIERS,
    available,
    classifier_help,
    load_classifier,
    make_classifier,
    parse_grid,
    parse_params,
    register,
)

import_submodules(__name__, __path__)  # every heads module registers its heads: adding one is adding a file

__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "available",
    "classifier_help",
    "load_classifier",
    "make_classifier",
    "parse_grid",
    "parse_params",
    "register",
]
