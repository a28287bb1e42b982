"""Headline numbers: shown in a notebook, gathered into the README's results table.

``report("02", {"test_accuracy": 0.9934, "train_seconds": 95.2})`` in a notebook's results cell
shows a small table and embeds the same numbers as JSON in the cell output.
``python -m helpers results README.md`` (``make results``) rebuilds the README table from the
committed notebooks, so the two never disagree.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import torch

from .device import describe_device
from .env import run_mode

START, END = "<!-- results:start -->", "<!-- results:end -->"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def make_record(chapter: str, metrics: dict, device) -> dict:
    """The JSON a results cell embeds: ``{"chapter", "mode", "device", "metrics"}``."""
    if not re.fullmatch(r"\d\d[a-z]?", str(chapter)):
        raise ValueError(
            f"chapter should be two digits such as '02' (a second part: '04b'), got {chapter!r}."
        )
    if not metrics:
        raise ValueError("report() needs at least one metric.")
    clean = {}
    for name, value in metrics.items():
        if not _NAME.match(name):
            raise ValueError(
                f"metric name {name!r} should be snake_case with its unit in it, "
                "e.g. 'train_seconds'."
            )
        if isinstance(value, torch.Tensor):
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"metric {name!r} should be a number, got {type(value).__name__}.")
        clean[name] = round(float(value), 4) if isinstance(value, float) else value
    return {
        "chapter": str(chapter),
        "mode": run_mode(),
        "device": describe_device(device, short=True),
        "metrics": clean,
    }


def report(chapter: str, metrics: dict, device) -> None:
    """Show the headline numbers as a table and embed them as JSON in the cell output."""
    record = make_record(chapter, metrics, device)
    rows = [(name, _format(value)) for name, value in record["metrics"].items()]
    rows += [("device", record["device"]), ("mode", record["mode"])]
    width = max(len(name) for name, _ in rows)
    text = f"Chapter {record['chapter']} results\n" + "\n".join(
        f"  {n:<{width}}  {v}" for n, v in rows
    )
    cells = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td></tr>" for n, v in rows)
    table = (
        f"<table><caption>Chapter {record['chapter']} results</caption>"
        f"<tr><th>metric</th><th>value</th></tr>{cells}</table>"
    )
    try:
        from IPython.display import display

        display({"text/plain": text, "text/html": table, "application/json": record}, raw=True)
    except ImportError:
        print(text)


# --------------------------------------------------------------------------- README table


def records_from_notebook(path: Path) -> list[dict]:
    """Every report() record in a notebook's committed outputs."""
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("application/json")
            if isinstance(data, dict) and {"chapter", "mode", "metrics"} <= data.keys():
                found.append(data)
    return found


def results_table(notebooks: list[Path]) -> str:
    """The README's markdown table, one row per metric of every committed report()."""
    lines = ["| chapter | metric | value | device | mode |", "|---|---|---|---|---|"]
    for path in sorted(notebooks):
        for record in records_from_notebook(path):
            if record["mode"] != "full":
                raise ValueError(
                    f"{path} was committed with {record['mode']}-mode outputs; run `make execute` "
                    "(full mode) before `make results`."
                )
            for name, value in record["metrics"].items():
                lines.append(
                    f"| [{record['chapter']}](notebooks/{Path(path).name}) | {name} "
                    f"| {_format(value)} "
                    f"| {record['device']} | {record['mode']} |"
                )
    return "\n".join(lines)


def update_readme(readme: Path, notebooks: list[Path]) -> bool:
    """Rewrite the table between the results markers; True when the file changed."""
    text = Path(readme).read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{readme} needs the markers {START} and {END} around the results table.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{results_table(notebooks)}\n{END}{tail}"
    if new != text:
        Path(readme).write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str]) -> int:
    """``python -m helpers results [README ...]``: update each README's results table."""
    for readme in map(Path, argv or ["README.md"]):
        notebooks = sorted((readme.parent / "notebooks").glob("*.ipynb"))
        changed = update_readme(readme, notebooks)
        print(
            f"{readme}: results table {'updated' if changed else 'already up to date'} "
            f"from {len(notebooks)} notebooks"
        )
    return 0
