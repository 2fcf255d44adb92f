"""Checkpoint → samples → metrics: the glue shared by the evaluate notebook and the chapters.

`generate` draws n images from a trained Method in batches, with one explicit generator (the same
seed and batch size give the same images), a progress bar, and the network evaluations counted
per image. `evaluate_checkpoint` adds the FID-family metrics of `pdlib.metrics.evaluate`.

Both check every argument before any work (`prepare_evaluation` does it for the evaluate
notebook's first cell): guidance a finite w >= 0 (w = 0 unconditional, 1 conditional, > 1
guided; a negative w samples away from the class, which no chapter means, and guidance needs a
class-conditional model), steps None or >= 1, counts >= 1, the output folders writable. Samples
with NaN/inf are refused (`NonFiniteSamplesError`, naming how many) rather than measured; the
results record what was actually used (the method's default sampler and number of steps when
None was passed); `write_json` writes strict JSON and refuses NaN/inf values. Every result
records its `provenance` (pdlib.provenance): the git revision and dirty flag of the code, the
machine, the checkpoint's full training config, the sampling seed, and when it started and ended.
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import time
from pathlib import Path

import torch

from pdlib._checks import check, check_writable, is_int, is_num
from pdlib.denoisers import NFECounter, learns_variance
from pdlib.errors import NonFiniteSamplesError
from pdlib.provenance import git_state, provenance, utc_iso

__all__ = ["generate", "evaluate_checkpoint", "prepare_evaluation", "load_for_evaluation", "x0_mse",
           "x0_mse_by_t", "write_json", "sampling_used", "check_sampling_args", "training_config"]


def check_sampling_args(method=None, *, guidance=1.0, steps=None, seed=0, dynamic_threshold=None,
                        sampler=None, variance=None, class_labels=None, n=None) -> None:
    """ValueError naming the argument unless it can be sampled with (method=None: the checks
    that need no method)."""
    check(is_num(guidance) and guidance >= 0, "guidance", guidance,
          "a finite number >= 0 (0: unconditional, 1: conditional, > 1: guided)")
    check(steps is None or (is_int(steps) and steps >= 1), "steps", steps,
          "None (the method's default) or an int >= 1")
    check(is_int(seed) and seed >= 0, "seed", seed, "an int >= 0")
    check(dynamic_threshold is None or isinstance(dynamic_threshold, bool), "dynamic_threshold",
          dynamic_threshold, "None (the method's default), True or False")
    check(sampler is None or (isinstance(sampler, str) and sampler != ""), "sampler", sampler,
          "None (the method's default) or a sampler name")
    if variance is not None and sampler != "ddpm":
        raise ValueError(f"variance={variance!r} with sampler={sampler!r}; allowed: variance=None, "
                         "or sampler='ddpm' (the only sampler with a reverse variance)")
    if method is None:
        return
    if not method.class_cond:
        check(guidance == 1.0, "guidance", guidance, "1.0 (this method is not class-conditional)")
    elif class_labels is not None:
        labels = torch.as_tensor(class_labels)
        check(labels.dtype in (torch.int64, torch.int32) and labels.ndim == 1
              and (n is None or len(labels) == n)
              and bool(((labels >= 0) & (labels < method.num_classes)).all()),
              "class_labels", f"a {tuple(labels.shape)} {labels.dtype} tensor",
              f"int labels [n] in 0..{method.num_classes - 1}")
    allowed = getattr(method, "samplers", ())
    if sampler is not None and allowed:
        check(sampler in allowed, "sampler", sampler, f"one of {list(allowed)}")


def _default_sampler(method) -> str | None:
    """sample()'s default sampler= (None there: the method's first `samplers`, its default)."""
    p = inspect.signature(method.sample).parameters.get("sampler")
    if p is None or p.default is inspect.Parameter.empty:
        return None
    if p.default is None:
        return (tuple(getattr(method, "samplers", ())) or (None,))[0]
    return p.default


def sampling_used(method, sampler=None, steps=None, variance=None) -> dict:
    """What sample(sampler=…, steps=…) actually uses: the default sampler name and number of
    steps where None, and the DDPM sampler's effective reverse variance."""
    used = {"sampler": sampler or _default_sampler(method) or "default",
            "steps": int(steps) if steps else int(method.default_sample_steps)}
    if used["sampler"] == "ddpm":
        used["variance"] = variance if variance not in (None, "auto") else (
            "learned" if learns_variance(method.denoiser) else "posterior")
    else:
        used["variance"] = None
    return used


