"""The Chinese edition (book/translate.py): complete, current, and the same code and outputs."""

import importlib.util
import json
import re

import pytest
from test_project import NOTEBOOKS, ROOT

from helpers import results

spec = importlib.util.spec_from_file_location("translate", ROOT / "book" / "translate.py")
translate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(translate)


def test_every_markdown_cell_and_page_has_a_current_translation():
    found = translate.problems()
    assert not found, "run `python book/translate.py check`:\n" + "\n".join(found[:20])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chinese_chapters_keep_code_and_outputs_byte_for_byte(path):
    english = json.loads(path.read_text(encoding="utf-8"))
    chinese = translate.translated_notebook(path)
    assert len(chinese["cells"]) == len(english["cells"])
    for en, zh in zip(english["cells"], chinese["cells"]):
        assert en["cell_type"] == zh["cell_type"] and en["id"] == zh["id"]
        if en["cell_type"] == "code":
            assert json.dumps(en, sort_keys=True) == json.dumps(zh, sort_keys=True)
        else:
            assert re.search(r"[\u4e00-\u9fff]", "".join(zh["source"])), en["id"]
    assert chinese["metadata"] == english["metadata"]


def test_a_changed_english_cell_is_reported_stale():
    path = NOTEBOOKS[0]
    cells = translate.markdown_cells(path)
    target = translate.ZH / "notebooks" / f"{path.stem}.md"
    assert translate.problems({target: cells}) == []
    (key, english), rest = cells[0], cells[1:]
    changed = translate.problems({target: [(key, english + " One more sentence."), *rest]})
    name = target.relative_to(ROOT)
    assert changed == [f"{name}: {key} is stale (the English changed; update it and its en:)"]
    missing = translate.problems({translate.ZH / "notebooks" / "no_such_chapter.md": cells[:1]})
    assert missing and "no translation" in missing[0]


def test_untranslated_english_prose_is_found():
    assert translate.untranslated("This paragraph was left in English by mistake.\n")
    assert not translate.untranslated("这一段是中文，引用 `helpers.train.fit` 和 $x^2$。")
    assert not translate.untranslated("```python\nprint('code is not prose at all')\n```")


def test_chinese_readme_results_table_matches_the_notebooks():
    readme = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    table = readme.split(results.START)[1].split(results.END)[0].strip()
    assert table == results.results_table(NOTEBOOKS), "run `make results`"


def test_chinese_lines_are_joined_where_a_break_would_show_as_a_space():
    text = "## 标题\n第一行，\n第二行。\n- 列表\n- 项目\n```\n代码，\n不变\n```\nEnglish\n中文"
    assert translate.join_lines(text) == (
        "## 标题\n第一行，第二行。\n- 列表\n- 项目\n```\n代码，\n不变\n```\nEnglish\n中文"
    )


def test_the_chinese_book_is_configured_as_chinese_and_links_back(tmp_path):
    assert "language.js" in (ROOT / "_config.yml").read_text()  # the switch on every page
    script = (ROOT / "_static" / "language.js").read_text()
    assert '"zh/"' in script and '"../"' in script
    translate.build(tmp_path / "zh")
    config = (tmp_path / "zh" / "_config.yml").read_text(encoding="utf-8")
    assert "language: zh_CN" in config and 'title: "从零开始大模型开发与微调' in config
    assert (tmp_path / "zh" / "_toc.yml").read_text() == (ROOT / "_toc.yml").read_text()
    pages = sorted(p.name for p in (tmp_path / "zh" / "book").glob("*.md"))
    assert pages == sorted(f"{page}.md" for page in translate.PAGES)


def test_every_book_page_of_the_toc_is_translated():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    pages = {f.removeprefix("book/") for f in files if f.startswith("book/")}
    assert pages == set(translate.PAGES)
