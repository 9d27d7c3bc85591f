"""docs/ARCHITECTURE.md matches the package: every module it names exists, every module is in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def named_paths() -> set[str]:
    """Every `llava_more/...` path the page names in backticks."""
    return set(re.findall(r"`(llava_more/[\w/]*(?:\.py)?)`", DOC))


def named_modules() -> set[str]:
    """Every dotted `llava_more.x.y[.Name]` the page names (not the bundle file `llava_more.json`)."""
    return {name for name in re.findall(r"`(llava_more(?:\.\w+)+)`", DOC) if name != "llava_more.json"}


def _defines(module: Path, name: str) -> bool:
    text = module.read_text()
    return bool(re.search(rf"^(?:class|def) {name}\b|^{name}\b.*=", text, re.M))


def test_every_module_the_page_names_exists():
    missing = [name for name in sorted(named_paths()) if not (SRC / name).exists()]
    for name in sorted(named_modules()):
        parts = name.split(".")
        path = SRC.joinpath(*parts)
        if path.is_dir() or path.with_suffix(".py").is_file():
            continue
        module = SRC.joinpath(*parts[:-1]).with_suffix(".py")
        package = SRC.joinpath(*parts[:-1], "__init__.py")
        if not any(m.is_file() and _defines(m, parts[-1]) for m in (module, package)):
            missing.append(name)
    assert not missing, f"docs/ARCHITECTURE.md names modules or names that do not exist: {missing}"
    assert len(named_paths()) >= 20  # the page was read at all


def _rows() -> dict[str, str]:
    """The package table: folder or module -> the rest of its row."""
    return dict(re.findall(r"^\| `(llava_more/[\w/]*(?:\.py)?)` \|(.*)$", DOC, re.M))


def test_every_module_of_the_package_is_on_the_page():
    rows = _rows()
    absent = []
    for module in sorted((SRC / "llava_more").rglob("*.py")):
        relative = module.relative_to(SRC).as_posix()
        if module.name in ("__init__.py", "__main__.py"):
            continue
        folder = relative.rsplit("/", 1)[0] + "/"
        if relative in rows or f"`{module.name}`" in rows.get(folder, ""):
            continue
        absent.append(relative)
    assert not absent, f"modules missing from docs/ARCHITECTURE.md's package table: {absent}"
