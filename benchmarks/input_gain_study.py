"""Held-out experiment (docs/low-latency.md; a negative result, not a feature): a per-channel
gain on each IF layer's input, g_c = Cov(X, N z/theta) / Var(X) (X: the layer's input summed
over N steps on the 256 bias images, z/theta: the ANN's pre-activation over the threshold),
then the step bias and the readout delay refitted with the gains in place; ResNet-20-JPEG,
default conversion, held-out training images.

    python benchmarks/input_gain_study.py 8 4096      # T, held-out images

The gains are installed by patching annsnn.calibration.run_layerwise (the fits) and forward
pre-hooks (the simulation): an experiment, not library code.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import annsnn.calibration as cal
import annsnn.layerwise as lw
from annsnn.simulate import simulate
from low_latency import resnet20_jpeg_study
torch.set_num_threads(1)
T = int(sys.argv[1]); H = int(sys.argv[2]); mode = sys.argv[3] if len(sys.argv) > 3 else "all"
net, train, calib, held, snn = resnet20_jpeg_study(T, H)
allc = torch.cat(calib); bias_imgs, delay_imgs = allc[:256], allc[256:512]
def heldout(delay):
    with torch.no_grad():
        return sum(int((simulate(snn, x, T, readout_delay=delay).predictions(T) == y).sum()) for x, y in held) / H
k0 = snn.record.calibration.readout_delay
print("default", k0, heldout(k0), flush=True)
neurons = snn.neuron_layers()
thr = snn.graph.meta["annsnn_thresholds"]
# statistics: X (sum of IF input over steps, without the step bias) and z/theta from the ANN, per neuron
X, Z = {}, {}
def pre(name):
    def hook(mod, args):
        x = args[0].reshape(T, -1, *args[0].shape[1:]).sum(0).double()
        X[name] = x
    return hook
hs = [m.register_forward_pre_hook(pre(n)) for n, m in neurons.items()]
with torch.no_grad():
    simulate(snn, bias_imgs, T, chunk=T)
for h in hs: h.remove()
amods = dict(snn.ann.named_modules())
def zhook(name):
    def hook(mod, args, out):
        th = thr[name].double()
        th = th.view(1, -1, *([1] * (args[0].dim() - 2))) if th.dim() else th
        Z[name] = args[0].double() / th
    return hook
hs = [amods[n].register_forward_hook(zhook(n)) for n in neurons]
with torch.no_grad():
    snn.ann(bias_imgs)
for h in hs: h.remove()
gains = {}
for n in neurons:
    x = X[n].transpose(0, 1).reshape(X[n].shape[1], -1)  # [C, M] (step bias excluded: it is refitted)
    y = (T * Z[n]).transpose(0, 1).reshape(Z[n].shape[1], -1)
    if mode == "pos":  # regress only where the ANN or the SNN is active
        w = ((y > 0) | (x > 0)).double()
    else:
        w = torch.ones_like(x)
    cnt = w.sum(1)
    mx, my = (w * x).sum(1) / cnt, (w * y).sum(1) / cnt
    cov = (w * (x - mx[:, None]) * (y - my[:, None])).sum(1); var = (w * (x - mx[:, None]) ** 2).sum(1)
    g = (cov / var.clamp(min=1e-12)).clamp(0.5, 1.5)
    gains[n] = g.float()
    print(n, "gain mean %.3f min %.3f max %.3f" % (g.mean(), g.min(), g.max()), flush=True)
# install: scale each IF layer's input per channel, in simulate (pre-hook) and in the layer-major fits (layer_step wrapper)
def gview(n, x):
    return gains[n].view(1, -1, *([1] * (x.dim() - 2)))
for n, m in neurons.items():
    m.register_forward_pre_hook(lambda mod, args, _n=n: (args[0] * gview(_n, args[0]),))
orig = lw.run_layerwise
def patched(snn_, images, steps, *, batch=64, layer_step=lw.call_module, pool=None, output_step=None):
    def wrapped(name, module, x, t):
        if name in neurons and layer_step is not lw.call_module:
            x = x.float() * gview(name, x)
        return layer_step(name, module, x, t)
    return orig(snn_, images, steps, batch=batch, layer_step=wrapped, pool=pool, output_step=output_step)
cal.run_layerwise = patched
cal.fit_step_bias(snn, bias_imgs, T)
choice = cal.choose_readout_delay(snn, delay_imgs, T)
print("gain+refit", choice.delay, heldout(choice.delay), flush=True)
