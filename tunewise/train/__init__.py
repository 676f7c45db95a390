"""tunewise.train: the package; calling it is the Python API's train() (tunewise/api.py)."""

from tunewise.callable_package import callable_package

callable_package(__name__)