@torch.no_grad()
def generate(method, n: int, *,
             batch_size: int = 100,          # images per sampler call
             seed: int = 0,                  # seeds the one generator that draws every batch's noise
             sampler: str | None = None,     # the method's sampler name ('heun', 'ddim', 'ddpm', …); None = its default
             steps: int | None = None,       # sampler steps; None = the method's default
             guidance: float = 1.0,          # classifier-free guidance scale w (class-conditional methods)
             class_labels=None,              # int64 [n] labels; None = 0, 1, …, K−1, 0, … (conditional methods)
             dynamic_threshold: bool | None = None,  # under guidance, threshold x̂0 dynamically; None = the method's default
             variance: str | None = None,    # the 'ddpm' sampler's reverse variance (samplers.ddpm_sample); None = its default
             device=None,                    # where to sample; None = where the method's weights are
             progress: bool = True,
             sample_options: dict | None = None,  # more keyword options of method.sample (FPDM: iters, reuse, ...)
             ) -> tuple[torch.Tensor, float]:
    """(images [n, C, H, W] in [-1, 1] on the CPU, network evaluations per image; a guided step
    counts 2). Every argument is checked before sampling (ValueError naming it); images with
    NaN/inf are kept (evaluate_checkpoint refuses to measure them)."""
    if not is_int(n) or n < 1:
        raise ValueError(f"n={n!r} is invalid; allowed: an integer >= 1")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an integer >= 1")
    check_sampling_args(method, guidance=guidance, steps=steps, seed=seed,
                        dynamic_threshold=dynamic_threshold, sampler=sampler, variance=variance,
                        class_labels=class_labels, n=n)
    if device is not None:
        from pdlib.train.dist import resolve_device
        device = resolve_device(str(device), 0, name_of="device") if str(device) != "auto" else None
    from tqdm.auto import tqdm

    g = torch.Generator(device="cpu").manual_seed(int(seed))
    if class_labels is None and method.class_cond:
        class_labels = torch.arange(n) % method.num_classes
    counted = copy.copy(method)                    # a shallow view whose denoiser counts calls;
    counted.denoiser = counter = NFECounter(method.denoiser)   # the caller's method is untouched
    if dynamic_threshold is not None:
        counted.threshold_guided = bool(dynamic_threshold)
    check_sample_options(method, sample_options)
    kwargs = {**(sample_options or {}), **({} if sampler is None else {"sampler": sampler})}
    if variance is not None:
        kwargs["variance"] = variance
    out, rows = [], 0
    for start in tqdm(range(0, n, batch_size), desc="sampling", unit="batch", disable=not progress):
        b = min(batch_size, n - start)
        labels = None if class_labels is None else torch.as_tensor(class_labels)[start:start + b]
        counter.reset()
        x = counted.sample(b, generator=g, steps=steps, class_labels=labels, guidance=guidance,
                           device=device, **kwargs)
        rows += counter.rows                       # images through the net (CFG doubles them)
        out.append(x.float().cpu())
    return torch.cat(out), rows / n


def check_sample_options(method, sample_options) -> None:
    """sample_options: None or a dict of keyword options method.sample takes beyond the common
    ones (ValueError naming the option and listing what the method takes)."""
    import inspect
    common = {"self", "n", "generator", "steps", "class_labels", "guidance", "device", "callback",
              "sampler", "kwargs", "variance"}
    check(sample_options is None or isinstance(sample_options, dict), "sample_options",
          sample_options, "None or a dict of method.sample options")
    allowed = sorted(set(inspect.signature(method.sample).parameters) - common)
    for key in sample_options or {}:
        check(key in allowed, "sample_options", key,
              f"options of method {method.name!r}'s sample(): {allowed}")


def training_config(method) -> dict | list[dict] | None:
    """The full training config of a loaded method (TrainConfig.to_dict()); a split model's:
    the list of its members' configs, model 0 first; None if the method carries none."""
    members = getattr(method, "methods", None)
    if members is not None:
        return [training_config(m) for m in members]
    cfg = getattr(method, "cfg", None)
    return cfg.to_dict() if hasattr(cfg, "to_dict") else None


