"""Build hook: ship protocol_specs/ inside the package.

The top-level protocol_specs/ stays the one source (scripts/gen_specs.py writes it, a source
checkout reads it there); a built wheel or `pip install .` gets a copy as kbroker/protocol_specs/,
subfolders included, which kbroker/protocol/specs_path.py finds first. Metadata is in
pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SPECS = Path(__file__).resolve().parent / "protocol_specs"


class BuildPyWithSpecs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree(SPECS, Path(self.build_lib) / "kbroker" / "protocol_specs",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithSpecs})
