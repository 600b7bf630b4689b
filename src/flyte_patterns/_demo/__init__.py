"""The ``flyte-patterns demo`` pipeline: every pattern of the library at work on a real source tree.

This package is private and separate from the library. ``import flyte_patterns`` imports neither it nor the command
line module (``flyte_patterns._cli``), which imports it when the ``demo`` command runs.

Modules:

* ``tree``: which files of a tree are analysed.
* ``analysis``: the three analysers of one Python file and the fallback chain that orders them.
* ``xref``: the cross-reference index of names defined and modules imported.
* ``pipeline``: the Flyte task environment, the tasks and the driver that runs the patterns.
* ``report``: the report the driver returns, and its JSON form.
* ``summary``: the rich tables printed at the end of a run.
"""
