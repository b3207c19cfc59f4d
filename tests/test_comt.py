"""The layout the code promises (comt/__init__.py): modules in layers that import only downward, no
script importing another, short functions, no hidden state on the argument namespace, and a
one-line stop on a Python that is too old."""
import ast
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("sft_comt", "ccrl", "evaluate", "base", "teacher", "experiment", "bench")
LAYERS = {  # module -> layer, as comt/__init__.py draws them
    "comt": 0, "comt.flags": 0,
    "comt.model": 1, "rewards": 1, "comt.stats": 1,
    "comt.common": 2, "comt.tasks": 2, "comt.show": 2,
    "comt.engine": 3, "comt.parallel": 3, "comt.corpus": 3, "comt.report": 3, "comt.benchmarks": 3,
    "comt.evaluation": 4, "comt.training": 4, "comt.checkpoint": 4,
    "comt.lifecycle": 5,
    **{s: 6 for s in SCRIPTS},
}


def project_files() -> dict:
    files = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "comt", "*.py"))
    return {os.path.relpath(f, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__"): f for f in files}


def imports_of(path: str, modules) -> set:
    """The project modules a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found & set(modules)


def test_every_module_imports_only_from_layers_below_and_no_script_from_another():
    files = project_files()
    assert set(files) == set(LAYERS), "a module was added or moved: place it in LAYERS and comt/__init__.py"
    for name, path in files.items():
        for dep in imports_of(path, files):
            assert LAYERS[dep] < LAYERS[name] or (name == "bench" and dep in ("sft_comt", "ccrl")), \
                f"{name} (layer {LAYERS[name]}) imports {dep} (layer {LAYERS[dep]})"


def test_the_import_walk_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from comt.lifecycle import save_run\n    import ccrl\n")
    assert imports_of(str(f), LAYERS) == {"comt.lifecycle", "ccrl"}


def test_no_function_is_longer_than_sixty_lines():
    files = list(project_files().values()) + glob.glob(os.path.join(ROOT, "tools", "*.py"))
    long = [f"{os.path.relpath(f, ROOT)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for f in files
            for n in ast.walk(ast.parse(open(f).read()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long


def test_no_hidden_state_rides_on_the_argument_namespace():
    pattern = re.compile(r"\bargs\._\w")
    for path in list(project_files().values()) + glob.glob(os.path.join(ROOT, "tools", "*.py")):
        text = open(path).read()
        assert not pattern.search(text), f"{path}: {pattern.search(text).group()}"


def test_an_older_python_stops_in_one_line():
    from comt import require_python
    require_python((3, 11, 0))
    with pytest.raises(SystemExit) as e:
        require_python((3, 10, 12))
    assert e.value.code == "comt needs Python >= 3.11; this is Python 3.10"


@pytest.mark.parametrize("script", ["ccrl.py", "sft_comt.py", "evaluate.py"])
def test_a_stage_on_an_older_python_says_so_in_one_line(script):
    """The version check as Python 3.10 would meet it: sys.version_info reads 3.10 while the script loads."""
    code = (f"import runpy, sys; sys.argv = [{script!r}, '--help']; sys.version_info = (3, 10, 12, 'final', 0); "
            f"runpy.run_path({script!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["comt needs Python >= 3.11; this is Python 3.10"]




@pytest.mark.parametrize("module", sorted(project_files()))
def test_every_modules_examples_hold(module):
    """The examples in every module's docstrings (doctest) run and give what they show."""
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} fail"
