"""On-disk cache of compiled reduced models, so a repeated run neither imports sympy nor
differentiates and compiles the same model again.

What is cached: a model's numeric lift (Jacobian, offset), the shapes of its
observables, and the Python source sympy generates for its compiled functions,
with the library objects that source refers to by name. Loading rebuilds those
functions from the parsed source (`rebuild`: a syntax tree checked to hold
arithmetic and calls of torch or math functions only, then compiled); no sympy
is involved.

The key hashes what the model is built from: the builder callables (module,
qualified name, the values they close over and their defaults), the blocks of
the state and the hyper-parameters, the source text of every module of this
package and of each builder's module, and the versions of Python, sympy,
torch and numpy. A change to any of them gives a new key; a builder that closes
over something without a stable fingerprint (a tensor, a data sample) is not
cached. A file that cannot be read or does not hold what it should is ignored
and rebuilt; files are written to a temporary name and renamed, so concurrent
runs never see a partial file.

Location: $ICLDYN_CACHE if set, else $XDG_CACHE_HOME/icl-dynamics (default
~/.cache/icl-dynamics). A location that cannot be written only disables the cache.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import sys
import tempfile
import types
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

FORMAT = 1  # of the cached files; part of the key
SOURCE_NAME = "<icl-dynamics model cache>"  # file name of the functions rebuilt from it
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class Uncacheable(Exception):
    """A builder closes over a value with no stable fingerprint."""


def directory() -> str:
    """Where compiled models are cached (see the module docstring)."""
    if os.environ.get("ICLDYN_CACHE"):
        return os.environ["ICLDYN_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "icl-dynamics")


@functools.cache
def _file_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@functools.cache
def _environment() -> str:
    import torch

    parts = [f"format {FORMAT}", f"python {sys.version}", f"torch {torch.__version__}",
             f"numpy {np.__version__}"]
    try:
        parts.append(f"sympy {metadata.version('sympy')}")
    except metadata.PackageNotFoundError:
        parts.append("sympy missing")
    for name in sorted(os.listdir(PACKAGE_DIR)):
        if name.endswith(".py"):
            parts.append(f"{name} {_file_hash(os.path.join(PACKAGE_DIR, name))}")
    return "\n".join(parts)


def key(*parts: Any) -> str | None:
    """Hex key of a model built from parts (callables, dataclasses, numbers, strings and
    containers of them), or None if one of them cannot be fingerprinted."""
    sources: set[str] = set()
    try:
        text = _fingerprint(parts, sources, set())
        files = [f"{path} {_file_hash(path)}" for path in sorted(sources)]
    except (Uncacheable, OSError):
        return None
    return hashlib.sha256("\n".join([_environment(), text, *files]).encode()).hexdigest()


def _fingerprint(obj: Any, sources: set[str], seen: set[int]) -> str:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return repr(obj)
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__}(" + ",".join(_fingerprint(o, sources, seen) for o in obj) + ")"
    if isinstance(obj, dict):
        return "dict(" + ",".join(f"{_fingerprint(k, sources, seen)}:{_fingerprint(v, sources, seen)}"
                                  for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))) + ")"
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return f"array({obj.dtype},{obj.shape},{hashlib.sha256(obj.tobytes()).hexdigest()})"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return f"{type(obj).__qualname__}{_fingerprint(fields, sources, seen)}"
    if isinstance(obj, types.ModuleType):
        return f"module({obj.__name__})"
    if isinstance(obj, (types.FunctionType, functools.partial)):
        if id(obj) in seen:
            return "recursive"
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            return (f"partial({_fingerprint(obj.func, sources, seen)},"
                    f"{_fingerprint(obj.args, sources, seen)},"
                    f"{_fingerprint(obj.keywords, sources, seen)})")
        module = sys.modules.get(obj.__module__)
        path = getattr(module, "__file__", None)
        if path is None:
            raise Uncacheable(f"{obj.__qualname__}: no source file")
        sources.add(os.path.abspath(path))
        cells = [c.cell_contents for c in obj.__closure__ or ()]
        return (f"function({obj.__module__}.{obj.__qualname__},"
                f"{_fingerprint(cells, sources, seen)},"
                f"{_fingerprint(obj.__defaults__, sources, seen)},"
                f"{_fingerprint(obj.__kwdefaults__, sources, seen)})")
    if isinstance(obj, types.BuiltinFunctionType):
        return f"builtin({getattr(obj, '__module__', '')}.{obj.__qualname__})"
    raise Uncacheable(f"no fingerprint for {type(obj).__name__}")


def load(cache_key: str | None) -> dict | None:
    """The artifact stored under cache_key, or None (no key, no file, unreadable, or not
    what `save` writes)."""
    if cache_key is None:
        return None
    try:
        with open(os.path.join(directory(), f"{cache_key}.json"), encoding="utf-8") as fh:
            artifact = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(artifact, dict) or artifact.get("key") != cache_key:
        return None
    return artifact


def save(cache_key: str | None, artifact: dict) -> None:
    """Write artifact (JSON-able) under cache_key: a temporary file renamed into place."""
    if cache_key is None:
        return
    folder = directory()
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache_key}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({**artifact, "key": cache_key}, fh)
            os.replace(tmp, os.path.join(folder, f"{cache_key}.json"))
        except BaseException:
            with _ignore_os_error():
                os.unlink(tmp)
            raise
    except OSError:
        return  # an unwritable location disables the cache, nothing more


class _ignore_os_error:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, OSError)


# Modules whose objects the generated source may name (sympy's "torch" and "math" printers).
_LIBRARIES = ("torch", "math", "builtins")


def generated(fn: Callable) -> dict:
    """{"source", "names"} of a function sympy's lambdify generated: its source text and,
    for each global it uses, where that object lives ([module, attribute] or
    [module] for a module)."""
    import inspect

    names = {}
    for name in _global_names(fn.__code__):
        if name not in fn.__globals__:
            continue
        names[name] = _locate(name, fn.__globals__[name])
    art = {"source": inspect.getsource(fn), "names": names}
    rebuild(art)  # raises Uncacheable unless it can be read back
    return art


def _global_names(code: types.CodeType) -> set[str]:
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _global_names(const)
    return out


def _locate(name: str, value: Any) -> list[str]:
    if isinstance(value, types.ModuleType):
        return [value.__name__]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ["=", value]  # constants sympy binds (pi, E)
    for module_name in _LIBRARIES:
        module = importlib.import_module(module_name)
        for attribute in (name, getattr(value, "__name__", None)):
            if attribute and getattr(module, attribute, None) is value:
                return [module_name, attribute]
    raise Uncacheable(f"generated code refers to {name} = {value!r}")


_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod, ast.FloorDiv)
_UNARY = (ast.USub, ast.UAdd)


def rebuild(art: dict) -> Callable:
    """The function `generated` described, rebuilt from its source without sympy: the
    source is parsed, the syntax tree is checked to hold only assignments, arithmetic,
    calls of the library objects it names and lists (anything else raises Uncacheable),
    and that checked tree is compiled, so it performs the same operations in the same
    order (the same numbers) at the speed of the function sympy generated. (Its
    globals keep the standard builtins, which torch's C code looks up when it imports;
    the checked code itself can name nothing but its locals and those objects.)"""
    namespace = {}
    for name, where in art["names"].items():
        if where[0] == "=":
            if not isinstance(where[1], (int, float)):
                raise Uncacheable(f"constant {name} is not a number")
            namespace[name] = where[1]
        elif where[0] not in _LIBRARIES:
            raise Uncacheable(f"{where[0]} is not a library the generated code may use")
        elif len(where) == 1:
            namespace[name] = importlib.import_module(where[0])
        else:
            namespace[name] = getattr(importlib.import_module(where[0]), where[1])
    tree = ast.parse(art["source"])
    (function,) = tree.body
    if not isinstance(function, ast.FunctionDef):
        raise Uncacheable("not a function")
    args = function.args
    if (function.decorator_list or function.returns or args.vararg or args.kwarg
            or args.defaults or args.kw_defaults or args.kwonlyargs or args.posonlyargs
            or any(a.annotation for a in args.args)):
        raise Uncacheable("a signature beyond plain positional arguments")
    local = {a.arg for a in args.args}
    returned = False
    for statement in function.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name) and not returned):
            _check(statement.value, local, namespace)
            local.add(statement.targets[0].id)
        elif isinstance(statement, ast.Return) and not returned and statement.value:
            _check(statement.value, local, namespace)
            returned = True
        else:
            raise Uncacheable(f"statement {type(statement).__name__} in generated code")
    if not returned:
        raise Uncacheable("generated code returns nothing")
    scope = dict(namespace)
    exec(compile(tree, SOURCE_NAME, "exec"), scope)  # noqa: S102 (checked tree)
    return scope[function.name]


def _check(node: ast.AST, local: set[str], namespace: dict) -> None:
    """Raise Uncacheable unless expression node is arithmetic on numbers, local names and
    the library objects of namespace, calls of those, and lists (see `rebuild`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return
    if isinstance(node, ast.Name):
        if node.id not in local and node.id not in namespace:
            raise Uncacheable(f"unknown name {node.id} in generated code")
        return
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = namespace.get(node.value.id)
        if not isinstance(module, types.ModuleType) or module.__name__ not in _LIBRARIES:
            raise Uncacheable(f"attribute of {node.value.id} in generated code")
        if not hasattr(module, node.attr) or node.attr.startswith("_"):
            raise Uncacheable(f"attribute {node.attr} of {node.value.id} in generated code")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, local, namespace)
        _check(node.right, local, namespace)
        return
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand, local, namespace)
        return
    if isinstance(node, ast.Call) and not node.keywords:
        for child in (node.func, *node.args):
            if isinstance(child, ast.Starred):
                raise Uncacheable("starred argument in generated code")
            _check(child, local, namespace)
        return
    if isinstance(node, (ast.List, ast.Tuple)):
        for e in node.elts:
            _check(e, local, namespace)
        return
    raise Uncacheable(f"{type(node).__name__} in generated code")
