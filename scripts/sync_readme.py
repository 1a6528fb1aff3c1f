"""Recount the zoo's MACs cache, then rewrite README.md's model table from the registry
(`cnnlab models --markdown`)."""

import re
from pathlib import Path

from cnnlab.analysis.zoo import write_macs_cache
from cnnlab.cli.models import markdown_table

print("MACs cache (src/cnnlab/analysis/zoo_macs.json):",
      "updated" if write_macs_cache() else "already in sync")

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
new = re.sub(
    r"(<!-- models:start -->\n)(?:.*?\n)?(<!-- models:end -->)",
    lambda m: m.group(1) + markdown_table() + "\n" + m.group(2),
    text,
    flags=re.S,
)
readme.write_text(new)
print("README.md model table:", "updated" if new != text else "already in sync")
