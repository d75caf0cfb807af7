"""Every ```python block of README.md runs as written (in order, sharing a namespace), except
those whose first line says what they need (``# needs: ...``)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    for block in blocks:
        if block.startswith("# needs:"):  # e.g. a downloaded checkpoint; says so on its first line
            continue
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