def write_json(obj: dict, path) -> Path:
    """Write obj as indented strict JSON, atomically (pdlib.checkpoint.atomic_write_text); a NaN
    or inf anywhere is a ValueError naming its key (nothing is written)."""
    from pdlib.checkpoint import atomic_write_text
    bad = _nonfinite_keys(obj)
    if bad:
        raise ValueError(f"results for {str(path)!r} hold NaN/inf at {bad[:5]}; strict JSON has "
                         "neither, and such results are not written")
    return atomic_write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def _nonfinite_keys(obj, prefix="") -> list[str]:
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix or "(value)"]
    if isinstance(obj, dict):
        return [k for key, v in obj.items()
                for k in _nonfinite_keys(v, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(obj, (list, tuple)):
        return [k for i, v in enumerate(obj) for k in _nonfinite_keys(v, f"{prefix}[{i}]")]
    return []


def _check_out_file(path, name: str) -> None:
    """ValueError naming `name` unless path can be written (its folder writable, not a folder)."""
    if path is None:
        return
    check(isinstance(path, (str, Path)) and str(path) != "", name, path, "None or a file path")
    p = Path(path)
    check(not p.is_dir(), name, str(path), "a file path (this is a folder)")
    check_writable(p.parent, name, value=str(path))


def load_for_evaluation(checkpoint, snr_boundaries=None, device="cpu"):
    """The EMA method of one checkpoint, or of several composed by SNR splitting
    (checkpoint: a list, model 0 = highest SNR, with its inner snr_boundaries s1 > … > sK)."""
    from pdlib.methods import SplitMethod
    from pdlib.pretrained import load_method
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"checkpoint={str(p)!r} does not exist; train one with "
                                    "notebooks/experiments/train.ipynb or python -m pdlib.train")
    if len(paths) == 1:
        if snr_boundaries:
            raise ValueError(f"snr_boundaries={snr_boundaries!r} with one checkpoint; allowed: None, "
                             "or one boundary fewer than the checkpoints of a split model")
        return load_method(paths[0], ema=True, device=device)
    if snr_boundaries is None or len(snr_boundaries) != len(paths) - 1:
        raise ValueError(f"snr_boundaries={snr_boundaries!r} for {len(paths)} checkpoints; allowed: "
                         f"{len(paths) - 1} inner SNR boundaries, decreasing (e.g. [0.25] for two)")
    return SplitMethod([load_method(p, device=device) for p in paths], snr_boundaries)


@torch.no_grad()
def x0_mse(method, ts, n: int = 1000, seed: int = 0, batch_size: int = 250, device="cpu") -> dict:
    """Held-out x0-MSE of a VP method at the steps ts: test-split images noised once at each t and
    denoised (x0_mse_by_t); the quantity every loss weighting trades off."""
    from pdlib.data import load_dataset
    if not hasattr(method, "schedule"):
        raise ValueError(f"x0_mse_t={list(ts)!r} needs a VP method (with a discrete schedule); "
                         f"this checkpoint's method is {method.name!r}")
    ts = [int(t) for t in ts]
    data = load_dataset(method.cfg.data.dataset, resolution=method.resolution, n=n, seed=seed, split="test")
    labels = data.labels.to(device) if method.class_cond else None
    mse = x0_mse_by_t(method.denoiser, data.images.to(device), method.schedule, ts,
                      torch.Generator().manual_seed(seed), class_labels=labels, batch_size=batch_size)
    return {"x0_mse_t": ts, "x0_mse_snr": [float(method.schedule.snr[t]) for t in ts],
            "x0_mse": mse.tolist(), "x0_mse_mean": float(mse.mean()), "x0_mse_n": len(data.images)}


@torch.no_grad()
def variance_weights(method, ts, n: int = 250, seed: int = 0, device="cpu") -> dict:
    """Where a model that learns its variances puts them: the interpolation weight v of
    log Σ = v·log β_t + (1−v)·log β̃_t (Nichol & Dhariwal 2021, eq. 15) on n test images noised at
    each step t of the training schedule: its mean and 1st/99th percentiles over pixels, and
    log(β_t/β̃_t), the span that v scales. v in [0, 1] puts Σ between β̃_t and β_t."""
    from pdlib.data import load_dataset
    D = method.denoiser
    if not learns_variance(D):
        raise ValueError("variance_weights needs a method that learns its variances (learn_sigma=True)")
    sched = method.schedule
    data = load_dataset(method.cfg.data.dataset, resolution=method.resolution, n=n, seed=seed, split="test")
    x0 = data.images.to(device)
    labels = data.labels.to(device) if method.class_cond else None
    g = torch.Generator().manual_seed(seed)
    log_ratio = (sched.betas / sched.posterior_variance).log()       # log(β_t/β̃_t); +inf at t = 0
    out = {"v_t": [], "v_mean": [], "v_p01": [], "v_p99": [], "log_beta_ratio": []}
    for t in (int(t) for t in ts):
        if not 1 <= t < sched.T:
            raise ValueError(f"t={t} is invalid; allowed: 1 <= t < {sched.T} (β̃_0 = 0)")
        sigma = float(sched.sigmas[t])
        x = x0 + sigma * torch.randn(x0.shape, generator=g).to(device)
        cond = {} if labels is None else {"class_labels": labels}
        _, v = D.forward_with_variance(x, sigma, **cond)
        v = v.double().flatten().cpu()
        q = torch.quantile(v[torch.randperm(v.numel(), generator=g)[:1_000_000]],
                           torch.tensor([0.01, 0.99], dtype=torch.float64))
        for k, val in (("v_t", t), ("v_mean", float(v.mean())), ("v_p01", float(q[0])),
                       ("v_p99", float(q[1])), ("log_beta_ratio", float(log_ratio[t]))):
            out[k].append(val)
    return out


def prepare_evaluation(checkpoint, *, n_samples: int = 1000, n_ref: int | None = 1000,
                       ref_split: str = "train", metrics=("fid", "kid", "pr"), batch_size: int = 100,
                       seed: int = 0, ref_seed: int = 0, sampler: str | None = None,
                       steps: int | None = None, guidance: float = 1.0,
                       dynamic_threshold: bool | None = None, variance: str | None = None,
                       snr_boundaries=None, x0_mse_t=(), x0_mse_n: int = 1000, device="cpu",
                       out_json=None, out_grid=None, progress: bool = True, seam_grids=(),
                       sample_options=None):
    """Check every argument of evaluate_checkpoint (a ValueError or FileNotFoundError naming the
    argument or file), load the method and check what depends on it; returns the method. Runs no
    sampler and writes nothing (the evaluate notebook's first cell)."""
    from pdlib.metrics import METRICS, check_fid_inf
    from pdlib.train.dist import resolve_device
    for name, v in (("n_samples", n_samples), ("batch_size", batch_size), ("x0_mse_n", x0_mse_n)):
        check(is_int(v) and v >= 1, name, v, "an int >= 1")
    check(n_ref is None or (is_int(n_ref) and n_ref >= 1), "n_ref", n_ref, "None (all) or an int >= 1")
    check(is_int(ref_seed) and ref_seed >= 0, "ref_seed", ref_seed, "an int >= 0")
    check(ref_split in ("train", "test"), "ref_split", ref_split, "'train' or 'test'")
    check(isinstance(metrics, (list, tuple)) and all(m in METRICS and m != "is" for m in metrics),
          "metrics", metrics, f"a list of {[m for m in METRICS if m != 'is']} ([] = samples only)")
    check_fid_inf(metrics, n_samples)               # 'fid_inf' needs n_samples >= 4
    check(isinstance(x0_mse_t, (list, tuple)) and all(is_int(t) and t >= 0 for t in x0_mse_t),
          "x0_mse_t", x0_mse_t, "a list of steps t >= 0 (VP methods; [] = skip)")
    check_sampling_args(guidance=guidance, steps=steps, seed=seed, dynamic_threshold=dynamic_threshold,
                        sampler=sampler, variance=variance)
    check(isinstance(device, (str, torch.device)), "device", device, "'cpu', 'cuda', 'cuda:N' or 'mps'")
    resolve_device(str(device), 0, name_of="device")
    _check_out_file(out_json, "out_json")
    _check_out_file(out_grid, "out_grid")
    check(isinstance(seam_grids, (list, tuple)) and all(is_int(g) and g >= 2 for g in seam_grids),
          "seam_grids", seam_grids, "a list of grids N >= 2 (seam scores on N×N tile borders; [] = none)")
    method = load_for_evaluation(checkpoint, snr_boundaries, device=device)
    check_sample_options(method, sample_options)
    for g in seam_grids:
        check(method.resolution % g == 0, "seam_grids", list(seam_grids),
              f"grids dividing the resolution {method.resolution}")
    check_sampling_args(method, guidance=guidance, steps=steps, seed=seed,
                        dynamic_threshold=dynamic_threshold, sampler=sampler, variance=variance)
    if x0_mse_t:
        if not hasattr(method, "schedule"):
            raise ValueError(f"x0_mse_t={list(x0_mse_t)!r} needs a VP method (with a discrete "
                             f"schedule); this checkpoint's method is {method.name!r}")
        T = method.schedule.T
        check(all(t < T for t in x0_mse_t), "x0_mse_t", list(x0_mse_t), f"steps t in [0, {T})")
    return method


def evaluate_checkpoint(checkpoint, *, n_samples: int = 1000, n_ref: int | None = 1000,
                        ref_split: str = "train", metrics=("fid", "kid", "pr"), batch_size: int = 100,
                        seed: int = 0, ref_seed: int = 0, sampler: str | None = None,
                        steps: int | None = None, guidance: float = 1.0,
                        dynamic_threshold: bool | None = None, variance: str | None = None,
                        snr_boundaries=None, x0_mse_t=(), x0_mse_n: int = 1000, device="cpu",
                        out_json=None, method=None, progress: bool = True,
                        seam_grids=(), sample_options=None) -> tuple[dict, torch.Tensor]:
    """Sample a checkpoint's EMA weights (or a split model's: a list of checkpoints and their
    snr_boundaries) and measure them: (results dict, the samples). dynamic_threshold: override
    the method's choice of thresholding x̂0 under guidance. variance: the DDPM sampler's reverse
    variance. x0_mse_t: also the held-out x0-MSE at these steps t of a VP method, on x0_mse_n
    test images (and, for a model that learns its variances, their interpolation weights there).
    seam_grids: also the seam score (pdlib.metrics.seam_score, 'seam@N') on the borders of
    each N×N tile grid, against n_ref reference images of ref_split. metrics: names of
    pdlib.metrics.evaluate ('is' excluded); 'fid_inf' adds FID∞ ('FID_inf@1k', its fit error
    'FID_inf_err@1k', 'FID_inf_slope@1k', and the fitted points 'FID_inf_ns', 'FID_inf_fids';
    n_samples >= 4). sample_options: more keyword
    options of the method's sample() (FPDM: iters, budget, reallocation, reuse, solver, tol).
    out_json: also write the results there (strict JSON). method: the checkpoint's method,
    loaded already by prepare_evaluation (None: checked and loaded here). The results'
    'provenance' (pdlib.provenance.provenance) holds the git state (taken when the evaluation
    starts), the machine, the checkpoint's training config (``training_config``), the sampling
    seed, and the evaluation's start and end times.

    Every argument is checked before sampling; samples with NaN/inf raise NonFiniteSamplesError
    (no metrics are computed or written); 'sampler', 'steps' and 'variance' in the results are
    the ones used (the method's defaults where None was passed)."""
    from pdlib import metrics as M

    kw = dict(n_samples=n_samples, n_ref=n_ref, ref_split=ref_split, metrics=metrics,
              batch_size=batch_size, seed=seed, ref_seed=ref_seed, sampler=sampler, steps=steps,
              guidance=guidance, dynamic_threshold=dynamic_threshold, variance=variance,
              snr_boundaries=snr_boundaries, x0_mse_t=x0_mse_t, x0_mse_n=x0_mse_n, device=device,
              seam_grids=seam_grids, sample_options=sample_options)
    if method is None:
        method = prepare_evaluation(checkpoint, out_json=out_json, **kw)
    else:
        _check_out_file(out_json, "out_json")
        M.check_fid_inf(metrics, n_samples)
    started, git = utc_iso(), git_state()         # after the checks: the code that samples
    t0 = time.perf_counter()
    images, nfe = generate(method, n_samples, batch_size=batch_size, seed=seed, sampler=sampler,
                           steps=steps, guidance=guidance, dynamic_threshold=dynamic_threshold,
                           variance=variance, device=device, progress=progress,
                           sample_options=sample_options)
    t_sample = time.perf_counter() - t0
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if bad:
        raise NonFiniteSamplesError(
            f"{bad} of {n_samples} samples hold NaN/inf (guidance={guidance!r}, steps={steps!r}, "
            f"sampler={sampler!r}, checkpoint {str(checkpoint)!r}): no metrics are computed or "
            "written for them; check the checkpoint's weights and the sampling arguments")
    cfg = method.cfg
    used = sampling_used(method, sampler, steps, variance)
    result = {"checkpoint": checkpoint if isinstance(checkpoint, (list, tuple)) and len(checkpoint) > 1
              else str(checkpoint if isinstance(checkpoint, (str, Path)) else checkpoint[0]),
              "method": cfg.method.name if not snr_boundaries else repr(method), "preset": cfg.net.preset,
              "snr_boundaries": list(snr_boundaries) if snr_boundaries else None,
              "dataset": cfg.data.dataset, "resolution": method.resolution, "sampler": used["sampler"],
              "steps": used["steps"], "nfe_per_image": nfe, "guidance": float(guidance),
              "variance": used["variance"],
              "dynamic_threshold": bool(method.class_cond and guidance != 1.0 and (
                  method.threshold_guided if dynamic_threshold is None else dynamic_threshold)),
              "seed": seed, "batch_size": batch_size, "sampling_seconds": round(t_sample, 2),
              "ref_split": ref_split, "ref_seed": ref_seed, "sample_options": dict(sample_options or {})}
    if metrics:
        t0 = time.perf_counter()
        result.update(M.evaluate(images, cfg.data.dataset, method.resolution, n_ref, metrics=tuple(metrics),
                                 split=ref_split, seed=ref_seed, batch_size=50))
        result["metric_seconds"] = round(time.perf_counter() - t0, 2)
    if seam_grids:
        real = M._load_real_images(cfg.data.dataset, method.resolution, n_ref, ref_seed, ref_split)
        for g in seam_grids:
            result[f"seam@{int(g)}"] = M.seam_score(images, real, int(g))
    if x0_mse_t:
        result.update(x0_mse(method, x0_mse_t, n=x0_mse_n, seed=ref_seed, device=device))
        if learns_variance(method.denoiser):
            result.update(variance_weights(method, x0_mse_t, n=min(x0_mse_n, 250), seed=ref_seed, device=device))
    result["provenance"] = provenance(training_config(method), seed, started, git=git, device=device)
    if out_json is not None:
        write_json(result, out_json)
    return result, images


@torch.no_grad()
def x0_mse_by_t(denoiser, x0: torch.Tensor, schedule, ts,
                generator: torch.Generator | None = None, class_labels: torch.Tensor | None = None,
                batch_size: int = 256) -> torch.Tensor:
    """Held-out E‖D(x0 + σ_t ε, σ_t) − x0‖² (mean over pixels and images) at each step t in ts; float64 [len(ts)]."""
    sig = schedule.sigmas
    out = []
    for t in ts:
        if not 0 <= int(t) < schedule.T:
            raise ValueError(f"ts contains {t!r}; allowed: step indices in [0, {schedule.T})")
        total = 0.0
        for i in range(0, len(x0), batch_size):
            xb = x0[i:i + batch_size]                                                 # (b, C, H, W)
            eps = torch.randn(xb.shape, generator=generator,
                              device=generator.device if generator is not None else xb.device).to(xb.device)
            sigma = torch.full((len(xb),), float(sig[int(t)]), device=xb.device)
            cond = {} if class_labels is None else {"class_labels": class_labels[i:i + batch_size]}
            D = denoiser(xb + sigma.reshape(-1, 1, 1, 1) * eps, sigma, **cond)
            total += ((D.float() - xb) ** 2).sum().item()
        out.append(total / x0.numel())
    return torch.tensor(out, dtype=torch.float64)
