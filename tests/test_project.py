"""The project's files agree with one another: packaging, book, notebooks, README."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import results

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _norm(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_environment_yml_lists_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(map(_norm, wanted)) == sorted(_norm(p) for p in pip if p != "-e .")
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python" + project["requires-python"]


def test_colab_cells_install_from_the_book_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        found = set(re.findall(r"git\+(https://[^\s\"']+)", source))
        assert found == {url}, f"{path.name}: the Colab setup cell should install from {url}"


def test_every_notebook_is_in_the_book_and_back():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    listed = {f for f in files if f.startswith("notebooks/")}
    assert listed == {f"notebooks/{p.stem}" for p in NOTEBOOKS}
    for page in [toc["root"]] + files:
        assert (ROOT / f"{page}.md").exists() or (ROOT / f"{page}.ipynb").exists(), page


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_with_a_clean_full_run(path):
    cells = [
        c
        for c in json.loads(path.read_text())["cells"]
        if c["cell_type"] == "code" and "".join(c["source"]).strip()
    ]
    assert all(c["execution_count"] for c in cells), "run the notebook top to bottom (make execute)"
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "commit a fresh top-to-bottom run"
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    records = results.records_from_notebook(path)
    assert records and all(r["mode"] == "full" for r in records), (
        "commit a full-mode run with a results cell"
    )
    assert path.stat().st_size < 3_000_000, "keep outputs lean"


def test_readme_results_table_matches_the_notebooks():
    readme = (ROOT / "README.md").read_text()
    table = readme.split(results.START)[1].split(results.END)[0].strip()
    assert table == results.results_table(NOTEBOOKS), "run `make results`"


def test_make_book_installs_only_the_book_requirement_of_pyproject():
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("BOOK_REQUIREMENT"))
    requirement = line.split(":=", 1)[1].strip()
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert requirement in dev["dev"]  # one requirement, in both places
    assert "\nbook: $(BOOK_STAMP)\n" in makefile and "install --quiet" in makefile


def test_readme_and_ci_use_the_same_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_import_helpers_is_cheap_and_autograd_needs_no_torch():
    code = (
        "import sys, helpers, helpers.autograd; "
        "heavy = [m for m in ('torch', 'torchvision', 'matplotlib', 'tqdm') if m in sys.modules]; "
        "assert not heavy, heavy; helpers.train; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_helpers_functions_stay_short():
    long = []
    for path in sorted((ROOT / "helpers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) is not None
                body = (
                    node.end_lineno - (node.body[1] if doc and len(node.body) > 1 else node).lineno
                )
                if body > 50:
                    long.append(f"{path.name}:{node.name} ({body} lines)")
    assert not long, f"split these into smaller functions: {long}"


HELPER_USE = re.compile(r"\bhelpers\.([A-Za-z_]\w*)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_one_spelling_of_helpers(path):
    import helpers

    source = "\n".join(
        "".join(c["source"])
        for c in json.loads(path.read_text())["cells"]
        if c["cell_type"] == "code"
    )
    assert not re.search(r"^\s*from helpers\b", source, re.M), (
        "use `import helpers` and helpers.<module>"
    )
    used = set(HELPER_USE.findall(source))
    assert used <= set(helpers.MODULES), f"not modules: {sorted(used - set(helpers.MODULES))}"
    private = re.findall(r"\bhelpers\.\w+\._\w+", source)
    assert not private, f"private names used: {private}"
