"""Print the README's quick-start commands, one per line, exactly as a user
copies them: the ``$ `` lines of the first console block under
"## Quick start", with the trailing ``# comment`` left off. .ci/run runs each
of them from the clone's root, so the README and CI cannot drift apart."""

import re
import sys
from pathlib import Path

text = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
section = text.split("\n## Quick start\n", 1)[1]
block = re.search(r"```console\n(.*?)```", section, re.S)
if block is None:
    sys.exit("README.md: no console block under '## Quick start'")
lines = [re.sub(r"\s+#.*$", "", ln[2:]).strip() for ln in block.group(1).splitlines() if ln.startswith("$ ")]
if len(lines) < 2:
    sys.exit("README.md: expected the install + demo line and the test line")
print("\n".join(lines))
