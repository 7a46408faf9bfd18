"""README.md is for users: short, the two set-up commands first, and every link resolves."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text().replace("exec bash scripts/test.sh", "bash scripts/test.sh")


def test_every_relative_link_in_the_docs_exists():
    for page in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"
