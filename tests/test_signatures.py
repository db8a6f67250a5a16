"""Public signatures show their arguments, and the backbones package imports one way.

Signatures: no public function of `tftransfer`, `tftransfer.data` or
`tftransfer.training` hides its arguments behind `**kwargs` (so `inspect`,
IDEs and Jupyter's shift-tab list them), and every argument a docstring's
`Args:` section names is in the signature.

Layout: the modules of `tftransfer/backbones/` import each other without a
cycle (read from their source with `ast`, imports inside functions included).
"""

import ast
import inspect
import pathlib
import re

import pytest

import tftransfer
import tftransfer.data
import tftransfer.training
from tftransfer.training.trainer import Trainer

MODULES = [tftransfer, tftransfer.data, tftransfer.training]

#: Public callables allowed a `**kwargs`, each with why. Keep it to calls passed
#: on to a callable that is not ours (a user's, or a Keras base class').
VAR_KEYWORD_ALLOWED = {
    "Distiller": "a keras.Model subclass: **kwargs are keras.Model's own (name, trainable, "
                 "dtype), passed to super().__init__ and given back by from_config.",
}

#: Trainer's arguments that fit() does not take: distill() packs the teacher's
#: outputs into the labels.
TRAINER_ONLY = {"packed_labels"}

#: fit() arguments that distill() does not take: the distillation loss replaces the
#: first four, distill() takes data already batched, and a LoRA student is prepared with
#: tftransfer.training.enable_lora() before distill() (no lora_rank there).
NOT_IN_DISTILL = {"loss", "metrics", "class_weight", "label_smoothing", "batch_size",
                  "lora_rank"}

_ENTRY = re.compile(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?:\([^)]*\))?\s*:")


def _public_callables():
    """`(qualified name, object)` for each public function and class, once each."""
    seen, found = set(), []
    for module in MODULES:
        names = getattr(module, "__all__", None) or [
            name for name in dir(module) if not name.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            found.append((f"{module.__name__}.{name}", obj))
    return found


def documented_arguments(obj):
    """The names in the Google-style `Args:` section of `obj`'s own docstring.

    Entries are the lines one level under `Args:`, `name: ...` or
    `name1, name2: ...` (a leading `*`/`**` is dropped).

    Example:

    >>> def f(a, b, *rest):
    ...     '''Does f.
    ...
    ...     Args:
    ...         a, b: ints.
    ...             Still about a and b.
    ...         *rest: more.
    ...
    ...     Returns:
    ...         c: not an argument.
    ...     '''
    >>> documented_arguments(f)
    ['a', 'b', 'rest']
    """
    lines = inspect.cleandoc(obj.__doc__ or "").splitlines()
    names, entry_indent, in_args = [], None, False
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if line.strip() == "Args:":
            in_args, args_indent, entry_indent = True, indent, None
            continue
        if not in_args:
            continue
        if indent <= args_indent:
            in_args = False
            continue
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent:
            match = _ENTRY.match(line.strip())
            if match:
                names.extend(part.strip().lstrip("*") for part in match.group(1).split(","))
    return names


def _signature(obj):
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def test_the_walk_finds_the_public_api():
    names = {name.rsplit(".", 1)[-1] for name, _ in _public_callables()}
    assert {"fit", "distill", "Trainer", "build_classifier", "from_directory", "from_arrays",
            "from_tfds", "find_learning_rate", "export", "tune"} <= names


@pytest.mark.parametrize("name,obj", _public_callables(), ids=lambda value: (
    value if isinstance(value, str) else ""))
def test_no_hidden_keyword_arguments(name, obj):
    signature = _signature(obj)
    if signature is None:
        pytest.skip(f"{name} has no Python signature")
    hidden = [p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
    short = name.rsplit(".", 1)[-1]
    if short in VAR_KEYWORD_ALLOWED:
        assert hidden, f"{short} takes no **kwargs any more: remove it from VAR_KEYWORD_ALLOWED"
        return
    assert not hidden, (
        f"{name}{signature} hides its arguments behind **{hidden[0]}: spell them out as "
        "keyword arguments with defaults (or, if they go to a user's callable, add it to "
        "VAR_KEYWORD_ALLOWED with the reason).")


@pytest.mark.parametrize("name,obj", _public_callables(), ids=lambda value: (
    value if isinstance(value, str) else ""))
def test_documented_arguments_are_in_the_signature(name, obj):
    signature = _signature(obj)
    if signature is None:
        pytest.skip(f"{name} has no Python signature")
    missing = [arg for arg in documented_arguments(obj) if arg not in signature.parameters]
    assert not missing, f"{name}: its docstring's Args: name {missing}, not in {signature}"


@pytest.mark.parametrize("function", [tftransfer.fit, tftransfer.distill],
                         ids=["fit", "distill"])
def test_fit_and_distill_list_and_document_every_argument(function):
    parameters = inspect.signature(function).parameters
    documented = documented_arguments(function)
    assert len(documented) > 20
    assert set(documented) == set(parameters), (
        f"{function.__name__}: documented but not in the signature: "
        f"{sorted(set(documented) - set(parameters))}; in the signature but not documented: "
        f"{sorted(set(parameters) - set(documented))}")
    assert not [p for p in parameters.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _defaults(function, skip=()):
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not p.empty and name not in skip}


def test_fit_takes_trainers_arguments_with_its_defaults():
    assert _defaults(tftransfer.fit) == _defaults(Trainer.__init__, skip=TRAINER_ONLY)
    assert list(inspect.signature(tftransfer.fit).parameters)[:2] == ["model", "data"]


def test_distill_takes_fits_arguments_with_its_defaults():
    fit_defaults = _defaults(tftransfer.fit, skip=NOT_IN_DISTILL)
    distill_defaults = _defaults(tftransfer.distill)
    shared = {name: distill_defaults[name] for name in fit_defaults if name in distill_defaults}
    assert shared == fit_defaults


# --- layout -------------------------------------------------------------------------------

BACKBONES = pathlib.Path(tftransfer.backbones.__file__).parent
PACKAGE = "tftransfer.backbones"


def backbone_imports():
    """`{module: set of backbones modules it imports}`, `__init__` included."""
    modules = {path.stem for path in BACKBONES.glob("*.py")}
    graph = {}
    for path in BACKBONES.glob("*.py"):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = PACKAGE + ("." + base if base else "")
                names = ([f"{base}.{alias.name}" for alias in node.names] if base == PACKAGE
                         else [base])
            else:
                continue
            for name in names:
                if name == PACKAGE or not name.startswith(PACKAGE):
                    continue
                part = name[len(PACKAGE) + 1:].split(".")[0]
                # `from tftransfer.backbones import list_backbones` runs __init__.
                targets.add(part if part in modules else "__init__")
        graph[path.stem] = targets - {path.stem}
    return graph


def find_cycle(graph):
    """A list of nodes that import round in a circle, or None.

    Example:

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                walked = path + [node]
                return walked[walked.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_find_cycle_and_documented_arguments_examples():
    import doctest
    import sys

    result = doctest.testmod(sys.modules[__name__])
    assert result.attempted >= 3 and result.failed == 0


def test_backbones_modules_import_one_way():
    graph = backbone_imports()
    # The parse sees the imports it must (so an empty graph cannot pass).
    assert {"registry", "tf_hub", "backbone"} <= graph["factory"]
    assert "factory" in graph["__init__"]
    cycle = find_cycle(graph)
    assert cycle is None, (
        f"tftransfer/backbones imports in a circle: {' -> '.join(cycle)}. Move what both "
        "need to a module both import, so that imports point one way.")
