"""Browser tests: JupyterLab in headless Chromium, driven as a user would (see conftest.py).

A package, so that the server and the browser live exactly as long as these tests
(package-scoped fixtures) and are gone before the rest of the suite runs.
"""
