"""The README's code examples, by marker: a fenced ``python`` block whose first line is
``# readme-example: NAME``; the tests run each as written."""

from __future__ import annotations

import re

from tests.conftest import REPO

_BLOCK = re.compile(r"```python\n# readme-example: (?P<name>[\w-]+)\n(?P<code>.*?)```", re.S)


def readme_example(name: str) -> str:
    """The code of README.md's example ``name`` (the marker line dropped)."""
    found = {m["name"]: m["code"] for m in _BLOCK.finditer((REPO / "README.md").read_text())}
    if name not in found:
        raise LookupError(f"README.md has no example marked '# readme-example: {name}' (it has {sorted(found)})")
    return found[name]
