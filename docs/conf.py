"""Sphinx configuration: a user guide (the README and the tutorials, rendered with their stored
outputs by myst-nb) and an API reference generated from the docstrings.

The API pages (``docs/api/``, generated on every build, not committed) follow the package's
public names: each public module gets a page with its docstring and the names of its
``__all__`` that no enclosing package already exports, so every public object is documented
once, under its shortest import path.

References are checked (``nitpicky``; the test build turns warnings into errors). A name
resolves as Python would see it where the docstring or signature is (its class, its module,
the module that defines it), else as an absolute path, else as the one documented object whose
dotted name ends with it. A name that exists but has no page (torch, torchrl, tensordict, ...:
their inventories cannot be fetched offline; or a torchrl_hier helper outside the public API)
renders as code. A name that denotes nothing (a typo, a renamed or removed object) fails.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from sphinx import addnodes
from sphinx.ext import napoleon

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("RL_LOGGING_LEVEL", "WARNING")  # no TorchRL INFO lines while importing

import torchrl_hier  # noqa: E402

project = "torchrl_hier"
author = "torchrl_hier contributors"
copyright = "torchrl_hier contributors"
release = version = torchrl_hier.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"torchrl_hier {release}"

nb_execution_mode = "off"  # docs/tutorials/ holds the executed notebooks (docs/_tutorials.py)
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "dollarmath"]  # the tutorials write $\gamma^\tau$
highlight_language = "none"  # a code block without a language (the README's diagram) stays plain
suppress_warnings = ["myst.header"]  # the README starts its sections at ## under its title

autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # torch's and gymnasium's method docs are not ours to show
autodoc_default_options = {"undoc-members": True, "special-members": "__call__"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = True

#: The package whose API pages the build writes into ``api/`` (None: no API pages).
api_reference_package = "torchrl_hier"
SKIP = ("torchrl_hier.conf",)  # Hydra's YAML configs, documented in the user guide


# ----------------------------------------------------------------------------- API pages
def public_names(module: Any) -> list[str]:
    """A module's public names: its ``__all__``, else the classes and functions it defines."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == module.__name__
        ]
    return [name for name in names if not inspect.ismodule(getattr(module, name))]


def public_modules(package: str) -> list[str]:
    """The package and its modules whose dotted paths have no private (``_x``) part."""
    found = [package]
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        if any(p.startswith("_") for p in info.name.split(".")) or info.name.startswith(SKIP):
            continue
        found.append(info.name)
    return sorted(found)


def write_api_pages(package: str, out: Path) -> list[str]:
    """Writes one page per public module of ``package`` (its docstring and the public names
    that no enclosing package exports as the same object) and an index; returns the pages."""
    out.mkdir(exist_ok=True)
    for old in out.glob("*.rst"):
        old.unlink()
    pages = public_modules(package)
    for name in pages:
        module = importlib.import_module(name)
        parents = [importlib.import_module(".".join(name.split(".")[:i]))
                   for i in range(1, name.count(".") + 1)]
        own = [
            n for n in public_names(module)
            if not any(n in public_names(p) and getattr(p, n) is getattr(module, n)
                       for p in parents)
        ]
        lines = [name, "=" * len(name), "", f".. automodule:: {name}"]
        if own:
            lines.append(f"   :members: {', '.join(own)}")
        (out / f"{name}.rst").write_text("\n".join(lines) + "\n")
    toc = ["API reference", "=============", "",
           "Every public name, on the page of the shortest path it is imported from.", "",
           ".. toctree::", "   :maxdepth: 1", ""]
    (out / "index.rst").write_text("\n".join(toc + [f"   {p}" for p in pages]) + "\n")
    return pages


def _start_build(app) -> None:
    """Writes the API pages (if configured) and forgets the last build's documented objects."""
    _DOCUMENTED.clear()
    if app.config.api_reference_package:
        write_api_pages(app.config.api_reference_package, Path(app.srcdir) / "api")


