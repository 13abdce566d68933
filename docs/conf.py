"""Sphinx configuration of the pymc-dilation documentation.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Set ``PYMC_DILATION_FAST=1`` for the small tutorial runs CI uses. The tutorials are the
jupytext percent scripts of ``examples/``: they are copied into ``docs/tutorials/`` when the
build starts and executed by MyST-NB (``PYMC_DILATION_DOCS_EXECUTE=off`` skips execution while
editing prose).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pymc_dilation  # noqa: E402

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def _copy_tutorials() -> None:
    """Copy ``examples/*.py`` next to the docs sources; only changed files are rewritten."""
    target = DOCS / "tutorials"
    target.mkdir(exist_ok=True)
    wanted = {p.name: p for p in sorted((ROOT / "examples").glob("*.py"))}
    for stale in target.glob("*.py"):
        if stale.name not in wanted:
            stale.unlink()
    for name, source in wanted.items():
        dest = target / name
        if not dest.exists() or dest.read_bytes() != source.read_bytes():
            shutil.copyfile(source, dest)


_copy_tutorials()

project = "pymc-dilation"
author = "pymc-dilation contributors"
copyright = "2026, pymc-dilation contributors"
release = pymc_dilation.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build", "conf.py", "**.ipynb_checkpoints", "jupyter_execute"]
source_suffix = {".md": "myst-nb", ".py": "myst-nb"}

# MyST / MyST-NB
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = os.environ.get("PYMC_DILATION_DOCS_EXECUTE", "force")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# autodoc / numpydoc
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# HTML
html_theme = "pydata_sphinx_theme"
html_title = f"pymc-dilation {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """Show ``__init__``'s parameters for classes whose ``__new__`` takes ``*args, **kwargs``.

    PyMC's step methods define such a ``__new__``, which autodoc would otherwise display.
    """
    import inspect

    if what == "class" and signature == "(*args, **kwargs)" and "__init__" in vars(obj):
        sig = inspect.signature(obj.__init__)
        params = [  # drop self and the annotations (autodoc_typehints = "none")
            p.replace(annotation=inspect.Parameter.empty) for p in list(sig.parameters.values())[1:]
        ]
        sig = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
        return str(sig), return_annotation
    return None


def setup(app):
    app.connect("autodoc-process-signature", _init_signature)
