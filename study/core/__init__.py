"""The study service's dependency-free core: plain data and pure functions that ``study``,
``trainables`` and ``analysis`` all import, and that import none of them, nor torch, nor Ray.

* ``spec``: the spec schema (each field's default, unit and rule, once) and its loader
* ``metrics``: metric, config and phase names shared by trainable, scheduler and analysis
* ``layout``: study-directory file names, trial statuses, local-or-URI storage, atomic writes
* ``identity``: which source model a trial uses (its key)
* ``catalog``: backbone facts (stage counts, stems, ImageNet weights)
* ``errors``: the bad-input errors the CLI maps to exit status 2
"""
