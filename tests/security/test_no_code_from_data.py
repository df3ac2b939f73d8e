"""The product tree (opsbot/, commands/) never reaches a shell and never runs data as code (issue 9 item 9).

Read with `ast`, not grep, so a comment or a docstring that names `os.system` is not a finding and
an aliased import (`from os import system as run`) is. Each finding names file, line and why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("opsbot", "commands")

#: module.function calls that go through a shell
SHELL_CALLS = {
    ("os", "system"), ("os", "popen"), ("os", "spawnl"), ("os", "spawnlp"), ("os", "spawnv"), ("os", "spawnvp"),
    ("os", "execl"), ("os", "execlp"), ("os", "execv"), ("os", "execvp"),
    ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell"),
}
#: modules that turn bytes into running code when loaded
CODE_FROM_DATA_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "jsonpickle"}
#: builtins that run strings as code
CODE_BUILTINS = {"eval", "exec", "compile", "__import__"}
#: PyYAML loaders that construct arbitrary Python objects
UNSAFE_YAML = {"load", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "load_all"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def product_files() -> list[Path]:
    return sorted(p for d in PRODUCT for p in (ROOT / d).rglob("*.py"))


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _loader_is_safe(call: ast.Call, aliases: dict[str, str]) -> bool:
    """`yaml.load(x, Loader=...)` is safe when the Loader is a safe one or a name bound to one."""
    for kw in call.keywords:
        if kw.arg == "Loader":
            name = _dotted(kw.value)
            return bool(name) and (name[-1] in SAFE_LOADERS or aliases.get(name[-1], "") in SAFE_LOADERS)
    return False


def findings(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT)
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name) for `from m import n [as x]`
    safe_aliases: dict[str, str] = {}  # `_LOADER = yaml.CSafeLoader` and the like
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            candidates = [value] if value is not None else []
            if isinstance(value, ast.Call) and _dotted(value.func)[-1:] == ("getattr",):
                candidates = list(value.args[1:])
            for cand in candidates:
                bound = cand.value if isinstance(cand, ast.Constant) and isinstance(cand.value, str) else (
                    _dotted(cand)[-1] if _dotted(cand) else "")
                if bound in SAFE_LOADERS:
                    for t in targets:
                        if isinstance(t, ast.Name):
                            safe_aliases[t.id] = bound
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in CODE_FROM_DATA_MODULES:
                    yield f"{where}:{node.lineno}: imports {alias.name} (loading it runs code from data)"
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in CODE_FROM_DATA_MODULES:
                yield f"{where}:{node.lineno}: imports from {node.module} (loading it runs code from data)"
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
                if (node.module, alias.name) in SHELL_CALLS:
                    yield f"{where}:{node.lineno}: imports {node.module}.{alias.name} (a shell)"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if len(name) == 1 and name[0] in imported:
            name = imported[name[0]]
        if len(name) >= 2 and (name[-2], name[-1]) in SHELL_CALLS:
            yield f"{where}:{node.lineno}: calls {'.'.join(name)} (a shell)"
        if len(name) == 1 and name[0] in CODE_BUILTINS:
            yield f"{where}:{node.lineno}: calls {name[0]}() (runs a string as code)"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                yield f"{where}:{node.lineno}: passes shell={ast.unparse(kw.value)} (a shell)"
        if len(name) >= 2 and name[-2] == "yaml" and name[-1] in UNSAFE_YAML and not _loader_is_safe(
                node, safe_aliases):
            yield f"{where}:{node.lineno}: calls {'.'.join(name)} without a safe Loader (constructs objects)"


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scanner itself: each forbidden form in a planted file is found (so a pass means something)."""
    planted = ROOT / "opsbot" / "_planted_for_scan_test.py"
    planted.write_text(
        "import os, pickle, subprocess, yaml\nfrom os import system as run\n"
        "os.system('x')\nrun('x')\nsubprocess.run('x', shell=True)\nos.popen('x')\neval('1')\n"
        "yaml.load('a')\nyaml.load('a', Loader=yaml.SafeLoader)\n"
    )
    try:
        found = list(findings(planted))
    finally:
        planted.unlink()
    text = "\n".join(found)
    for expected in (":1: imports pickle", ":2: imports os.system", ":3: calls os.system", ":4: calls os.system",
                     ":5: passes shell=True", ":6: calls os.popen", ":7: calls eval()", ":8: calls yaml.load"):
        assert expected in text, (expected, found)
    assert ":9:" not in text


SHELL_AND_EVAL = "shell"
PICKLE = "pickle"


def _all(kind: str) -> list[str]:
    out = [f for p in product_files() for f in findings(p)]
    is_pickle = [f for f in out if "runs code from data" in f]
    return is_pickle if kind == PICKLE else [f for f in out if f not in is_pickle]


def test_no_shell_no_eval_no_unsafe_yaml_in_the_product_tree() -> None:
    assert _all(SHELL_AND_EVAL) == []


def test_no_pickle_or_other_code_from_data_in_the_product_tree() -> None:
    assert _all(PICKLE) == []
