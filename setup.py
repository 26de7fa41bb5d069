"""The one thing setup.cfg cannot declare: the guard's optional C audit hook (helixhooks._audit).

Optional: without a compiler the build goes on without it, and the guard uses a Python hook.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("helixhooks._audit", ["helixhooks/_audit.c"], optional=True)])