# ----------------------------------------------------------------------------- references
def _import(path: str) -> Any:
    """The object at an absolute dotted path; raises LookupError if there is none."""
    names = path.split(".")
    for cut in range(len(names), 0, -1):
        try:
            obj = importlib.import_module(".".join(names[:cut]))
        except ImportError:
            continue
        try:
            for attr in names[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise LookupError(path)


def _scopes(node) -> list[str]:
    """Where a reference node's name is looked up, innermost first: the class and the module
    the docs show its docstring or signature under, and where that object is defined."""
    context = [p for p in (node.get("py:module"), node.get("py:class")) if p]
    scopes = [".".join(context[:i]) for i in range(len(context), 0, -1)]
    desc = node.parent
    while desc is not None and not isinstance(desc, addnodes.desc):
        desc = desc.parent
    signature = next(iter(desc.findall(addnodes.desc_signature)), None) if desc else None
    if signature is not None and signature.get("fullname"):
        try:
            obj = _import(f"{signature['module']}.{signature['fullname']}")
        except LookupError:
            return scopes
        home = _home(obj)
        if home:  # the defining class (for a method)
            scopes.append(home.rsplit(".", 1)[0])
        # the defining module; for a class, also those of the __init__/__new__ its signature
        # shows (a subclass of a TorchRL class may inherit TorchRL's constructor)
        defining = [obj, obj.__init__, obj.__new__] if inspect.isclass(obj) else [obj]
        scopes += [getattr(inspect.getmodule(f), "__name__", "") for f in defining]
    return [s for s in dict.fromkeys(scopes) if s]


def _lookup(path: str, scopes: list[str]) -> Any:
    """The object a dotted ``path`` names as Python would see it from the ``scopes`` (class or
    module paths), else as an absolute path or a builtin; raises LookupError if none has it."""
    for candidate in [*(f"{scope}.{path}" for scope in scopes), path, f"builtins.{path}"]:
        try:
            return _import(candidate)
        except LookupError:
            continue
    raise LookupError(path)


def _home(obj: Any) -> str | None:
    """Where an object is defined, as ``module.qualname`` (None for plain values)."""
    if inspect.ismodule(obj):
        return obj.__name__
    target = obj.fget if isinstance(obj, property) else obj
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


def _instance_attribute(scopes: list[str], name: str) -> bool:
    """Whether a class among ``scopes`` sets ``self.<name>`` or annotates ``name`` (attributes
    that exist on instances only, which no import can find)."""
    for scope in scopes:
        try:
            cls = _import(scope)
        except LookupError:
            continue
        if not inspect.isclass(cls):
            continue
        for base in inspect.getmro(cls):
            if name in getattr(base, "__annotations__", {}):
                return True
            try:
                source = inspect.getsource(base)
            except (OSError, TypeError):
                continue
            if re.search(rf"self\.{re.escape(name)}\s*[:=]", source):
                return True
    return False


#: an object's home -> (documented name, object type), built once per build
_DOCUMENTED: dict[str, tuple[str, str]] = {}


def _documented(env) -> dict[str, tuple[str, str]]:
    """The py objects the docs describe, by where they are defined (filled when the first
    reference is resolved, after every page was read)."""
    if not _DOCUMENTED:
        for name, entry in env.get_domain("py").objects.items():
            try:
                home = _home(_import(name))
            except LookupError:
                continue
            if home and not entry.aliased:
                _DOCUMENTED.setdefault(home, (name, entry.objtype))
    return _DOCUMENTED


def resolve_reference(app, env, node, contnode):
    """Resolves a Python reference that Sphinx could not: by the object the name denotes in
    the docstring's (or signature's) scope, wherever the docs show that object; else by the
    one documented object whose dotted name ends with it (``Hierarchy.transitions``)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    documented = _documented(env)
    try:
        found = documented.get(_home(_lookup(target, _scopes(node))))
    except LookupError:
        found = None
    if found is None:
        matches = {entry for home, entry in documented.items()
                   if entry[0].endswith(f".{target}")}
        found = matches.pop() if len(matches) == 1 else None
    if found is None:
        return None
    name, objtype = found
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, objtype, name, node, contnode)


def silence_existing(app, domain, node) -> bool | None:
    """No warning for a reference to something that exists but has no page to link to: an
    object of Python or another library (torch, torchrl, tensordict, ...: their inventories
    cannot be fetched offline), or a torchrl_hier helper outside the public API; it renders as
    code. A reference to nothing (a typo, a renamed or removed object) still warns."""
    if domain is None or domain.name != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    if target in ("None", "True", "False", "Ellipsis", "NotImplemented"):
        return True
    scopes = _scopes(node)
    try:
        _lookup(target, scopes)
    except LookupError:
        return True if _instance_attribute(scopes, target) else None
    return True


def napoleon_except_attributes(app, what, name, obj, options, lines) -> None:
    """Napoleon's Google-style parsing, except for attributes, properties and data: it reads
    their first ``text: more text`` as ``type: description``, and ours are plain prose."""
    if what not in ("attribute", "data", "property"):
        napoleon._process_docstring(app, what, name, obj, options, lines)


def setup(app):
    app.add_config_value("api_reference_package", None, "env")
    app.connect("builder-inited", _start_build)
    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", napoleon_except_attributes)
    app.connect("missing-reference", resolve_reference)
    app.connect("warn-missing-reference", silence_existing)
