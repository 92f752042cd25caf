"""The README stays a manual: short enough to read, naming the layout, telling no history."""
import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_CHARACTERS = 10_000


def test_the_readme_fits_in_ten_thousand_characters():
    size = len(README.encode("utf-8"))  # counted as `wc -c` counts: a "≥" is three
    assert size <= MAX_CHARACTERS, f"README.md has {size} bytes (limit {MAX_CHARACTERS})"


def test_the_readme_has_a_project_layout_section_naming_every_package():
    layout = README.split("## Project layout", 1)[1].split("\n## ", 1)[0]
    packages = sorted(p.name for p in (ROOT / "mnist99").iterdir() if (p / "__init__.py").is_file())
    missing = [name for name in packages if f"{name}/" not in layout]
    assert not missing, f"the README's layout section does not name {missing}"


def test_the_readme_names_no_history():
    narration = re.compile(r"\b(since|last time|before this existed|session|no longer|used to)\b", re.IGNORECASE)
    assert not narration.findall(README)
