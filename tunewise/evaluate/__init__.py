"""tunewise.evaluate: the package; calling it is the Python API's evaluate() (tunewise/api.py)."""

from tunewise.api import callable_package  # branch ship

callable_package(__name__)
