import json

import pytest
import torch

import helpers
from helpers import results


def test_record_shape_and_validation(monkeypatch):
    record = results.make_record("02", {"test_accuracy": 0.99341, "train_seconds": 95}, "cpu")
    assert record == {
        "chapter": "02",
        "mode": "full",
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "metrics": {"test_accuracy": 0.9934, "train_seconds": 95},
    }
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert results.make_record("02", {"x_seconds": 1.0}, "cpu")["mode"] == "quick"
    with pytest.raises(ValueError, match="snake_case"):
        results.make_record("02", {"Test Accuracy": 0.9}, "cpu")
    with pytest.raises(ValueError, match="two digits"):
        results.make_record("2", {"a": 1}, "cpu")
    assert results.make_record("04b", {"a": 1}, "cpu")["chapter"] == "04b"  # a second part
    with pytest.raises(ValueError, match="number"):
        results.make_record("02", {"a": "high"}, "cpu")


def _notebook(path, record):
    output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"application/json": record, "text/plain": "..."},
    }
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [output]}]}))


def test_readme_table_is_rebuilt_from_notebooks(tmp_path):
    (tmp_path / "notebooks").mkdir()
    _notebook(
        tmp_path / "notebooks" / "02_x.ipynb",
        results.make_record("02", {"test_accuracy": 0.9934}, "cpu"),
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n{results.START}\nold\n{results.END}\nafter\n")
    assert results.main([str(readme)]) == 0
    text = readme.read_text()
    assert "| [02](notebooks/02_x.ipynb) | test_accuracy | 0.9934 | cpu (" in text
    assert "old" not in text and text.endswith("after\n")
    assert not results.update_readme(readme, [tmp_path / "notebooks" / "02_x.ipynb"])  # idempotent


def test_quick_mode_outputs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    _notebook(tmp_path / "n.ipynb", results.make_record("00", {"a": 1}, "cpu"))
    with pytest.raises(ValueError, match="make execute"):
        results.results_table([tmp_path / "n.ipynb"])


def test_report_displays_table_and_json(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw: shown.append(obj))
    helpers.results.report("00", {"test_accuracy": 0.5}, "cpu")
    (bundle,) = shown
    assert bundle["application/json"] == results.make_record("00", {"test_accuracy": 0.5}, "cpu")
    assert (
        "<td>test_accuracy</td><td>0.5</td>" in bundle["text/html"]
        and "test_accuracy" in bundle["text/plain"]
    )
