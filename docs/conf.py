"""Sphinx configuration for the skelias documentation (built in CI with ``-W``: warnings are errors)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import skelias

project = "skelias"
author = "the skelias developers"
copyright = "2026, the skelias developers"
release = version = skelias.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "results/*.md", "results/**/*.md"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# no network at build time: intersphinx inventories are not fetched
intersphinx_mapping = {}

html_theme = "pydata_sphinx_theme"
html_title = f"skelias {release}"
html_theme_options = {"navigation_depth": 2, "show_toc_level": 2}


def _skip_metadata_routing(app, what, name, obj, skip, options):
    """scikit-learn generates ``set_*_request`` methods whose docstrings cite sklearn's own glossary."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_routing)
