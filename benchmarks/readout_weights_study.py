"""Held-out study behind --readout weighted (docs/low-latency.md): per-step readout weights
fitted by least squares on the default's 256 readout-delay images, against every delay k,
on held-out TRAINING images of ResNet-20-JPEG (default conversion for N = T).

    python benchmarks/readout_weights_study.py 8 4096     # T, held-out images

Prints, per readout: held-out top-1, agreement with the ANN, mean squared error against the
ANN's output. Also a per-class-weights variant (overfits), weights plus a per-class offset,
weights fitted on all 768 non-bias calibration images, and an "oracle" fitted on half of
the held-out images and scored on the other half (beside the chosen delay on that half).
"""
import sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annsnn.simulate import simulate
from low_latency import CIFAR_MEAN, CIFAR_STD, resnet20_jpeg_study
torch.set_num_threads(1)
T = int(sys.argv[1]); H = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
t0 = time.time()
net, train, calib, held, snn = resnet20_jpeg_study(T, H)
mean, std = torch.tensor(CIFAR_MEAN).view(1,3,1,1), torch.tensor(CIFAR_STD).view(1,3,1,1)
k = snn.record.calibration.readout_delay
print("loaded and converted", time.time() - t0, "delay", k, flush=True)
def steps_out(x):
    r = simulate(snn, x, list(range(1, T + 1)), readout_delay=0)
    S = torch.stack([r.outputs[t] for t in range(1, T + 1)]).double()
    return torch.cat([S[:1], S[1:] - S[:-1]])  # [T, B, C]
with torch.no_grad():
    xd = torch.cat(calib)[256:512]
    Od = steps_out(xd); Ad = net((xd - mean) / std).double()
    Oh, Ah, Yh = [], [], []
    for x, y in held:
        Oh.append(steps_out(x)); Ah.append(net((x - mean) / std).double()); Yh.append(y)
    Oh, Ah, Yh = torch.cat(Oh, 1), torch.cat(Ah), torch.cat(Yh)
def fit(O, A, ridge=0.0):
    X = O.permute(1, 2, 0).reshape(-1, O.shape[0]); y = A.reshape(-1)
    G = X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype)
    return torch.linalg.solve(G, X.T @ y)
def score(w, O, A, Y):
    R = torch.einsum("t,tbc->bc", w, O)
    return float((R.argmax(1) == Y).double().mean()), float((R.argmax(1) == A.argmax(1)).double().mean()), float(((R - A) ** 2).mean())
print("ANN held-out", float((Ah.argmax(1) == Yh).double().mean()))
for kk in range(T):
    w = torch.zeros(T, dtype=torch.float64); w[kk:] = 1.0 / (T - kk)
    print(f"delay {kk}{' *' if kk == k else ''}", ["%.4f" % v for v in score(w, Oh, Ah, Yh)])
w = fit(Od, Ad); print("LS weights (delay imgs)", ["%.3f" % v for v in w], ["%.4f" % v for v in score(w, Oh, Ah, Yh)])
w2 = fit(Oh[:, :2048], Ah[:2048]); print("LS weights (2048 held, oracle-ish)", ["%.3f" % v for v in w2], ["%.4f" % v for v in score(w2, Oh[:, 2048:], Ah[2048:], Yh[2048:])])
# per-class per-step weights plus per-class offset
def fit_pc(O, A):
    Tn, B, C = O.shape
    W = torch.zeros(Tn + 1, C, dtype=O.dtype)
    for c in range(C):
        X = torch.cat([O[:, :, c].T, torch.ones(B, 1, dtype=O.dtype)], 1)
        W[:, c] = torch.linalg.lstsq(X, A[:, c:c + 1]).solution[:, 0]
    return W
def score_pc(W, O, A, Y):
    R = torch.einsum("tc,tbc->bc", W[:-1], O) + W[-1]
    return float((R.argmax(1) == Y).double().mean()), float((R.argmax(1) == A.argmax(1)).double().mean()), float(((R - A) ** 2).mean())
W = fit_pc(Od, Ad); print("per-class+offset (delay imgs)", ["%.4f" % v for v in score_pc(W, Oh, Ah, Yh)])
# weights + one offset vector
X = torch.cat([Od.permute(1, 2, 0).reshape(-1, T), torch.eye(10, dtype=Od.dtype).repeat(Od.shape[1], 1)], 1)
sol = torch.linalg.lstsq(X, Ad.reshape(-1, 1)).solution[:, 0]
R = torch.einsum("t,tbc->bc", sol[:T], Oh) + sol[T:]
print("weights+offset", float((R.argmax(1) == Yh).double().mean()))
# fitting on all 768 non-bias calibration images (256..1024)
xa = torch.cat(calib)[256:]
with torch.no_grad():
    Oa = steps_out(xa); Aa = net((xa - mean) / std).double()
wa = fit(Oa, Aa); print("LS weights (768 imgs)", ["%.3f" % v for v in wa], ["%.4f" % v for v in score(wa, Oh, Ah, Yh)])
kk = snn.record.calibration.readout_delay; w = torch.zeros(T, dtype=torch.float64); w[kk:] = 1.0 / (T - kk)
print("delay on 2nd half", ["%.4f" % v for v in score(w, Oh[:, 2048:], Ah[2048:], Yh[2048:])])
