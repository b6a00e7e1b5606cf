"""setup.py for pyhello, the autobot Python sample (built by the python-source factory)."""
from setuptools import setup

setup(
    name="pyhello",
    version="1.0",
    description="The autobot Python sample package",
    packages=["pyhello"],
)
