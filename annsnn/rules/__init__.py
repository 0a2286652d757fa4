"""The rules the op registry's entries point to, one module per concern.

* :mod:`annsnn.rules.forms` — canonicalization: ReLU forms, identities in eval, functional
  pools lowered to modules;
* :mod:`annsnn.rules.scale` — conversion: how each op carries a scale (the ``convert`` rules);
* :mod:`annsnn.rules.fanout` — counting: each op's structural (all-ones) form and a weight
  layer's dense MACs;
* :mod:`annsnn.rules.saving` — the SNN file: how a module type is saved and rebuilt.

The analog rules (which ops stay analog under ``--hybrid``, and how) are :mod:`annsnn.analog`.
These modules import only the schema (:mod:`annsnn.opspec`) and the layers they build; the
built-in table (:mod:`annsnn.ops`) imports them, and nothing here imports the table.
"""
