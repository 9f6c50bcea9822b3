"""The design card's folders map into `finprint.*` through pyproject.toml alone: no import-path tricks."""

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_only_the_mapped_folders_import_under_finprint():
    for name in ("finprint.distill", "finprint.export", "finprint.runtime", "finprint.calib", "finprint.tune", "finprint.data"):
        assert importlib.util.find_spec(name) is not None, name
    for name in ("finprint.docs", "finprint.tests", "finprint.scripts", "finprint.experiments"):
        assert importlib.util.find_spec(name) is None, name


def test_every_mapped_folder_is_a_listed_package():
    text = (REPO / "pyproject.toml").read_text()
    mapped = dict(re.findall(r'^"(finprint\.[a-z_]+)" = "([a-z_]+)"$', text, re.M))
    listed = set(re.findall(r'^    "(finprint[a-z_.]*)",$', text, re.M))
    assert mapped and set(mapped) <= listed
    for folder in mapped.values():
        assert (REPO / folder / "__init__.py").is_file(), folder
