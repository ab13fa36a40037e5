"""The README's Python snippet runs as written (from the repository root, as a user would)."""

import re

from tests.conftest import REPO


def test_readme_python_snippet_runs_as_written(monkeypatch, capsys):
    text = (REPO / "README.md").read_text()
    section = text[text.index("### From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.splitlines()) < 25
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "torch.Size([5, 2])" in out  # T_infer 4 + 1 steps, 2 terms (784 -> 128, the readout)
    assert "torch.Size([10, 784])" in out
