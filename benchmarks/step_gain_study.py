"""Held-out study (docs/low-latency.md, issue 26): a per-step, per-channel AFFINE input
correction ``x[t] -> g_c[t] x[t] + b_c[t]`` in place of the default's per-step bias.
Negative result: kept as the command that measured it.

Starting from the default conversion of ResNet-20-JPEG at N = T, every IF layer is refitted
in execution order on the 256 bias-fit images, with every upstream layer already refitted.
At step t, for each channel and each gain g in ``--gains``, b is the bias that makes the
channel fire exactly as many spikes as the ideal rounding quantiser of the ANN's
activation would at that step (spike iff ``1/2 + (t+1) r_n - c_n >= 1``, r_n = the ANN's
activation over theta clipped to [0, 1], c_n the neuron's spikes so far); the gain whose
firing agrees with that quantiser on the most neurons is kept. ``--gains 1.0`` is the
control: the same target with the gain fixed, i.e. a per-neuron target instead of the
default's per-channel mean. The readout delay is then chosen again on the 256 choice
images, and the result is scored on 1,024 held-out training images.

    python benchmarks/step_gain_study.py --T 8 --gains 1.0
    python benchmarks/step_gain_study.py --T 8 --gains 0.8,1.0,1.25,1.5,2.0

The gain is applied by wrapping ``IFNeurons.forward`` here (the library has no per-step
gain).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annsnn.calibration import choose_readout_delay  # noqa: E402
from annsnn.data import make_loader  # noqa: E402
from annsnn.functional import if_soft_reset  # noqa: E402
from annsnn.layers import IFNeurons  # noqa: E402
from annsnn.pipeline import ann_to_snn  # noqa: E402
from annsnn.simulate import simulate  # noqa: E402
from low_latency import CIFAR_MEAN, CIFAR_STD, STUDY_BASELINE, _options, heldout_indices, resnet20_jpeg_and_train  # noqa: E402

_plain_forward = IFNeurons.forward


def _forward_with_gain(self: IFNeurons, x: torch.Tensor) -> torch.Tensor:
    gain = getattr(self, "study_gain", None)
    if gain is None:
        return _plain_forward(self, x)
    seq = x.reshape(self.steps, -1, *x.shape[1:]).float()
    if self.v is None:
        self.v = torch.full(seq.shape[1:], self.v_init, dtype=torch.float32, device=x.device)
    index = torch.arange(self.t, self.t + self.steps).clamp_(max=gain.shape[0] - 1)
    seq = seq * gain[index].unsqueeze(1) + self.step_bias[index].unsqueeze(1)
    self.t += self.steps
    spikes, self.v = if_soft_reset(seq, self.v, 1, overwrite=True)
    return spikes.reshape(x.shape)


def _fit_layer(snn, name: str, module: IFNeurons, images: torch.Tensor, T: int, gains: list[float]) -> float:
    """Refit ``module``'s gain and bias at every step (see the module docstring); returns the
    mean agreement with the ideal quantiser over the steps."""
    acts: list[torch.Tensor] = []
    hook = dict(snn.ann.named_modules())[name].register_forward_hook(lambda m, a, out: acts.append(out.detach()))
    with torch.no_grad():
        snn.ann(images)
    hook.remove()
    r = (acts[0] / snn.graph.meta["annsnn_thresholds"][name]).clamp(0, 1)
    channels = int(r.shape[1])
    result: dict = {}

    def fitting(self, x):
        seq = x.reshape(T, -1, *x.shape[1:]).float()
        v = torch.full(seq.shape[1:], self.v_init)
        count = torch.zeros_like(v)
        shape = (1, channels) + (1,) * (seq.dim() - 3)
        step_gain = torch.ones((T,) + shape[1:])
        step_bias = torch.zeros_like(step_gain)
        out = torch.empty_like(seq)
        agreement = 0.0
        for t in range(T):
            want = ((0.5 + (t + 1) * r - count) >= 1.0).transpose(0, 1).reshape(channels, -1)
            potential = v.transpose(0, 1).reshape(channels, -1)
            current = seq[t].transpose(0, 1).reshape(channels, -1)
            k = want.sum(1).long().view(-1, 1)
            best, best_gain, best_bias = torch.full((channels,), -1.0), torch.ones(channels), torch.zeros(channels)
            for g in gains:
                q = potential + g * current
                s = q.sort(1, descending=True).values
                padded = torch.cat([s[:, :1] + 1, s, s[:, -1:] - 1], 1)
                b = 1.0 - (padded.gather(1, k) + padded.gather(1, k + 1)).view(-1) / 2  # exactly k fire
                agree = (((q + b.view(-1, 1)) >= 1.0) == want).float().mean(1)
                better = agree > best
                best = torch.where(better, agree, best)
                best_gain = torch.where(better, torch.full_like(best_gain, g), best_gain)
                best_bias = torch.where(better, b, best_bias)
            best_bias = best_bias.clamp(-4, 4)
            step_gain[t], step_bias[t] = best_gain.view(shape[1:]), best_bias.view(shape[1:])
            p = v + seq[t] * best_gain.view(shape) + best_bias.view(shape)
            fired = (p >= 1.0).float()
            v, count = p - fired, count + fired
            out[t] = fired
            agreement += float(best.mean()) / T
        result.update(gain=step_gain, bias=step_bias, agreement=agreement)
        return out.reshape(x.shape)

    module.forward = fitting.__get__(module)
    with torch.no_grad():
        simulate(snn, images, T, chunk=T)
    del module.forward
    module.study_gain = result["gain"]
    module.set_step_bias(result["bias"])
    return result["agreement"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--gains", default="1.0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    IFNeurons.forward = _forward_with_gain
    net, train = resnet20_jpeg_and_train()
    calib = [x for x, _ in make_loader(train, 128, 1024)]
    held = list(make_loader(Subset(train, heldout_indices(len(train), 1024, 1024)), 256))
    snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=_options(STUDY_BASELINE, args.T), normalization=(list(CIFAR_MEAN), list(CIFAR_STD)))
    images = torch.cat(calib)
    bias_images, choice_images = images[:256], images[256:512]  # the pipeline's bias-fit and delay-choice images

    def held_out() -> float:
        with torch.no_grad():
            return 100 * sum(int((simulate(snn, x, args.T).predictions(args.T) == y).sum()) for x, y in held) / 1024

    print(f"default: delay {snn.record.calibration.readout_delay}, held-out top-1 {held_out():.2f} %", flush=True)
    gains = [float(g) for g in args.gains.split(",")]
    for name, module in snn.neuron_layers().items():  # execution order
        agreement = _fit_layer(snn, name, module, bias_images, args.T, gains)
        print(f"{name}: agreement with the ideal quantiser {100 * agreement:.2f} %, mean gain per step {[round(float(g.mean()), 2) for g in module.study_gain]}", flush=True)
    choice = choose_readout_delay(snn, choice_images, args.T)
    snn.record = snn.record.replace(calibration=dataclasses.replace(snn.record.calibration, readout_delay=choice.delay))
    print(f"gains {gains}: delay {choice.delay}, choice-image squared error {choice.output_mse[choice.delay]:.4f}, held-out top-1 {held_out():.2f} %", flush=True)


if __name__ == "__main__":
    main()
