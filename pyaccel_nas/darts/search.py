"""The DARTS search (Liu et al., ICLR 2019) under an EcoNAS proxy: its settings, and the supernet training
that alternates weight and alpha steps, on the shared training engine (:class:`ModelTrainer`).

The proxy applies exactly as in the evolutionary search: channels divided (``c``), the dataset at reduced
resolution (``r``) and a stratified sample subset (``s``) through :func:`proxied_dataset`, and the
proxy's epochs as the length of the search. The proxied training split is halved (stratified, seeded):
the supernet's weights train on one half, the architecture parameters alpha on the other, alternating
per batch (alpha first, as DARTS does). Neither sees the held-out validation split, on which the
supernet's accuracy is reported each epoch, nor the test split, which only the final retraining reports.

- weights: SGD with momentum and weight decay, gradient clipping, cosine schedule down to
  ``learning_rate_min`` (DARTS' settings), stepped by :class:`ModelTrainer` like any network's;
- alpha: Adam (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3); first-order by default, or the unrolled
  second-order gradient (one virtual SGD step, finite-difference Hessian-vector product) with ``unrolled``.

Cost, on the scale of the other strategies (:meth:`Proxy.cost`: MACs per image x images x epochs x 3 for
forward + backward): per epoch, the supernet's MACs per image (every operation of every edge) x (images of
the weight half x 3 + images of the alpha half x 3, or x 12 when unrolled: the virtual step's forward and
backward, the validation forward and backward, and two forward and backward passes for the Hessian-vector
product). First-order, that is exactly ``Proxy.cost`` of the supernet for each epoch. Evaluating the
held-out validation split is not counted (nor is it for the other strategies).

:meth:`DartsSearch.save` checkpoints the whole search state (supernet with alpha, both optimizers, the
schedule, the data-order RNGs, history) atomically; a search loaded from it continues exactly as the
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call

from pyaccel_nas.config import RunConfig, option, positive_float
from pyaccel_nas.data import DATASETS, Dataset
from pyaccel_nas.data.split import stratified_sample
from pyaccel_nas.darts.supernet import Supernet, skip_count
from pyaccel_nas.econas.evaluation import network_config
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import TRAINING_PASSES, Proxy
from pyaccel_nas.exec.files import atomic_writer
from pyaccel_nas.nn import count_macs, set_fused
from pyaccel_nas.training import ModelTrainer, TrainRecipe
from pyaccel_nas.validation import CheckpointError, load_tensors, require_finite, shorten

# named before DARTS had a package of its own; kept, so that checkpoints written then still resume
CHECKPOINT_FORMAT = "pyaccel_nas.econas.darts_checkpoint/1"
# forward + backward passes an alpha step costs per image: first-order, and unrolled (second-order)
ARCH_PASSES = {False: TRAINING_PASSES, True: 4 * TRAINING_PASSES}


@dataclass(frozen=True)
class DartsConfig(RunConfig):
    """Everything that determines a DARTS search. Defaults are DARTS' search settings (16 channels, 8 cells,
    batch 64) under the EcoNAS paper's DARTS proxy c4r2s0e50; the derived cell is retrained at
    ``final_proxy`` in the evaluation network (``final_channels``, ``final_layers``)."""

    dataset: str = option("dataset", "fashion-mnist", choices=sorted(DATASETS))
    data_root: str | None = option("directory holding the dataset (default: $PYACCEL_NAS_DATA, then the standard "
                                   "locations)", None)
    proxy: str = option("training setting of the search, c{x}r{y}s{z}e{n}", "c4r2s0e50")
    # MACs; the search stops before an epoch would pass it
    budget: float | None = option("stop before the training cost passes this many MACs", None, parse=positive_float)
    seed: int = option("seed", 0)
    channels: int = option("channels of the supernet's first cells before the proxy divides them", 16)
    layers: int = option("cells in the supernet", 8)
    batch_size: int = 64
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    unrolled: bool = option("darts: second-order (unrolled) alpha gradient", False)
    max_skips: int | None = option("darts: at most this many skip connections in the derived normal cell", None)
    fused: bool = True
    final_top: int = option("1: retrain the derived genotype at --final-proxy; 0: do not", 1)
    final_proxy: str = option("setting the derived cell is retrained at; paper: the ground truth", "c0r0s0e600")
    final_channels: int = 36
    final_layers: int = 20
    val_fraction: float = 0.1

    PRESETS = {
        # under a minute on 2 CPU cores: a 3-cell supernet of 4 channels on 7x7 images of a hundredth of the
        # data, and a validation split of 2% (the supernet is evaluated on it after every epoch)
        "smoke": dict(proxy="c4r4s100e2", channels=16, layers=3, final_proxy="c4r4s50e2", final_channels=16,
                      final_layers=3, val_fraction=0.02),
        # minutes on a laptop CPU: 5 cells, 14x14 images, a tenth of the data
        "cpu": dict(proxy="c4r2s10e6", channels=16, layers=5, final_proxy="c4r2s5e6", final_channels=16,
                    final_layers=6),
        # the EcoNAS paper's DARTS experiment: DARTS' 8-cell supernet under c4r2s0e50, retrained at ground truth
        "paper": dict(),
    }

    def __post_init__(self) -> None:
        Proxy.parse(self.proxy)
        Proxy.parse(self.final_proxy)
        for name in ("channels", "layers", "batch_size", "final_channels", "final_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DartsConfig: `{name}` must be an int >= 1, got {value!r}")
        require_finite(self, "budget", "learning_rate", "learning_rate_min", "momentum", "weight_decay", "grad_clip",
                       "arch_learning_rate", "arch_weight_decay", "val_fraction")
        for name in ("learning_rate", "arch_learning_rate", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DartsConfig: `{name}` must be > 0, got {getattr(self, name)!r}")
        if self.final_top not in (0, 1):
            raise ValueError(f"DartsConfig: DARTS derives one genotype, so `final_top` must be 0 or 1, got "
                             f"{self.final_top!r}")
        if self.max_skips is not None and (isinstance(self.max_skips, bool) or not isinstance(self.max_skips, int)
                                           or self.max_skips < 0):
            raise ValueError(f"DartsConfig: `max_skips` must be None or an int >= 0, got {self.max_skips!r}")
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"DartsConfig: `budget` must be > 0, got {self.budget!r}")

    def resume_settings(self) -> dict:
        """The settings a resumed search must share with its checkpoint. The budget, the final retraining, the
        skip cap (applied when deriving) and the op implementation (same numbers) may change."""
        settings = dataclasses.asdict(self)
        for name in ("budget", "max_skips", "fused", "final_top", "final_proxy", "final_channels", "final_layers",
                     "data_root"):
            del settings[name]
        return settings


def split_halves(dataset: Dataset, seed: int) -> Dataset:
    """The dataset with its training split halved (stratified, seeded): ``train`` is the half the weights
    train on, ``val`` the half alpha trains on. The held-out validation and the test split are not in it."""
    train = dataset.train
    weight_half = stratified_sample(train.labels, len(train) - len(train) // 2, torch.Generator().manual_seed(seed))
    in_weight_half = torch.zeros(len(train), dtype=torch.bool)
    in_weight_half[weight_half] = True
    alpha_half = (~in_weight_half).nonzero()[:, 0]
    return dataclasses.replace(dataset, train=train.take(weight_half), val=train.take(alpha_half))


class DartsSearch(ModelTrainer):
    """The supernet, its two optimizers and its place in the search, on ``dataset`` (already proxied).

    The weights train as any network does (:class:`ModelTrainer`: ``optimizer``, ``scheduler``, ``data_rng``),
    on the weight half, each step after an alpha step (``arch_optimizer``, ``arch_rng``) on the alpha half;
    :meth:`evaluate` scores the supernet on ``dataset``'s held-out validation split.
    """

    def __init__(self, config: DartsConfig, dataset: Dataset) -> None:
        self.config = config
        self.proxy = Proxy.parse(config.proxy)
        self.halves = split_halves(dataset, config.seed)
        base = NetworkConfig(channels=config.channels, layers=config.layers)
        self.network_config = network_config(base, self.proxy, dataset)
        with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching the global RNG
            torch.manual_seed(config.seed)
            model = Supernet(self.network_config)
        set_fused(model, config.fused)
        recipe = TrainRecipe(learning_rate=config.learning_rate, momentum=config.momentum,
                             weight_decay=config.weight_decay, grad_clip=config.grad_clip,
                             batch_size=config.batch_size)
        super().__init__(model, dataset, self.proxy.epochs, recipe, config.seed,
                         parameters=model.weight_parameters(), min_learning_rate=config.learning_rate_min)
        self.arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=config.arch_learning_rate,
                                               betas=(0.5, 0.999), weight_decay=config.arch_weight_decay)
        self.arch_rng = torch.Generator().manual_seed(config.seed + 1)
        self.history: list[dict] = []
        self.alphas: list[dict] = []
        info = dataset.info
        self.macs_per_image = count_macs(model, torch.zeros(1, info.channels, info.image_size, info.image_size))

    # --- cost -------------------------------------------------------------------------------------------

    def epoch_cost(self) -> int:
        """MACs of one search epoch (see the module docstring)."""
        passes = len(self.halves.train) * TRAINING_PASSES + len(self.halves.val) * ARCH_PASSES[self.config.unrolled]
        return self.macs_per_image * passes

    def steps_per_epoch(self) -> int:
        return -(-min(len(self.halves.train), len(self.halves.val)) // self.config.batch_size)

    # --- one epoch ------------------------------------------------------------------------------------

    def search_epoch(self, progress=None) -> dict:
        """One epoch of alternating alpha and weight steps; returns (and records) the epoch's statistics."""
        stats = self.train_epoch(progress)
        genotype = self.model.genotype(self.config.max_skips)
        cost = self.epoch_cost()
        previous = self.history[-1] if self.history else {"cost_macs": 0}
        entry = {
            "epoch": stats.epoch, "learning_rate": stats.learning_rate, "train_loss": stats.loss,
            "train_accuracy": stats.train_accuracy, "val_accuracy": self.evaluate(),
            "cost_macs": previous["cost_macs"] + cost, "cost_epochs": stats.epoch,
            "genotype": genotype.to_dict(), "skip_connections": skip_count(genotype.normal),
        }
        self.history.append(entry)
        self.alphas.append({"epoch": stats.epoch, **self.softmaxed_alphas()})
        return entry

    def training_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The weight half's batches, each yielded after an alpha step on a batch of the alpha half (alpha
        first, as DARTS does); as many as the smaller half has."""
        learning_rate = self.optimizer.param_groups[0]["lr"]
        batch_size = self.config.batch_size
        weight_batches = self.halves.batches("train", batch_size, shuffle=True, augment=True, generator=self.data_rng)
        arch_batches = self.halves.batches("val", batch_size, shuffle=True, augment=True, generator=self.arch_rng)
        for (x, y), (x_arch, y_arch) in zip(weight_batches, arch_batches):
            self.arch_step(x_arch, y_arch, x, y, learning_rate)
            yield x, y

    def arch_step(self, x_arch, y_arch, x, y, learning_rate: float) -> None:
        """One Adam step of alpha on a batch of the alpha half (``x``, ``y``: the weight half's batch, which
        the unrolled gradient needs)."""
        alphas = self.model.arch_parameters()
        if self.config.unrolled:
            grads = self._unrolled_arch_gradient(x_arch, y_arch, x, y, learning_rate)
        else:
            grads = torch.autograd.grad(self._loss(self.model(x_arch), y_arch), alphas)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)

    def _unrolled_arch_gradient(self, x_arch, y_arch, x, y, eta: float, epsilon: float = 0.01) -> list[torch.Tensor]:
        """DARTS' second-order gradient: d/dalpha L_arch(w - eta * dL_train/dw, alpha), the implicit part by
        a central finite difference of dL_train/dalpha at w +- r * dL_arch/dw' (r = epsilon / its norm).
        Finite differences, not double backward: the fused ops' backward is not differentiable.

        Runs the supernet functionally on copies of its BatchNorm statistics, so the virtual steps leave the
        real running statistics alone, as DARTS' copied model does."""
        model, config = self.model, self.config
        names = [n for n, p in model.named_parameters() if not n.startswith("alphas_")]
        weights = [p for n, p in model.named_parameters() if not n.startswith("alphas_")]
        alphas = {"alphas_normal": model.alphas_normal, "alphas_reduce": model.alphas_reduce}

        def loss(weight_values, xb, yb):
            state = {**dict(zip(names, weight_values)), **alphas,
                     **{n: b.clone() for n, b in model.named_buffers()}}
            return self._loss(functional_call(model, state, (xb,)), yb)

        grads = torch.autograd.grad(loss(weights, x, y), weights)
        virtual = []
        for w, g in zip(weights, grads):  # the SGD step the weight optimizer would take, momentum included
            buffer = self.optimizer.state.get(w, {}).get("momentum_buffer")
            step = g + config.weight_decay * w.detach()
            if buffer is not None:
                step = step + config.momentum * buffer
            virtual.append((w.detach() - eta * step).requires_grad_())
        grad_arch = torch.autograd.grad(loss(virtual, x_arch, y_arch), [*alphas.values(), *virtual])
        grad_alpha, grad_virtual = grad_arch[: len(alphas)], grad_arch[len(alphas):]
        r = epsilon / torch.cat([g.flatten() for g in grad_virtual]).norm()
        plus = torch.autograd.grad(loss([w.detach() + r * g for w, g in zip(weights, grad_virtual)], x, y),
                                   list(alphas.values()))
        minus = torch.autograd.grad(loss([w.detach() - r * g for w, g in zip(weights, grad_virtual)], x, y),
                                    list(alphas.values()))
        return [ga - eta * (p - m) / (2 * r) for ga, p, m in zip(grad_alpha, plus, minus)]

    def softmaxed_alphas(self) -> dict:
        return {"normal": self.model.alphas_normal.detach().softmax(-1).tolist(),
                "reduce": self.model.alphas_reduce.detach().softmax(-1).tolist()}

    # --- checkpoints ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Writes the search state atomically (a crash leaves the previous file or the new one, never half)."""
        path = Path(path)
        state = {
            "format": CHECKPOINT_FORMAT,
            "settings": json.dumps(self.config.resume_settings(), sort_keys=True),
            "epochs_done": self.epochs_done,
            "log": json.dumps({"history": self.history, "alphas": self.alphas}),
            "model": self.model.state_dict(),
            "weight_optimizer": self.optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weight_rng": self.data_rng.get_state(),
            "arch_rng": self.arch_rng.get_state(),
            "threads": torch.get_num_threads(),  # a resume with as many repeats the run bit for bit
        }
        with atomic_writer(path) as f:
            torch.save(state, f)
        return path

    @staticmethod
    def saved_threads(path: str | Path) -> int | None:
        """The torch threads the search saved at ``path`` trained with; None where there is no readable
        checkpoint that says (:meth:`load` is what reports what is wrong with it)."""
        try:
            state = load_tensors(path)
        except (OSError, CheckpointError):
            return None
        threads = state.get("threads") if isinstance(state, dict) else None
        return threads if isinstance(threads, int) and threads >= 1 else None

    @classmethod
    def load(cls, path: str | Path, config: DartsConfig, dataset: Dataset) -> DartsSearch:
        """The search saved at ``path``, ready to continue; ``config`` must match the one it ran with."""
        state = load_tensors(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a pyaccel_nas DARTS checkpoint (expected format {CHECKPOINT_FORMAT})")
        now = json.dumps(config.resume_settings(), sort_keys=True)
        if state["settings"] != now:
            raise ValueError(f"{path} belongs to a search with other settings; resume with the same command line.\n"
                             f"  checkpoint: {shorten(str(state['settings']), 2000)}\n  now:        {now}")
        search = cls(config, dataset)
        search.model.load_state_dict(state["model"])
        search.optimizer.load_state_dict(state["weight_optimizer"])
        search.arch_optimizer.load_state_dict(state["arch_optimizer"])
        search.scheduler.load_state_dict(state["scheduler"])
        search.data_rng.set_state(state["weight_rng"])
        search.arch_rng.set_state(state["arch_rng"])
        search.epochs_done = state["epochs_done"]
        log = json.loads(state["log"])
        search.history, search.alphas = log["history"], log["alphas"]
        return search
