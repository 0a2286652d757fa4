"""Writes tests/data/digits_stepbias_v1.snn.pt: a small step-bias SNN in SNN file format
version 1 (an untyped ``meta`` dict), as annsnn wrote it before the typed record
(main at ab5bfe9). Kept so that files written by that version keep loading.

    python tests/data/make_digits_v1_snn.py   # only with the code of ab5bfe9
"""
from pathlib import Path

import torch

from annsnn.artifact import save_snn
from annsnn.convert import ConversionOptions
from annsnn.io import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.zoo import embedded_checkpoint

torch.manual_seed(0)
options = ConversionOptions.calibrated("step-bias", 4, bias_samples=16)
snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), options=options,
                    normalization=([0.3054], [0.3761]), meta={"dataset": {"name": "digits"}, "source": {"path": "digits_cnn.pt", "kind": "checkpoint", "arch": "digits_cnn"}})
save_snn(snn, Path(__file__).with_name("digits_stepbias_v1.snn.pt"))
